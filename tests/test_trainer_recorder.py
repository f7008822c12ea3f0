"""Flight recorder, per layer: names and numbers checked against a hand computation of the same
norms (optax.tree.norm, formerly global_norm, per layer of one step's gradients and updates,
from a hand loop on the same batches), frozen and non-Param variables kept out, the cadence,
History round trip, the widget's heatmap decoded, and the recorder off."""

from __future__ import annotations

import base64
import json
import re
import struct
import zlib

import jax
import numpy as np
import optax
import pytest
from flax import nnx

from jaxmagic.render.flight import heatmap_columns, heatmap_html
from jaxmagic.render.training import progress_view
from jaxmagic.train import History, Trainer
from jaxmagic.train.recorder import FlightLog, Layers
from tests.helpers import TinyMLP, batches, dataset, loss_fn, one_device, parse_html

FROZEN = nnx.All(nnx.Param, nnx.Not(nnx.PathContains("l1")))  # l1 frozen: not trained


class Scale(nnx.Variable):
    """A non-Param variable the loss uses (must be neither trained nor a layer)."""


class Net(nnx.Module):
    """Dense -> BatchNorm -> Dense, a non-Param ``Scale`` and parameters in a list of blocks."""

    def __init__(self, rngs: nnx.Rngs):
        self.l1 = nnx.Linear(8, 16, rngs=rngs)
        self.bn = nnx.BatchNorm(16, rngs=rngs)
        self.blocks = nnx.List([nnx.Linear(16, 16, rngs=rngs) for _ in range(2)])
        self.l2 = nnx.Linear(16, 3, rngs=rngs)
        self.temperature = Scale(np.float32(2.0))

    def __call__(self, x):
        h = nnx.relu(self.bn(self.l1(x)))
        for b in self.blocks:
            h = nnx.relu(b(h))
        return self.l2(h) / self.temperature[...]


def _per_layer(tree, names):
    flat = dict(nnx.to_flat_state(tree))
    out = {}
    for n in names:
        parts = tuple(int(p) if p.isdigit() else p for p in n.split("/"))
        out[n] = float(optax.tree.norm([v[...] for k, v in flat.items() if k[: len(parts)] == parts]))
    return out


def _hand_records(model, tx, data, record_steps):
    """Per recorded step: per-layer norms of the gradients, the updates and the parameters
    (before the step), from a hand-written loop over the same batches."""
    graphdef, params, rest = nnx.split(model, FROZEN, ...)
    opt = tx.init(params)
    names = Layers.of(params).names

    def loss(p, r, b):
        m = nnx.merge(graphdef, p, r, copy=True)
        m.train()
        return loss_fn(m, b)[0], nnx.state(m, nnx.Not(FROZEN))

    out = {}
    for step, b in enumerate(data, 1):
        (_, rest_new), grads = jax.value_and_grad(loss, has_aux=True)(params, rest, b)
        updates, opt_new = tx.update(grads, opt, params)
        if step in record_steps:
            out[step] = {
                "grad": _per_layer(grads, names),
                "update": _per_layer(updates, names),
                "param": _per_layer(params, names),
            }
        params, opt, rest = optax.apply_updates(params, updates), opt_new, rest_new
    return names, out


@pytest.mark.slow
def test_norms_per_layer_match_a_hand_computation_of_the_same_step():
    X, y = dataset(200)
    data = batches(X, y, 16, 12)
    tx = optax.adam(1e-2)
    model = Net(nnx.Rngs(0))
    frozen_before = np.asarray(model.l1.kernel[...]).copy()
    trainer = Trainer(model, tx, loss_fn, wrt=FROZEN, flight=1, devices=one_device())
    h = trainer.fit(data, progress=None, steps_per_call=4)  # calls start at steps 1, 5, 9
    flight = h.flight
    assert flight.steps == [1, 5, 9]
    # module paths, in model order; the frozen l1, BatchNorm's statistics and Scale are not layers
    assert flight.layers == ["blocks/0", "blocks/1", "bn", "l2"]
    names, hand = _hand_records(Net(nnx.Rngs(0)), tx, data, set(flight.steps))
    assert list(names) == flight.layers
    for i, step in enumerate(flight.steps):
        for j, name in enumerate(flight.layers):
            exp = hand[step]
            assert flight.grad_norm[i][j] == pytest.approx(exp["grad"][name], rel=1e-4), (step, name)
            assert flight.update_norm[i][j] == pytest.approx(exp["update"][name], rel=1e-4), (step, name)
            assert flight.param_norm[i][j] == pytest.approx(exp["param"][name], rel=1e-5), (step, name)
    ratio = h.to_dict()["flight"]["update_ratio"]
    assert ratio[0][3] == pytest.approx(flight.update_norm[0][3] / flight.param_norm[0][3])
    np.testing.assert_array_equal(np.asarray(model.l1.kernel[...]), frozen_before)  # frozen: untouched
    assert float(model.temperature[...]) == 2.0


@pytest.mark.slow
def test_one_step_calls_record_every_step():
    X, y = dataset(200)
    data = batches(X, y, 16, 3)
    tx = optax.sgd(0.1)
    trainer = Trainer(Net(nnx.Rngs(0)), tx, loss_fn, wrt=FROZEN, flight=1, devices=one_device())
    flight = trainer.fit(data, progress=None, steps_per_call=1).flight
    names, hand = _hand_records(Net(nnx.Rngs(0)), tx, data, {1, 2, 3})
    assert flight.steps == [1, 2, 3]
    for i, step in enumerate(flight.steps):
        for j, name in enumerate(names):
            assert flight.update_norm[i][j] == pytest.approx(hand[step]["update"][name], rel=1e-4)
            # sgd: the update is -lr * grad
            assert flight.update_norm[i][j] == pytest.approx(0.1 * flight.grad_norm[i][j], rel=1e-5)


@pytest.mark.parametrize("guard", ["call", "step"])
@pytest.mark.slow
def test_both_guards_record_the_same_norms(guard):
    X, y = dataset(200)
    t = Trainer(
        TinyMLP(rngs=nnx.Rngs(0)), optax.adam(1e-2), loss_fn, guard=guard, flight=1, devices=one_device()
    )
    f = t.fit((X, y), steps=12, batch_size=16, progress=None, steps_per_call=6).flight
    ref = Trainer(
        TinyMLP(rngs=nnx.Rngs(0)), optax.adam(1e-2), loss_fn, guard="call", flight=1, devices=one_device()
    )
    g = ref.fit((X, y), steps=12, batch_size=16, progress=None, steps_per_call=6).flight
    assert t.guard == guard and f.steps == g.steps == [1, 7]
    np.testing.assert_allclose(f.grad_norm, g.grad_norm, rtol=1e-5)
    np.testing.assert_allclose(f.update_norm, g.update_norm, rtol=1e-4)


@pytest.mark.slow
def test_history_round_trip_widget_stats_and_text():
    X, y = dataset(200)
    t = Trainer(TinyMLP(rngs=nnx.Rngs(0)), optax.adam(1e-2), loss_fn, flight=1, devices=one_device())
    h = t.fit((X, y), steps=30, batch_size=16, progress=None, steps_per_call=5)
    d = json.loads(json.dumps(h.to_dict()))
    assert d["flight"]["layers"] == ["l1", "l2"] and d["flight"]["steps"] == [1, 6, 11, 16, 21, 26]
    assert d["flight"]["memory_peak"] == [None] * 6 and d["totals"]["memory_peak_bytes"] is None  # CPU
    assert History.from_dict(d).to_dict() == d
    stats = dict(progress_view(t.progress, h)["stats"])
    assert stats["memory peak"] == "n/a" and stats["MFU"].endswith("%") and stats["data wait"].endswith("%")
    text = h.to_text()
    assert "flight recorder: 6 records, last at step 26 · memory high-water n/a" in text
    row = next(line for line in text.splitlines() if line.startswith("l2 "))
    assert f"{h.flight.grad_norm[-1][1]:.3g}" in row and f"{h.flight.param_norm[-1][1]:.3g}" in row
    page = parse_html(h.to_html())
    assert "Gradient norm per layer" in page.text and "memory peak" in page.text
    h.truncate(11)
    assert h.flight.steps == [1, 6, 11]


def _png(html: str) -> tuple[int, int, np.ndarray]:
    src = re.search(r'src="data:image/png;base64,([^"]+)"', html).group(1)
    raw = base64.b64decode(src)
    assert raw[:8] == b"\x89PNG\r\n\x1a\n"
    w, h = struct.unpack(">II", raw[16:24])
    idat = raw[raw.index(b"IDAT") + 4 : raw.index(b"IEND") - 8]
    rows = zlib.decompress(idat)
    px = np.frombuffer(rows, np.uint8).reshape(h, 1 + 3 * w)[:, 1:].reshape(h, w, 3)
    return w, h, px


def test_heatmap_is_layers_by_records_with_non_finite_cells_marked():
    log = FlightLog()
    for step in range(1, 6):
        g = np.array([1.0, 4.0, np.nan if step == 3 else 100.0]) ** 2  # sums of squares
        log.add(("a", "b", "c"), step, g, g / 100, g * 10, None)
    html = heatmap_html(log)
    w, h, px = _png(html)
    assert (w, h) == (5, 3)  # one pixel per record and layer (scaled up by the <img>)
    assert tuple(px[2, 2]) == (214, 39, 40)  # layer c, step 3: non-finite -> red
    assert tuple(px[0, 0]) != tuple(px[2, 0])  # norms 1 and 100 get different colours
    page = parse_html(html, self_contained=True)
    assert "gradient norm 1 … 100 (log scale)" in page.text and "non-finite" in page.text
    assert "step 1" in page.text and "step 5" in page.text
    # more records than columns: a column keeps the largest value of its records
    cols, grid = heatmap_columns(list(range(1, 201)), np.arange(200, dtype=float).reshape(200, 1), n=50)
    assert len(cols) == 50 and cols[0] == (1, 4) and grid[0, 0] == 3.0 and grid[0, -1] == 199.0


@pytest.mark.slow
def test_a_cadence_records_a_call_every_n_steps_and_lists_its_probe():
    from tests.fingerprint import CompileCounter

    X, y = dataset(200)
    t = Trainer(TinyMLP(rngs=nnx.Rngs(0)), optax.adam(1e-2), loss_fn, flight=100, devices=one_device())
    counter = CompileCounter()
    with counter.listening():
        h = t.fit((X, y), steps=240, batch_size=16, progress=None, steps_per_call=30)
    assert h.flight.steps == [1, 121]  # calls start at 0, 30, ...: the first ones 100+ steps apart
    assert len(h.compiles) == counter.total  # the probe, compiled beside the train call, is listed
    assert sum("flight recorder probe" in c["what"] for c in h.compiles) == 1
    h2 = t.fit((X, y), steps=300, batch_size=16, progress=None, steps_per_call=30)
    assert h2.flight.steps == [1, 121, 241]  # each fit records its first call


@pytest.mark.slow
def test_the_default_recorder_waits_for_a_long_enough_run(monkeypatch):
    from jaxmagic.train import recorder
    from tests.fingerprint import CompileCounter

    X, y = dataset(200)
    monkeypatch.setattr(recorder, "PROBE_AFTER", 1e9)  # a run that is never long enough
    t = Trainer(TinyMLP(rngs=nnx.Rngs(0)), optax.adam(1e-2), loss_fn, devices=one_device())
    h = t.fit((X, y), steps=60, batch_size=16, progress=None, steps_per_call=10)
    assert h.flight.steps == [] and not any("probe" in c["what"] for c in h.compiles)
    monkeypatch.setattr(recorder, "PROBE_AFTER", 0.0)  # long enough at once: compiles on another thread
    counter, listed = CompileCounter(), len(t.history.compiles)
    with counter.listening():
        h = t.fit((X, y), steps=120, batch_size=16, progress=None, steps_per_call=10)
    assert sum("flight recorder probe" in c["what"] for c in h.compiles) == 1  # ready by the end
    assert len(h.compiles) - listed == counter.total == 1
    first = list(h.flight.steps)  # which calls it recorded depends on when the compile finished
    assert all(s in range(61, 121, 10) for s in first)
    h = t.fit((X, y), steps=300, batch_size=16, progress=None, steps_per_call=10)
    assert h.flight.steps == [*first, 121, 221]  # now compiled: from the first call, every 100+ steps


def test_flight_must_be_a_bool_or_a_positive_int():
    for bad in (0, -5, 2.5, "often"):
        with pytest.raises(ValueError, match="flight must be True, False or a positive int"):
            Trainer(TinyMLP(rngs=nnx.Rngs(0)), optax.adam(1e-2), loss_fn, flight=bad, devices=one_device())


@pytest.mark.slow
def test_recorder_off_records_nothing():
    X, y = dataset(200)
    t = Trainer(TinyMLP(rngs=nnx.Rngs(0)), optax.adam(1e-2), loss_fn, flight=False, devices=one_device())
    h = t.fit((X, y), steps=10, batch_size=16, progress=None, steps_per_call=5)
    assert h.flight.steps == [] and progress_view(t.progress, h)["heatmap"] == ""
    assert "memory peak" not in dict(progress_view(t.progress, h)["stats"])


def test_a_model_with_nothing_to_train_is_refused():
    with pytest.raises(ValueError, match="no variables to train: none matches wrt="):
        Trainer(TinyMLP(rngs=nnx.Rngs(0)), optax.adam(1e-2), loss_fn, wrt=Scale, devices=one_device())
