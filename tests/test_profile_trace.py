"""``--trace``: call counts that are exact, or marked as lower bounds with the reason."""

from __future__ import annotations

import gzip
import json

import jax
import jax.numpy as jnp
import pytest
from IPython.utils.capture import capture_output

from jaxmagic.profile import Profiler, tracing
from jaxmagic.profile.tracing import TraceSession


def traced(body, directory):
    """Profile ``body()`` with a trace, stopping the trace inside the profiled block as the
    magic does (before the profiler's own wait for device work)."""
    session = TraceSession(str(directory))
    with Profiler() as prof:
        session.start()
        try:
            body()
        finally:
            session.stop()
    return prof.report(trace=session.summary())


def test_every_call_is_counted_and_functions_compiled_before_are_listed(tmp_path):
    @jax.jit
    def step(w, x):
        return jnp.tanh(w @ x)

    @jax.jit
    def warm(x):  # compiled before the profiled block: a cache hit in it
        return jnp.cos(x) @ x

    x = jnp.ones((64, 64))
    warm(x).block_until_ready()
    calls = {"step": 0, "warm": 0}

    def body():
        w = x
        for _ in range(50):
            w = step(w, x)  # never waited for: the last calls are still queued at the end
            calls["step"] += 1
            warm(x)
            calls["warm"] += 1

    r = traced(body, tmp_path)
    assert r.function("step").calls == calls["step"] == 50
    hit = r.function("warm")
    assert hit.compiles == () and hit.calls == calls["warm"] == 50 and hit.device_s > 0
    assert not hit.calls_lower_bound and not any("truncated" in n for n in r.notes)
    assert "compiled before" in r.to_text()


def test_a_truncated_trace_gives_lower_bounds_and_says_how_to_get_all(tmp_path, monkeypatch):
    f = jax.jit(lambda x: x * 2)
    f(jnp.ones(8)).block_until_ready()
    monkeypatch.setattr(tracing, "TRUNCATION_EVENTS", 50)  # a real trace, a small cap

    def body():
        for _ in range(20):
            f(jnp.ones(8))

    r = traced(body, tmp_path)
    fp = r.function("<lambda>")
    assert fp.calls_lower_bound
    (note,) = [n for n in r.notes if "truncated" in n]
    assert "events covering" in note and "profile a shorter cell or fewer steps" in note
    assert f"≥{fp.calls}" in r.to_text() and f"≥{fp.calls}" in r.to_html()


def test_a_trace_that_ends_early_is_detected_from_its_time_span(tmp_path):
    events = [
        {
            "ph": "X",
            "ts": 1000.0 + i,
            "dur": 1.0,
            "name": "op",
            "args": {"hlo_module": "jit_step", "run_id": str(i)},
        }
        for i in range(3)
    ]
    path = tmp_path / "perfetto_trace.json.gz"
    with gzip.open(path, "wt") as fh:
        json.dump({"traceEvents": events}, fh)
    whole = tracing.summarise(str(path), traced_s=0.000004)
    assert whole["device_runs"] == {"step": 3} and whole["truncated"] is None
    cut = tracing.summarise(str(path), traced_s=2.5)  # events cover 3 µs of 2.5 s
    assert "trace truncated at 3 events covering" in cut["truncated"] and "of 2.5 s" in cut["truncated"]


def test_a_second_trace_while_one_runs_gives_one_honest_message(tmp_path):
    first = TraceSession(str(tmp_path / "a"))
    first.start()
    try:
        r = traced(lambda: jax.jit(lambda x: x + 1)(jnp.ones(2)), tmp_path / "b")
    finally:
        first.stop()
    assert r.trace_dir is None
    text, html = r.to_text(), r.to_html()
    assert "Trace written" not in text and "Trace written" not in html
    assert text.count("no trace recorded") == 1
    assert "already running" in text


@pytest.mark.parametrize("n", [3])
def test_trace_magic_counts_calls_exactly_without_waiting_in_the_cell(ip, tmp_path, n):
    ip.run_cell(
        "import jax, jax.numpy as jnp\ng = jax.jit(lambda x: jnp.sin(x) @ x)\n"
        "g(jnp.ones((32, 32))).block_until_ready()"
    )
    with capture_output():
        res = ip.run_cell(
            f"%%jaxprofile -o --trace {tmp_path}\nfor _ in range({n}):\n    y = g(jnp.ones((32, 32)))\n"
        )
    r = res.result
    (fp,) = [f for f in r.functions if f.kind == "jit"]
    assert fp.calls == n and fp.compiles == ()
