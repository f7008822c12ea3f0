"""The session compile ledger (``%jaxcompiles``, issue 10) against JAX's own events.

Counts are checked against an independent ``jax.monitoring`` listener owned by the test;
persistent-cache outcomes run in fresh interpreters (JAX opens its cache once per process).
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import textwrap

import jax
import pytest
from IPython.core.error import UsageError

from jaxmagic import _internals
from jaxmagic.ledger import CompileLedger, active
from jaxmagic.ledger.capture import BACKEND, HIT, NOT_CONFIGURED, WRITTEN
from tests.conftest import ROOT

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


class Independent:
    """The test's own count of backend compiles per function name."""

    def __init__(self) -> None:
        self.names: collections.Counter = collections.Counter()

    def __call__(self, event: str, seconds: float, **kw) -> None:
        if event == BACKEND:
            name = str(kw.get("fun_name"))
            self.names[name[4:-1] if name.startswith("jit(") else name] += 1

    def __enter__(self) -> Independent:
        jax.monitoring.register_event_duration_secs_listener(self)
        return self

    def __exit__(self, *exc) -> None:
        jax.monitoring.unregister_event_duration_listener(self)


def cell(ip, code: str):
    result = ip.run_cell(textwrap.dedent(code), store_history=True)
    assert result.error_in_exec is None, result.error_in_exec
    return result


def function_counts(report) -> collections.Counter:
    out: collections.Counter = collections.Counter()
    for site in report.sites:
        for f in site.functions:
            out[f.name] += f.count
    return out


CELLS = [
    # recompiles: one jitted function, four shapes
    """
    import jax, jax.numpy as jnp
    scale = jax.jit(lambda x: x * 2.0)
    for n in range(1, 5):
        scale(jnp.ones(n))
    """,
    # eager ops outside jit
    """
    z = jnp.arange(7.0)
    z = z * 3 + 1
    """,
    # an nnx.jit train step, called twice (compiles once)
    """
    import optax
    from flax import nnx
    from tests.helpers import TinyMLP, loss_fn, dataset
    model = TinyMLP(rngs=nnx.Rngs(0))
    opt = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)

    @nnx.jit
    def train_step(model, opt, batch):
        (loss, _), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model, batch)
        opt.update(model, grads)
        return loss

    X, y = dataset(64)
    for _ in range(2):
        loss = train_step(model, opt, (jnp.asarray(X[:32]), jnp.asarray(y[:32])))
    """,
]


@pytest.mark.slow
def test_counts_equal_an_independent_listener(ip):
    ip.run_line_magic("jaxcompiles", "--reset -q")
    with Independent() as mine:
        first = ip.execution_count
        for code in CELLS:
            cell(ip, code)
    report = ip.run_line_magic("jaxcompiles", "-o")
    assert report.count == sum(mine.names.values()) > 0
    assert function_counts(report) == mine.names
    assert function_counts(report)["<lambda>"] == 4
    assert function_counts(report)["train_step"] == 1
    # every compile points at the user's line (a cell, or TinyMLP's __init__ in tests/helpers.py),
    # never at JAX, Flax or IPython
    sites = {s.site for s in report.sites}
    assert all(s.startswith("In[") or s.startswith("helpers.py:") for s in sites), sites
    scale_site = next(s for s in report.sites if any(f.name == "<lambda>" for f in s.functions))
    assert scale_site.site == f"In[{first}]:4"  # IPython drops the cell's leading blank line
    step_site = next(s for s in report.sites if any(f.name == "train_step" for f in s.functions))
    assert step_site.site == f"In[{first + 2}]:15"
    # stage times add up; cache outcome is known for every compile
    assert report.backend_s > 0 and report.trace_s > 0 and report.lower_s > 0
    assert sum(report.outcomes.values()) == report.count
    assert report.outcomes == {NOT_CONFIGURED: report.count}


def test_fixes_name_the_recompile_the_eager_ops_and_the_cache(ip):
    ip.run_line_magic("jaxcompiles", "--reset -q")
    n = ip.execution_count
    cell(ip, CELLS[0])
    cell(ip, "w = (jnp.arange(37.0) * 3 + 1) / 2")  # 4 eager ops on one line, a fresh shape
    report = ip.run_line_magic("jaxcompiles", "-o")
    actions = [f.action for f in report.fixes]
    assert sum(a.startswith("configure the persistent cache") for a in actions) == 1
    assert f"<lambda> compiled 4× at In[{n}]:4: pad inputs to a few bucket shapes" in " ".join(actions)
    assert any(
        a.startswith(f"In[{n + 1}]:1 runs 4 op-by-op") and "op-by-op compiles outside jit" in a
        for a in actions
    )
    cache_fix = next(f for f in report.fixes if f.action.startswith("configure"))
    assert cache_fix.saves_s == pytest.approx(report.backend_s)
    assert [f.saves_s for f in report.fixes] == sorted((f.saves_s for f in report.fixes), reverse=True)
    text = report.to_text()
    assert text.splitlines()[0] == f"Compile ledger · {report.summary()}"
    assert "would be reused next time" in text and f"In[{n}]:4" in text


def test_since_keeps_later_cells_only(ip):
    ip.run_line_magic("jaxcompiles", "--reset -q")
    cell(ip, "import jax, jax.numpy as jnp\njax.jit(lambda x: x - 1)(jnp.ones(3))")
    later = ip.execution_count
    with Independent() as mine:
        cell(ip, "jax.jit(lambda x: x + 5)(jnp.ones(2))")
    report = ip.run_line_magic("jaxcompiles", f"--since {later} -o")
    assert report.since == later and report.count == sum(mine.names.values())
    assert {s.site.split(":")[0] for s in report.sites} == {f"In[{later}]"}
    assert ip.run_line_magic("jaxcompiles", "-o").count > report.count


def test_outside_a_profiled_cell_and_inside_one(ip):
    """Compiles under %%jaxprofile are in the ledger too, once each."""
    ip.run_line_magic("jaxcompiles", "--reset -q")
    with Independent() as mine:
        ip.run_cell_magic(
            "jaxprofile", "-q", "import jax, jax.numpy as jnp\njax.jit(lambda x: x / 3)(jnp.ones(9))"
        )
    assert ip.run_line_magic("jaxcompiles", "-o").count == sum(mine.names.values()) > 0


def test_flags_reset_json_and_bad_input(ip, tmp_path, capsys):
    cell(ip, "import jax, jax.numpy as jnp\njax.jit(lambda x: x * 7)(jnp.ones(4))")
    before = ip.run_line_magic("jaxcompiles", "-o")
    assert before.count > 0
    path = tmp_path / "ledger.json"
    assert ip.run_line_magic("jaxcompiles", f"-q --json {path}") is None
    data = json.loads(path.read_text())
    assert data["count"] == before.count and data["sites"][0]["functions"]
    with pytest.raises(UsageError, match="cannot write"):
        ip.run_line_magic("jaxcompiles", f"-q --json {tmp_path}/missing/dir/x.json")
    with pytest.raises(UsageError, match="valid flags"):
        ip.run_line_magic("jaxcompiles", "--bogus")
    with pytest.raises(UsageError, match="takes no expression"):
        ip.run_line_magic("jaxcompiles", "f(x)")
    assert ip.run_line_magic("jaxcompiles", "-o").count == before.count  # bad input changed nothing
    capsys.readouterr()
    ip.run_line_magic("jaxcompiles", "--reset")
    assert f"compile ledger cleared ({before.count} compiles forgotten)" in capsys.readouterr().out
    assert ip.run_line_magic("jaxcompiles", "-o").count == 0


def test_unload_removes_everything_and_reload_keeps_one_listener(ip):
    listeners = _internals.monitoring_listeners()
    for _ in range(10):
        ip.run_line_magic("reload_ext", "jaxmagic")
    assert _internals.monitoring_listeners() == listeners
    ip.run_line_magic("unload_ext", "jaxmagic")
    try:
        durations, events = _internals.monitoring_listeners()
        assert len(durations) == len(listeners[0]) - 1 and len(events) == len(listeners[1]) - 1
        assert active() is None
        assert not any(type(f).__name__ == "_AfterJaxImport" for f in sys.meta_path)
        assert "jaxcompiles" not in ip.magics_manager.magics["line"]
    finally:
        ip.run_line_magic("load_ext", "jaxmagic")
    assert _internals.monitoring_listeners() == listeners
    with Independent() as mine:
        cell(ip, "import jax, jax.numpy as jnp\njax.jit(lambda x: x + 11)(jnp.ones(5))")
    assert ip.run_line_magic("jaxcompiles", "-o").count == sum(mine.names.values())


@pytest.mark.slow
def test_thousands_of_compiles_keep_memory_bounded():
    """Backend events through jax.monitoring itself; groups and entries stay bounded and
    totals still count every compile."""
    cells = iter(range(10**6))
    ledger = CompileLedger(current_cell=lambda: next(cells), max_entries=100, max_groups=50)
    ledger.install()
    try:
        for i in range(5000):
            jax.monitoring.record_event_duration_secs(BACKEND, 0.001, fun_name=f"jit(f{i % 7})")
    finally:
        ledger.uninstall()
    assert len(ledger.groups) <= 51 and len(ledger.entries) == 100
    report = ledger.report()
    assert report.count == 5000 and report.backend_s == pytest.approx(5.0)
    assert any(s.site == CompileLedger.OVERFLOW for s in report.sites)
    assert "the last 100 compiles are kept one by one; totals count all 5000" in report.notes
    assert len(report.to_text().splitlines()) < 80  # the text stays a screenful
    assert report.to_html().count("<tr>") <= 202


def test_a_standalone_ledger_leaves_no_listener():
    before = _internals.monitoring_listeners()
    ledger = CompileLedger()
    ledger.install()
    ledger.install()
    assert len(_internals.monitoring_listeners()[0]) == len(before[0]) + 1
    ledger.uninstall()
    ledger.uninstall()
    assert _internals.monitoring_listeners() == before


# --- fresh interpreters: load_ext imports no jax; the persistent cache -------------------------

SCRIPT = """
import json, sys, warnings
warnings.simplefilter("ignore")
import IPython.testing.globalipapp as g
ip = g.start_ipython()
ip.run_line_magic("load_ext", "jaxmagic")
assert "jax" not in sys.modules
for code in json.loads(sys.argv[1]):
    r = ip.run_cell(code, store_history=True)
    if r.error_in_exec is not None:
        print(json.dumps({"error": repr(r.error_in_exec)}))
        raise SystemExit(0)
print(json.dumps(ip.run_line_magic("jaxcompiles", "-o").to_dict()))
"""

MODEL = """
import jax, jax.numpy as jnp
def layer(x):
    for _ in range(4):
        x = jnp.tanh(x @ x.T) + 1
    return x.sum()
f = jax.jit(layer)
y = float(f(jnp.ones((16, 16))))
"""


def configure(path, min_s=0.0):
    return (
        f"import jax\njax.config.update('jax_compilation_cache_dir', {str(path)!r})\n"
        f"jax.config.update('jax_persistent_cache_min_compile_time_secs', {min_s})\n"
        "jax.config.update('jax_persistent_cache_min_entry_size_bytes', 0)"
    )


def session(*cells: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu"}
    env.pop("XLA_FLAGS", None)
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, json.dumps(list(cells))],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def layer_row(data: dict) -> dict:
    return next(f for s in data["sites"] for f in s["functions"] if f["name"] == "layer")


@pytest.mark.slow
def test_first_cell_compiles_count_although_load_ext_imported_no_jax():
    data = session(MODEL)
    assert layer_row(data)["count"] == 1 and data["count"] >= 2
    assert data["sites"][0]["site"].startswith("In[1]:")


@pytest.mark.slow
def test_persistent_cache_hits_on_the_second_run(tmp_path):
    first = session(configure(tmp_path), MODEL)
    assert layer_row(first)["cache"] == {WRITTEN: 1}
    assert first["cache"]["outcomes"] == {WRITTEN: first["count"]}
    assert any("written to the cache" in n for n in first["notes"])
    second = session(configure(tmp_path), MODEL)
    assert layer_row(second)["cache"] == {HIT: 1}
    assert second["cache"]["outcomes"] == {HIT: second["count"]}
    assert not any(f["action"].startswith("configure") for f in second["fixes"])
    # JAX stores int(compile seconds) per entry: these sub-second programs "saved" 0 s by its count
    assert first["backend_s"] < 1.0 and second["saved_s"] == 0.0
    assert any("compile time in whole seconds" in n for n in second["notes"])


@pytest.mark.slow
def test_below_the_minimum_compile_time_is_named_with_its_fix(tmp_path):
    data = session(configure(tmp_path, min_s=600.0), MODEL)
    assert layer_row(data)["cache"] == {"below min compile time": 1}
    fix = next(f for f in data["fixes"] if "min_compile_time_secs" in f["action"])
    assert fix["saves_s"] == pytest.approx(data["backend_s"])
    assert "took less than 600 s and were not written" in fix["why"]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["file", "under-a-file"])
def test_an_unusable_cache_directory_is_reported_not_crashing(tmp_path, kind):
    blocker = tmp_path / "blocker"
    blocker.write_text("not a directory")
    path = blocker if kind == "file" else blocker / "cache"
    data = session(configure(path), MODEL)
    assert "error" not in data, data
    assert layer_row(data)["count"] == 1 and layer_row(data)["cache"] != {HIT: 1}
    problem = "is a file, not a directory" if kind == "file" else "does not exist and cannot be created"
    assert any(problem in n and "cannot save" in n for n in data["notes"]), data["notes"]


@pytest.mark.slow
def test_a_corrupt_cache_is_recompiled_not_crashing(tmp_path):
    session(configure(tmp_path), MODEL)
    entries = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert entries
    for p in entries:
        p.write_bytes(b"corrupt")
    data = session(configure(tmp_path), MODEL)
    assert "error" not in data, data
    assert layer_row(data)["count"] == 1 and layer_row(data)["cache"] != {HIT: 1}


@pytest.mark.slow
def test_cache_directory_changed_mid_session(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    data = session(
        configure(a),
        MODEL,
        configure(b),
        "g = jax.jit(lambda x: x * 5)\ny = g(jnp.ones(3))",
    )
    note = next(n for n in data["notes"] if "changed during the session" in n)
    assert f"{a} → {b}" in note and f"keeps using {str(a)!r}" in note


def test_jaxmagic_inspections_are_left_out(ip):
    ip.run_line_magic("jaxcompiles", "--reset -q")
    cell(
        ip,
        "import jax.numpy as jnp\nfrom flax import nnx\nfrom tests.helpers import TinyMLP\n"
        "tm = TinyMLP(rngs=nnx.Rngs(1))\nxs = jnp.ones((3, 8))",
    )
    before = ip.run_line_magic("jaxcompiles", "-o").count
    with Independent() as mine:
        ip.run_line_magic("jaxtabulate", "-q tm(xs)")
        ip.run_line_magic("jaxhlo", "-q tm(xs)")
    report = ip.run_line_magic("jaxcompiles", "-o")
    inspected = sum(mine.names.values())
    assert inspected > 0 and report.count == before
    assert any(f"{inspected} compiles (" in n and "made by jaxmagic to inspect" in n for n in report.notes)
