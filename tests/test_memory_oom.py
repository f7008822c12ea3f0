"""OOM explained: a real ``RESOURCE_EXHAUSTED`` on CPU (allocating 1 TiB), explained under an
unchanged traceback, in a real IPython shell and in a terminal IPython process."""

from __future__ import annotations

import inspect
import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest
from IPython.utils.capture import capture_output

from jaxmagic.memories.oom import explain_oom, requested_bytes

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OOM_CELL = "import jax.numpy as jnp\ndef grow(n):\n    return jnp.zeros((n,), jnp.float32)\n\ngrow(2**38)\n"


def _real_oom():
    try:
        jnp.zeros((2**38,), jnp.float32)
    except Exception as e:  # noqa: BLE001 - the real error is what we test
        return e
    pytest.fail("allocating 1 TiB did not fail")


def test_explains_a_real_resource_exhausted():
    keep = jnp.ones((128, 128))
    exc = _real_oom()
    assert isinstance(exc, jax.errors.JaxRuntimeError) and "RESOURCE_EXHAUSTED" in str(exc)
    report = explain_oom(exc, {"keep": keep})
    assert report.requested == 2**40
    assert report.error.startswith("RESOURCE_EXHAUSTED")
    # where: the innermost frame outside JAX, i.e. the allocating line in _real_oom
    lines, first = inspect.getsourcelines(_real_oom)
    lineno = first + next(i for i, line in enumerate(lines) if "jnp.zeros((2**38,)" in line)
    assert report.where == f"{__file__}:{lineno}"
    assert report.source == "jnp.zeros((2**38,), jnp.float32)"
    assert [f.action for f in report.fixes][:1] == ["del keep"] and report.fixes[0].frees == 128 * 128 * 4
    assert any("more than all named live arrays" in f for f in report.findings)
    # a plain function's call is not compiled again: only the names' bytes are known
    saves = {r.kind: r.saves for r in report.remedies}
    assert saves["free"] == 128 * 128 * 4 and report.remedies[0].action == "del keep"
    assert saves["batch"] is saves["donate"] is saves["shard"] is saves["remat"] is None
    text = report.to_text()
    assert "requested 1.0 TiB (1,099,511,627,776 bytes)" in text and "del keep" in text
    assert "<h3>" in report.to_html() and report.to_dict()["requested"] == 2**40


def test_chained_and_foreign_errors():
    exc = _real_oom()
    try:
        raise ValueError("training failed") from exc
    except ValueError as wrapped:
        assert explain_oom(wrapped, {}).requested == 2**40
    with pytest.raises(ValueError, match="not an out-of-memory"):
        explain_oom(KeyError("x"), {})


@pytest.mark.parametrize(
    "message, size",
    [
        ("RESOURCE_EXHAUSTED: Out of memory allocating 1099511627776 bytes.", 1099511627776),
        ("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 17179869184 bytes.", 17179869184),
        (
            "RESOURCE_EXHAUSTED: Failed to allocate request for 1.00GiB (1073741824B) on device ordinal 0",
            1073741824,
        ),
        ("RESOURCE_EXHAUSTED: out of memory", None),
    ],
)
def test_requested_bytes_from_each_wording(message, size):
    assert requested_bytes(message) == size


def _normalise(text):
    return re.sub(r"In\[\d+\]|ipython-input-\d+-[0-9a-f]+", "CELL", text)


@pytest.mark.slow
def test_explanation_under_an_unchanged_traceback_in_a_shell(ip):
    ip.run_line_magic("unload_ext", "jaxmagic")
    try:
        with capture_output() as plain:
            res_plain = ip.run_cell(OOM_CELL)
    finally:
        ip.run_line_magic("load_ext", "jaxmagic")
    with capture_output() as cap:
        res = ip.run_cell(OOM_CELL)
    exc = res.error_in_exec
    assert type(exc) is jax.errors.JaxRuntimeError  # the original exception, not a wrapper
    assert str(exc) == str(res_plain.error_in_exec)
    assert "jaxmagic" not in plain.stdout and not plain.outputs
    # the traceback is printed exactly as without the extension; the explanation follows it
    assert _normalise(cap.stdout).startswith(_normalise(plain.stdout))
    shown = cap.stdout[len(plain.stdout) :] + "".join(o.data["text/plain"] for o in cap.outputs)
    assert "out of device memory: asked for 1.0 TiB" in shown
    assert "%jaxplan grow(2**38)" in " ".join(shown.split())
    assert re.search(r"at In\[\d+\], line 3: return jnp.zeros", shown)


def test_other_errors_get_no_explanation(ip):
    with capture_output() as cap:
        res = ip.run_cell("raise KeyError('nope')")
    assert isinstance(res.error_in_exec, KeyError)
    assert "jaxmagic" not in cap.stdout and not cap.outputs


def _listeners(ip):
    return [cb for cb in ip.events.callbacks["post_run_cell"] if getattr(cb, "_jaxmagic_oom_listener", False)]


def test_listener_registered_once_and_removed_on_unload(ip):
    assert len(_listeners(ip)) == 1
    ip.run_line_magic("reload_ext", "jaxmagic")
    assert len(_listeners(ip)) == 1
    ip.run_line_magic("load_ext", "jaxmagic")  # already loaded: nothing added
    assert len(_listeners(ip)) == 1
    ip.run_line_magic("unload_ext", "jaxmagic")
    try:
        assert _listeners(ip) == []
    finally:
        ip.run_line_magic("load_ext", "jaxmagic")
    assert len(_listeners(ip)) == 1


@pytest.mark.slow
def test_terminal_ipython_process():
    env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "IPython",
            "--no-banner",
            "--colors=NoColor",
            "--ext",
            "jaxmagic",
            "-c",
            OOM_CELL,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    out = proc.stdout + proc.stderr
    tb = out.index("JaxRuntimeError: RESOURCE_EXHAUSTED: Out of memory allocating 1099511627776 bytes.")
    explained = out.index("jaxmagic: out of device memory: asked for 1.0 TiB")
    assert tb < explained
    assert "Traceback" in out[:tb] or "Cell" in out[:tb] or "File" in out[:tb]


def test_the_failing_jitted_call_is_compiled_again_not_run(ip):
    ip.run_cell(
        "import jax, jax.numpy as jnp\n"
        "calls = []\n"
        "@jax.jit\n"
        "def widen(a):\n"
        "    calls.append(1)  # runs at trace time only\n"
        "    return jnp.zeros((2**38,)) + a.sum()\n"
        "small = jnp.ones(3)\n"
    )
    with capture_output() as cap:
        res = ip.run_cell("out = widen(small)")
    assert isinstance(res.error_in_exec, jax.errors.JaxRuntimeError)
    shown = " ".join((cap.stdout + "".join(o.data["text/plain"] for o in cap.outputs)).split())
    assert "widen's program (traced and compiled again, not run): peak 1.0 TiB per device" in shown
    assert "outputs 1.0 TiB" in shown and "most of it outputs (1.0 TiB)" in shown
    assert "out" not in ip.user_ns and not ip.user_ns["small"].is_deleted()


def test_calls_that_are_not_plain_names_are_not_compiled():
    from jaxmagic.memories.oom import plan_failing_call

    ns = {"f": jax.jit(lambda a: a), "x": jnp.ones(2), "plain": lambda a: a}
    assert plan_failing_call("f(x)", ns) is not None
    assert plan_failing_call("f(x + 1)", ns) is None  # would evaluate user code
    assert plan_failing_call("plain(x)", ns) is None  # not a JAX function
    assert plan_failing_call("f(missing)", ns) is None
    assert plan_failing_call("obj.method(x)", ns) is None


@pytest.mark.slow
def test_a_profiled_cell_that_runs_out_is_explained_too(ip):
    ip.run_cell("import jax.numpy as jnp")
    with capture_output() as cap:
        res = ip.run_cell("%%jaxprofile\ny = jnp.zeros((2**38,), jnp.float32)\n")
    assert type(res.error_in_exec) is jax.errors.JaxRuntimeError
    shown = cap.stdout + "".join(o.data["text/plain"] for o in cap.outputs)
    assert shown.count("out of device memory: asked for 1.0 TiB") == 1


def test_json_and_escaped_html():
    import json

    exc = _real_oom()
    ns = {"d": {"<script>alert(1)</script>": jnp.ones(31)}}
    report = explain_oom(exc, ns)
    json.dumps(report.to_dict())
    from jaxmagic.memories import memory

    html = report.to_html() + memory(ns, top=10**6).to_html()
    assert "<script>alert(1)</script>" not in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def step_fn(state, x):
    wide = jnp.zeros((x.shape[0], 2**37)) + x[:, :1]  # 512 GiB per example: out of memory
    return state * 2, wide


def test_fixes_ranked_by_the_bytes_they_save_computed_independently():
    step = jax.jit(step_fn)
    state, x, keep = jnp.ones((64, 64)), jnp.ones((4, 1)), jnp.ones((128,))
    ns = {"step": step, "state": state, "x": x, "keep": keep}
    try:
        jax.block_until_ready(step(state, x))  # a tuple of outputs: the error comes asynchronously
    except jax.errors.JaxRuntimeError as e:
        report = explain_oom(e, ns)
    else:
        pytest.fail("allocating 2 TiB did not fail")
    assert report.call == "step(state, x)" and not state.is_deleted()

    def analysis(batch, donate=()):
        sds = (jax.ShapeDtypeStruct((64, 64), jnp.float32), jax.ShapeDtypeStruct((batch, 1), jnp.float32))
        fresh = jax.jit(lambda s, b: step_fn(s, b), donate_argnums=donate)  # not jit's cache of step
        return fresh.lower(*sds).compile().memory_analysis()

    def peak(m):
        return (
            m.argument_size_in_bytes
            + m.output_size_in_bytes
            + m.temp_size_in_bytes
            - m.alias_size_in_bytes
            + m.generated_code_size_in_bytes
        )

    full, half = analysis(4), analysis(2)
    by_kind = {r.kind: r for r in report.remedies if r.kind != "free"}
    # by hand: two examples fewer of the 512 GiB output, and of x (f32[1] each)
    assert by_kind["batch"].saves == peak(full) - peak(half) == 2 * 2**37 * 4 + 2 * 4
    assert by_kind["batch"].action == "halve the batch (x: 4 → 2)"
    # donating every argument: what XLA then aliases is what donation saves
    assert by_kind["donate"].saves == analysis(4, donate=(0, 1)).alias_size_in_bytes == 64 * 64 * 4
    args = full.argument_size_in_bytes
    assert by_kind["shard"].saves == args - -(-args // len(jax.local_devices()))
    assert by_kind["remat"].saves is None and report.remedies[-1].kind == "remat"
    frees = {r.action: r.saves for r in report.remedies if r.kind == "free"}
    assert frees == {"del state": 64 * 64 * 4, "del keep": 128 * 4, "del x": 4 * 4}
    known = [r.saves for r in report.remedies if r.saves is not None]
    assert known == sorted(known, reverse=True) and report.remedies[0].kind == "batch"
    text = report.to_text()
    assert "fixes, most bytes saved per device first" in text and "halve the batch (x: 4 → 2)" in text
    d = report.to_dict()["remedies"]
    assert (d[0]["action"], d[0]["saves"], d[0]["kind"]) == ("halve the batch (x: 4 → 2)", 2**40 + 8, "batch")


ASYNC_OOM = """
import jax, jax.numpy as jnp
import jaxmagic
from jaxmagic.profile import Profiler

@jax.jit
def step(s, x):
    return s * 2, jnp.zeros((x.shape[0], 2**37)) + x[:, :1]

s, x = jnp.ones((256, 256)), jnp.ones((4, 1))
with Profiler() as prof:
    out = step(s, x)  # returns (a tuple of outputs is run asynchronously) and fails afterwards
report = prof.report(namespace=globals())
print("profiled", report.memory.created == ())
print("memory", jaxmagic.memory(globals()).notes[0][:24])
try:
    jax.block_until_ready(out)
except Exception as e:
    print("explained", [r.action for r in jaxmagic.explain_oom(e, globals()).remedies][:1])
"""


@pytest.mark.slow
def test_arrays_whose_computation_failed_are_left_out_not_read():
    # Reading such an array's buffer address aborts the process (a failed CHECK in XLA),
    # hence a separate process here.
    env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
    proc = subprocess.run(
        [sys.executable, "-c", ASYNC_OOM], capture_output=True, text=True, timeout=300, env=env
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split("\n")[:3] == [
        "profiled True",  # the failed outputs were not listed as created memory
        "memory 2 array(s) whose computa",
        "explained ['del s']",
    ]
