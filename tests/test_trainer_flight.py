"""Flight recorder basics: FLOPs per step from the compiled call (checked against a hand count of
the matmuls), MFU, data-wait share; in History.to_dict, the terminal line and the widget stats."""

from __future__ import annotations

import io
import json
import math
import time

import optax
import pytest
from flax import nnx

from jaxmagic import devicepeak
from jaxmagic.render.training import progress_view
from jaxmagic.train import TerminalProgress, Trainer, flight
from jaxmagic.train.history import RunRecord
from tests.helpers import TinyMLP, batches, dataset, loss_fn, one_device

DIN, WIDTH, DOUT, B = 8, 256, 3, 32


def _matmul_flops_per_step() -> float:
    """Forward 2·B·in·out per layer; backward the weight gradient of each layer and the input
    gradient of every layer but the first (no gradient w.r.t. the data)."""
    layers = [(DIN, WIDTH), (WIDTH, DOUT)]
    fwd = sum(2 * B * i * o for i, o in layers)
    return fwd + fwd + (fwd - 2 * B * DIN * WIDTH)


def _fit(steps_per_call, data=None, **kw):
    X, y = dataset(640)
    t = Trainer(TinyMLP(DIN, WIDTH, DOUT, rngs=nnx.Rngs(0)), optax.adam(1e-3), loss_fn, devices=one_device())
    t.fit(data if data is not None else (X, y), steps_per_call=steps_per_call, progress=None, **kw)
    return t


@pytest.mark.parametrize("k", [1, 10])
@pytest.mark.slow
def test_flops_per_step_match_a_hand_count_for_any_call_length(k):
    t = _fit(k, steps=20, batch_size=B)
    hand = _matmul_flops_per_step()
    got = t.history.runs[-1].flops_per_step
    # the matmuls dominate; the rest (bias, relu, softmax, Adam) adds a little, never less
    assert hand <= got <= 1.35 * hand, (got, hand)


@pytest.mark.slow
def test_mfu_is_achieved_flops_over_the_measured_peak():
    t = _fit(10, steps=40, batch_size=B)
    run = t.history.runs[-1]
    assert run.peak_flops == devicepeak.peak_flops(one_device()[0])  # measured once, cached
    totals = t.history.to_dict()["totals"]
    expected = run.steps * run.flops_per_step / run.train_seconds / run.peak_flops
    assert totals["mfu"] == pytest.approx(expected) and totals["mfu"] > 0
    assert totals["flops_per_second"] == pytest.approx(run.steps * run.flops_per_step / run.train_seconds)
    json.dumps(t.history.to_dict())  # JSON-clean


def test_known_accelerators_have_a_peak_by_name_and_cpu_is_measured_once():
    class H100:
        platform, device_kind = "gpu", "NVIDIA H100 80GB HBM3"

    assert devicepeak.peak_flops(H100()) == 989e12
    cpu = one_device()[0]
    first = devicepeak.peak_flops(cpu)
    assert first > 0 and devicepeak.peak_flops(cpu) == first  # cached: not measured again


def _slow_batches(n, sleep):
    X, y = dataset(640)
    for b in batches(X, y, B, n):
        time.sleep(sleep)  # an input pipeline slower than the step
        yield b


@pytest.mark.slow
def test_data_wait_shows_an_input_bound_run():
    fed = _fit(2, data=_slow_batches(16, 0.05))
    on_device = _fit(2, steps=16, batch_size=B)
    slow = fed.history.to_dict()["totals"]["data_wait_fraction"]
    fast = on_device.history.to_dict()["totals"]["data_wait_fraction"]
    assert 0.5 < slow <= 1.0, slow  # most of the training time waited for batches
    assert fast < slow


@pytest.mark.slow
def test_data_wait_of_a_run_that_is_one_call_counts_its_input():
    """All 16 batches feed one call: the wait for them is the run's data-wait (it was not
    counted at all, and steps/s reported the compute alone: thousands of steps/s for a
    pipeline that delivers 20 batches a second)."""
    t = _fit(16, data=_slow_batches(16, 0.05))
    run = t.history.runs[-1]
    assert t.step == 16
    # the first batch is read before the feeding thread starts; the other 15 sleeps are waited for
    assert run.data_wait_seconds >= 15 * 0.05 * 0.9, run.data_wait_seconds
    assert run.train_seconds >= run.data_wait_seconds
    assert t.history.to_dict()["totals"]["steps_per_second"] <= 16 / (15 * 0.05 * 0.9)


def test_terminal_line_and_widget_stats_show_mfu_and_data_wait():
    X, y = dataset(640)
    buf = io.StringIO()
    t = Trainer(TinyMLP(DIN, WIDTH, DOUT, rngs=nnx.Rngs(0)), optax.adam(1e-3), loss_fn, devices=one_device())
    t.fit((X, y), steps=20, batch_size=B, steps_per_call=5, progress=TerminalProgress(buf, summary=False))
    line = buf.getvalue().splitlines()[-2]  # the final progress line, before the message
    assert "MFU " in line and "data-wait " in line and "loss " in line, line
    stats = dict(progress_view(t.progress, t.history)["stats"])
    assert stats["MFU"].endswith("%") and stats["data wait"].endswith("%")
    d = t.progress.to_dict()
    assert math.isfinite(d["mfu"]) and 0 <= d["data_wait_fraction"] <= 1


def test_history_logged_before_the_recorder_still_loads():
    old = {"start_step": 0, "end_step": 5, "status": "completed", "steps": 5, "train_seconds": 1.0}
    r = RunRecord.from_dict(old)
    assert r.flops_per_step is None and r.peak_flops is None and r.data_wait_seconds == 0.0


@pytest.mark.slow
def test_measuring_the_peak_is_a_listed_compile_under_a_readable_name(monkeypatch):
    """The first fit of a process measures the CPU peak with a matmul: that compile is in
    History.compiles (equal to an independent count) and profiles as Trainer.*, not <lambda>."""
    from jaxmagic.profile import Profiler
    from tests.fingerprint import CompileCounter

    monkeypatch.setattr(devicepeak, "_measured", {})  # as in a fresh process
    X, y = dataset(640)
    t = Trainer(TinyMLP(DIN, WIDTH, DOUT, rngs=nnx.Rngs(0)), optax.adam(1e-3), loss_fn, devices=one_device())
    counter = CompileCounter()
    with counter.listening(), Profiler() as prof:
        t.fit((X, y), steps=20, batch_size=B, progress=None)
    assert len(t.history.compiles) == counter.total, (t.history.compiles, dict(counter.by_name))
    assert any("peak" in c["what"] for c in t.history.compiles)
    names = {f.name for f in prof.report().functions if f.kind == "jit"}
    assert "Trainer.measure_peak_flops" in names and not any("lambda" in n for n in names)


@pytest.mark.slow
def test_the_cost_analysis_probe_agrees_with_the_known_cpu_convention_and_is_a_listed_compile(monkeypatch):
    from tests.fingerprint import CompileCounter

    monkeypatch.setattr(flight, "_per_trip", {})  # a backend not known: probed once
    assert flight.counts_per_trip(one_device()[0]) is False  # CPU counts a loop body once
    monkeypatch.setattr(flight, "_per_trip", {})
    X, y = dataset(640)
    t = Trainer(TinyMLP(DIN, WIDTH, DOUT, rngs=nnx.Rngs(0)), optax.adam(1e-3), loss_fn, devices=one_device())
    counter = CompileCounter()
    with counter.listening():
        t.fit((X, y), steps=20, batch_size=B, steps_per_call=10, progress=None)
    assert len(t.history.compiles) == counter.total
    assert any("cost analysis convention" in c["what"] for c in t.history.compiles)
    assert _matmul_flops_per_step() <= t.history.runs[-1].flops_per_step <= 1.35 * _matmul_flops_per_step()
