"""%%jaxprofile / %jaxprofile / %jaxpr / %jaxhlo in a real IPython shell."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from tests.helpers import global_state, run

SETUP = """
import jax, jax.numpy as jnp
@jax.jit
def f(x):
    return jnp.sin(x) * 2
"""


@pytest.fixture
def jip(ip):
    ip.run_cell(SETUP)
    return ip


def test_cell_semantics_are_unchanged(jip):
    res, out = run(jip, "%%jaxprofile\na = f(jnp.ones(3))\nb = a.sum()\nb * 10")
    assert res.success
    assert float(res.result) == pytest.approx(10 * 3 * 2 * 0.841471, rel=1e-5)
    assert "a" in jip.user_ns and float(jip.user_ns["b"]) == pytest.approx(5.048826, rel=1e-5)
    assert "JAX profile of cell" in out and "Functions" in out


def test_trailing_semicolon_silences_the_value(jip):
    res, _ = run(jip, "%%jaxprofile -q\n41 + 1;")
    assert res.result is None
    res, _ = run(jip, "%%jaxprofile -q\n41 + 1")
    assert res.result == 42


def test_output_flag_returns_report_and_still_shows_the_value(jip):
    res, out = run(jip, "%%jaxprofile -o\ny = f(jnp.ones(7))\n'value'")
    from jaxmagic.profile import ProfileReport

    assert isinstance(res.result, ProfileReport)
    assert res.result.function("f").compiles[0].signature == "x: f32[7]"
    assert "'value'" in out


def test_line_magic_keeps_statement_text_exactly(jip):
    res, _ = run(jip, '%jaxprofile -q s = "a  b" + str(f(jnp.ones(2)).shape)')
    assert res.success and jip.user_ns["s"] == "a  b(2,)"
    res, _ = run(jip, "r = %jaxprofile -o f(jnp.ones(11))")
    assert jip.user_ns["r"].function("f").compiles[0].signature == "x: f32[11]"


def test_json_flag_writes_the_report(jip, tmp_path):
    path = tmp_path / "report.json"
    res, _ = run(jip, f"%%jaxprofile -q --json {path}\nf(jnp.ones(13))")
    assert res.success
    data = json.loads(path.read_text())
    assert data["functions"][0]["name"] == "f" and data["functions"][0]["compiles"] == 1


def test_json_to_unwritable_path_fails_before_running(jip, tmp_path):
    jip.user_ns.pop("ran", None)
    for bad in (tmp_path / "missing" / "r.json", tmp_path):
        res, out = run(jip, f"%%jaxprofile --json {bad}\nran = True")
        assert not res.success
        assert "--json" in str(res.error_in_exec)
        assert "ran" not in jip.user_ns


def test_unknown_flag_names_the_valid_ones(jip):
    res, _ = run(jip, "%%jaxprofile --frobnicate\nx = 1")
    msg = str(res.error_in_exec)
    assert "unrecognized arguments: --frobnicate" in msg
    for flag in ("-o", "-q", "--json", "--no-jaxpr", "--hlo", "--trace"):
        assert flag in msg


def test_line_magic_without_statement_is_a_usage_error(jip):
    res, _ = run(jip, "%jaxprofile -q")
    assert "needs a statement" in str(res.error_in_exec)


def test_help_is_real(jip):
    res, out = run(jip, "%jaxprofile?")
    from IPython.core.magic_arguments import parse_argstring  # noqa: F401

    doc = jip.find_cell_magic("jaxprofile").__doc__
    assert "--trace" in doc and "--no-jaxpr" in doc and "-o" in doc


def test_syntax_error_is_a_plain_syntax_error_without_report(jip):
    res, out = run(jip, "%%jaxprofile\nx = (1,\n")
    assert isinstance(res.error_in_exec, SyntaxError)
    assert "JAX profile" not in out


def test_exception_reaches_user_unchanged_with_partial_report(jip):
    before = global_state()
    res, out = run(jip, "%%jaxprofile\npartial = f(jnp.ones(17))\nraise KeyError('boom')\nnever = 1")
    assert isinstance(res.error_in_exec, KeyError) and res.error_in_exec.args == ("boom",)
    assert "partial" in jip.user_ns and "never" not in jip.user_ns
    assert "INCOMPLETE (the code raised)" in out and "raised KeyError: 'boom'" in out
    # the partial report holds the call that ran before the raise: f, compiled once for f32[17]
    assert re.search(r"^f +line 1 +1 ", out, re.M) and "a:f32[17]" in out, out
    assert "raise KeyError('boom')" in out  # traceback shows the cell source line
    assert global_state() == before


def test_keyboard_interrupt_propagates_and_restores_state(jip):
    before = global_state()
    res, _ = run(jip, "%%jaxprofile -q\nf(jnp.ones(19))\nraise KeyboardInterrupt")
    assert isinstance(res.error_in_exec, KeyboardInterrupt)
    assert global_state() == before


def test_nested_profiled_cell(jip):
    before = global_state()
    res, out = run(jip, "%%jaxprofile\nf(jnp.ones(23))\n%jaxprofile f(jnp.ones(29))")
    assert res.success
    assert out.count("JAX profile of") == 2
    assert global_state() == before


def test_cell_that_changes_jax_config_keeps_its_change(jip):
    import jax

    try:
        res, _ = run(
            jip,
            "%%jaxprofile -q\njax.config.update('jax_enable_x64', True)\n"
            "x64 = jnp.zeros(2, jnp.float64).dtype",
        )
        assert res.success and str(jip.user_ns["x64"]) == "float64"
        assert jax.config.jax_enable_x64 is True
        assert jax.config.jax_explain_cache_misses is False
    finally:
        jax.config.update("jax_enable_x64", False)


def test_no_jaxpr_and_hlo_flags(jip):
    res, _ = run(jip, "%%jaxprofile -o --no-jaxpr --hlo\nf(jnp.ones(31))")
    fp = res.result.function("f")
    assert fp.jaxpr is None and fp.hlo.startswith("HloModule")


def test_trace_flag_records_device_time_and_calls(jip, tmp_path):
    res, out = run(
        jip,
        f"%%jaxprofile -o --trace {tmp_path}\nfor _ in range(4):\n    y = f(jnp.ones(37))\n"
        "y.block_until_ready()",
    )
    r = res.result
    assert r.trace_dir == str(tmp_path)
    assert r.function("f").calls == 4
    assert r.function("f").device_s > 0
    assert any(e["name"] == "f" for e in r.timeline)
    assert list(tmp_path.rglob("*.xplane.pb"))


def test_reload_20_times_leaves_one_registration(ip):
    from jaxmagic._internals import monitoring_listeners

    listeners = monitoring_listeners()
    for _ in range(20):
        ip.run_line_magic("reload_ext", "jaxmagic")
    manager = ip.magics_manager
    owners = [type(m).__name__ for m in manager.registry.values()]
    assert owners.count("ProfileMagics") == 1 and owners.count("IRMagics") == 1
    assert monitoring_listeners() == listeners
    ip.run_line_magic("unload_ext", "jaxmagic")
    assert "jaxprofile" not in manager.magics["cell"] and "jaxpr" not in manager.magics["line"]
    ip.run_line_magic("load_ext", "jaxmagic")
    assert "jaxprofile" in manager.magics["cell"]


@pytest.mark.slow  # a fresh interpreter
def test_load_ext_does_not_import_jax():
    code = (
        "import sys, IPython.testing.globalipapp as g; ip = g.start_ipython(); "
        "ip.run_line_magic('load_ext', 'jaxmagic'); "
        "print(sorted(m for m in ('jax', 'flax', 'treescope', 'optax', 'orbax') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert out.stdout.strip().splitlines()[-1] == "[]"


# -- %jaxpr / %jaxhlo --------------------------------------------------------

IR_SETUP = """
from flax import nnx
def g(x, y):
    return jax.lax.scan(lambda c, a: (c + a * y, c), 0.0, x)[0]
lin = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
@nnx.jit
def apply(m, x):
    return m(x).sum()
def branchy(x):
    if x > 0:
        return x
    return -x
"""


def test_jaxpr_of_plain_jit_nnx_and_module_calls(jip):
    jip.run_cell(IR_SETUP)
    for call, expect in [
        ("g(jnp.ones(4), 2.0)", "scan"),
        ("f(jnp.ones(3))", "sin"),
        ("apply(lin, jnp.ones((1, 2)))", "dot_general"),
        ("lin(jnp.ones((5, 2)))", "f32[5,3]"),
        ("g(jnp.ones(4), y=3.0)", "scan"),
    ]:
        res, _ = run(jip, f"%jaxpr -o {call}")
        assert res.success, call
        assert expect in res.result.jaxpr, call


def test_jaxpr_text_and_html_faces(jip):
    jip.run_cell(IR_SETUP)
    res, out = run(jip, "%jaxpr g(jnp.ones(4), 2.0)")
    assert out.startswith("jaxpr of g(x: f32[4], y: f32[]) -> f32[]")
    html = jip.run_cell("%jaxpr -o g(jnp.ones(4), 2.0)").result.to_html()
    assert '<details class="jm-fold">' in html and "scan[" in html


def test_jaxhlo_stablehlo_and_optimized(jip):
    jip.run_cell(IR_SETUP)
    r = jip.run_cell("%jaxhlo -o lin(jnp.ones((4, 2)))").result
    assert r.stage == "stablehlo" and "stablehlo.dot_general" in r.stablehlo
    assert r.cost["flops"] > 0 and r.memory["argument_bytes"] == 4 * (3 + 6 + 8)
    r = jip.run_cell("%jaxhlo -o --optimized lin(jnp.ones((4, 2)))").result
    assert r.stage == "hlo" and r.hlo.startswith("HloModule")
    _, out = run(jip, "%jaxhlo lin(jnp.ones((4, 2)))")
    assert "FLOPs" in out and "StableHLO of" in out


@pytest.mark.parametrize(
    "line,message",
    [
        ("%jaxpr g", "needs a call like f(x, y)"),
        ("%jaxpr 1 + 2", "needs a call like f(x, y)"),
        ("%jaxpr", "needs a call"),
        ("%jaxpr undefined_fn(1)", "NameError: name 'undefined_fn' is not defined"),
        ("%jaxpr f(undefined_arg)", "NameError"),
        ("%jaxpr f(", "is not a Python expression"),
        ("%jaxpr branchy(jnp.ones(2))", "JAX could not trace branchy"),
        ("%jaxpr branchy(jnp.ones(2))", "if x > 0"),
        ("%jaxpr (3)(1)", "not a function"),
        ("%jaxhlo --bogus f(1.0)", "unrecognized arguments: --bogus"),
        ("%jaxpr f('text')", "JAX could not trace f"),
    ],
)
def test_ir_magic_bad_input(jip, line, message):
    jip.run_cell(IR_SETUP)
    before = global_state()
    res, _ = run(jip, line)
    assert not res.success
    assert message in str(res.error_in_exec)
    assert global_state() == before


def test_cell_that_turns_on_cache_miss_explanations_keeps_them_on(jip):
    import jax

    try:
        res, _ = run(jip, "%%jaxprofile -q\njax.config.update('jax_explain_cache_misses', True)")
        assert res.success
        assert jax.config.jax_explain_cache_misses is True
        assert "update" not in vars(jax.config)  # our watcher is gone
    finally:
        jax.config.update("jax_explain_cache_misses", False)


def test_functions_from_other_cells_are_labelled_by_cell(jip):
    res, _ = run(jip, "%%jaxprofile -o\nf(jnp.ones(41))")
    defined = res.result.function("f").defined_at
    assert defined.startswith("In[") and defined.endswith("]:2"), defined  # the decorator line
