"""Achieved FLOP/s, bytes/s and utilisation under ``--trace`` (issue 10), checked against XLA's cost
analysis of the same call compiled here and the report's own device time; n/a, never a crash,
where a number cannot be had."""

from __future__ import annotations

import gzip
import json

import jax
import jax.numpy as jnp
import pytest
from IPython.utils.capture import capture_output
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxmagic import devicepeak
from jaxmagic.profile import Profiler, tracing
from jaxmagic.profile.throughput import achieved
from jaxmagic.profile.tracing import TraceSession
from tests.fingerprint import CompileCounter

N = 128


def fresh():
    """A function never compiled before (jit caches per function object)."""

    def matmuls(x):
        return jnp.tanh(x @ x) @ x

    return matmuls


def traced(body, directory, **kw):
    session = TraceSession(str(directory))
    with Profiler() as prof:
        session.start()
        try:
            body()
        finally:
            session.stop()
    return prof.report(trace=session.summary(), **kw)


def cost(fn, *args):
    return jax.jit(fn).lower(*args).compile().cost_analysis()


def test_flops_per_second_is_cost_analysis_times_calls_over_device_time(tmp_path):
    x = jnp.ones((N, N))
    matmuls = fresh()
    f = jax.jit(matmuls)

    def body():
        for _ in range(5):
            f(x).block_until_ready()

    r = traced(body, tmp_path)
    fp = r.function("matmuls")
    analysis = cost(matmuls, x)
    flops, nbytes = analysis["flops"], analysis["bytes accessed"]
    assert flops >= 2 * 2 * N**3  # two matmuls
    t = fp.throughput
    assert fp.calls == t.executions == 5 and t.devices == 1 and t.note is None
    assert t.flops_per_s == pytest.approx(flops * fp.calls / fp.device_s)
    assert t.bytes_per_s == pytest.approx(nbytes * fp.calls / fp.device_s)
    assert r.peak_flops == devicepeak.peak_flops(jax.devices()[0]) and r.peak_flops > 0
    assert t.utilization == pytest.approx(t.flops_per_s / r.peak_flops)
    d = json.loads(r.to_json())
    assert d["functions"][0]["throughput"]["flops_per_s"] == pytest.approx(t.flops_per_s)
    assert d["peak_flops"] == r.peak_flops and "measured once per process" in d["peak_source"]
    text, html = r.to_text(width=200), r.to_html()
    from jaxmagic._format import fmt_count

    count = fmt_count(t.flops_per_s)  # e.g. 2.04G
    shown = f"{count[:-1]} {count[-1]}FLOP/s"
    assert shown in text and shown in html
    assert "Achieved throughput (--trace), against a peak of" in text
    assert "measured once per process: best of 7 float32 512×512 matmuls on cpu" in text
    assert "jm-throughput" in html


def test_the_cpu_peak_is_measured_once_at_report_build_not_in_the_profiled_code(tmp_path, monkeypatch):
    monkeypatch.setattr(devicepeak, "_measured", {})  # as in a fresh process
    x = jnp.ones((N, N))
    f, g = jax.jit(fresh()), jax.jit(fresh())
    counter = CompileCounter()
    with counter.listening():
        first = traced(lambda: f(x).block_until_ready(), tmp_path / "a")
        second = traced(lambda: g(x).block_until_ready(), tmp_path / "b")
    assert counter.by_name["jaxmagic.measure_peak_flops"] == 1  # once per process
    for r in (first, second):  # the profiled code never ran it
        assert "jaxmagic.measure_peak_flops" not in {fn.name for fn in r.functions}
    assert first.peak_flops == second.peak_flops


def test_magic_trace_shows_throughput_without_measuring_in_the_cell(ip, tmp_path, monkeypatch):
    monkeypatch.setattr(devicepeak, "_measured", {})
    ip.run_cell(
        f"import jax, jax.numpy as jnp\nx = jnp.ones(({N}, {N}))\ndef matmuls(x):\n    return jnp.tanh(x @ x) @ x"
    )
    with capture_output():
        res = ip.run_cell(
            f"%%jaxprofile -o --trace {tmp_path}\nf = jax.jit(matmuls)\nys = [f(x) for _ in range(3)]\n"
        )
    r = res.result
    fp = r.function("matmuls")
    flops = cost(ip.user_ns["matmuls"], ip.user_ns["x"])["flops"]
    assert fp.calls == fp.throughput.executions == 3  # every result kept: all waited for
    assert fp.throughput.flops_per_s == pytest.approx(flops * fp.calls / fp.device_s)
    assert [f.name for f in r.functions if f.kind == "jit"] == ["matmuls"]
    assert r.peak_source.startswith("measured")


def test_a_program_over_eight_devices_is_rated_per_device(tmp_path):
    mesh = jax.make_mesh((8,), ("d",))
    x = jax.device_put(jnp.ones((8 * 32, N)), NamedSharding(mesh, P("d")))
    w = jnp.ones((N, N))

    def layer(x, w):
        return jnp.tanh(x @ w)

    f = jax.jit(layer)
    r = traced(lambda: [f(x, w).block_until_ready() for _ in range(3)], tmp_path)
    fp = r.function("layer")
    per_device = cost(layer, x, w)["flops"]
    assert per_device == pytest.approx(2 * 32 * N * N, rel=0.05)  # one device's share
    t = fp.throughput
    assert t.devices == 8 and t.executions == 3
    # device_s sums the 8 devices: each did per_device × 3 FLOPs in device_s / 8
    assert t.flops_per_s == pytest.approx(per_device * 3 / (fp.device_s / 8))
    assert "(8 devices)" in r.to_text(width=200)


def test_a_loop_the_cost_analysis_counts_once_shows_na(tmp_path):
    def loop(x):
        return jax.lax.fori_loop(0, 4, lambda i, c: jnp.sin(c @ c), x)

    f = jax.jit(loop)
    x = jnp.ones((N, N))
    r = traced(lambda: [f(x).block_until_ready() for _ in range(2)], tmp_path)
    t = r.function("loop").throughput
    assert t.flops_per_s is None and t.utilization is None and "has a loop" in t.note
    assert "loop: the program has a loop" in r.to_text(width=200)


@pytest.mark.slow
def test_missing_cost_analysis_and_unknown_peak_show_na(tmp_path):
    warm = jax.jit(fresh())
    x = jnp.ones((N, N))
    warm(x).block_until_ready()  # compiled before: the report has no cost analysis for it

    class Unknown:  # a device of a kind nobody knows, that JAX cannot run a matmul on
        platform, device_kind = "weird", "Mystery Accelerator 9000"

    other = jax.jit(lambda x: x @ x)

    def body():
        warm(x).block_until_ready()
        other(x).block_until_ready()

    r = traced(body, tmp_path, device=Unknown())
    hit = r.function("matmuls").throughput
    assert hit.flops_per_s is None and hit.utilization is None and "compiled before" in hit.note
    assert "jax.clear_caches()" in hit.note
    lam = r.function("<lambda>").throughput
    assert lam.flops_per_s > 0 and lam.utilization is None  # rate known, peak not
    assert "peak FLOP/s is not known" in lam.note
    assert r.peak_flops is None and r.peak_source is None
    text, html = r.to_text(width=200), r.to_html()
    assert "the device's peak FLOP/s is not known" in text and "n/a" in text
    assert "peak FLOP/s is not known" in html
    json.dumps(r.to_dict())


@pytest.mark.parametrize("flops", [None, -1.0, "garbage", float("nan"), 0.0])
def test_bad_cost_numbers_give_na_with_the_reason(flops):
    t = achieved(
        flops=flops,
        bytes_accessed=1024.0,
        executions=3,
        devices=1,
        device_s=0.5,
        programs=1,
        shared_name=False,
        peak_flops=1e9,
    )
    assert t.flops_per_s is None and t.utilization is None and "no FLOPs" in t.note
    assert t.bytes_per_s == pytest.approx(1024 * 3 / 0.5)


def test_two_functions_of_one_name_share_device_time_so_neither_is_rated(tmp_path):
    a = jax.jit(lambda x: x @ x)
    b = jax.jit(lambda x: jnp.sin(x) @ x)  # defined on another line: another function
    x = jnp.ones((N, N))
    r = traced(lambda: (a(x).block_until_ready(), b(x).block_until_ready()), tmp_path)
    lambdas = [f for f in r.functions if f.name == "<lambda>"]
    assert len(lambdas) == 2
    assert all(f.throughput.flops_per_s is None and "same name" in f.throughput.note for f in lambdas)


def test_nested_op_events_are_not_counted_twice(tmp_path):
    """A loop's body ops run inside its ``while`` op: device time is their union per device."""

    def ev(ts, dur, op, run="1", device="0"):
        return {
            "ph": "X",
            "ts": ts,
            "dur": dur,
            "pid": 1,
            "name": op,
            "args": {"hlo_module": "jit_step", "run_id": run, "device_ordinal": device, "hlo_op": op},
        }

    events = [ev(0, 100, "while.1"), ev(10, 30, "fusion"), ev(50, 40, "fusion.1"), ev(100, 20, "copy")]
    events += [ev(0, 50, "fusion", device="1")]  # the same run on a second device
    path = tmp_path / "perfetto_trace.json.gz"
    with gzip.open(path, "wt") as fh:
        json.dump({"traceEvents": events}, fh)
    s = tracing.summarise(str(path))
    assert s["device_s"]["step"] == pytest.approx((120 + 50) / 1e6)
    assert s["device_runs"] == {"step": 1} and s["devices"] == {"step": 2}


def test_real_loop_device_time_fits_inside_its_executions(tmp_path):
    def loop(x):
        return jax.lax.fori_loop(0, 6, lambda i, c: jnp.sin(c @ c), x)

    f = jax.jit(loop)
    x = jnp.ones((N, N))
    r = traced(lambda: [f(x).block_until_ready() for _ in range(3)], tmp_path)
    spans = sum(e["dur_s"] for e in r.timeline if e["name"] == "loop")
    assert 0 < r.function("loop").device_s <= spans * (1 + 1e-9)
