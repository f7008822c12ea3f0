"""Trainer core: equivalence with a hand loop, model ownership, data order, metrics, callbacks,
divergence, stop/interrupt, progress views and History rendering. Real JAX/Flax/Optax/Orbax."""

from __future__ import annotations

import io
import json
import os
import signal

import jax
import numpy as np
import optax
import pytest
from flax import nnx

from jaxmagic.train import (
    Callback,
    EarlyStopping,
    LearningRateLogger,
    MetricLogger,
    TerminalProgress,
    Trainer,
    TrainingDivergedError,
)
from tests.helpers import TinyMLP, batches, dataset, loss_fn, one_device, params_of, parse_html


def hand_loop(model, tx, data):
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    opt = tx.init(params)

    @jax.jit
    def step(params, opt, batch):
        def lf(p):
            return loss_fn(nnx.merge(graphdef, p, rest, copy=True), batch)[0]

        grads = jax.grad(lf)(params)
        updates, opt = tx.update(grads, opt, params)
        return optax.apply_updates(params, updates), opt

    for b in data:
        params, opt = step(params, opt, b)
    return [np.asarray(x) for x in jax.tree.leaves(params)]


@pytest.mark.slow
def test_iterable_of_batches_matches_hand_written_loop():
    X, y = dataset(160)
    data = batches(X, y, 16, 10)
    tx = optax.adam(1e-2)
    expected = hand_loop(TinyMLP(rngs=nnx.Rngs(0)), tx, data)
    model = TinyMLP(rngs=nnx.Rngs(0))
    history = Trainer(model, tx, loss_fn, devices=one_device()).fit(data, progress=None, steps_per_call=4)
    assert history.status == "completed" and history.last_step == 10  # ran until exhausted
    got = params_of(model)
    assert not all(np.array_equal(a, b) for a, b in zip(got, params_of(TinyMLP(rngs=nnx.Rngs(0)))))
    for a, b in zip(got, expected):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)
    # 10 steps with 4 per call: calls of 4, 4 and the final 2 -> two compiled lengths
    # train programs only: a process's first fit also lists its one-off peak FLOP/s measurement,
    # and every fit the flight recorder's probe
    train = sorted(c["what"] for c in history.compiles if c["what"].startswith("train call"))
    assert train == ["train call (2 steps)", "train call (4 steps)"]


@pytest.mark.slow
def test_model_is_usable_after_fit_and_between_fits():
    X, y = dataset(64)
    model = TinyMLP(rngs=nnx.Rngs(0))
    trainer = Trainer(model, optax.sgd(0.1), loss_fn, devices=one_device())
    trainer.fit((X, y), steps=5, batch_size=16, progress=None)
    out = model(X[:4])  # never "Array has been deleted"
    assert out.shape == (4, 3) and np.isfinite(np.asarray(out)).all()
    # a user edit between fits is picked up, not overwritten by a stale copy
    model.l2.bias[...] = np.full((3,), 5.0, np.float32)
    trainer.fit((X, y), steps=6, batch_size=16, progress=None)
    assert trainer.step == 6
    assert np.all(np.abs(np.asarray(model.l2.bias) - 5.0) < 1.0)
    model(X[:2])


@pytest.mark.slow
def test_array_order_is_deterministic_and_partial_batch_dropped():
    X, y = dataset(100)  # 100 = 6 * 16 + 4: 4 examples dropped each epoch
    runs = []
    for seed in (0, 0, 1):
        model = TinyMLP(rngs=nnx.Rngs(0))
        h = Trainer(model, optax.sgd(0.1), loss_fn, devices=one_device(), seed=seed).fit(
            (X, y), epochs=2, batch_size=16, progress=None
        )
        runs.append(params_of(model))
    assert h.config["dropped_per_epoch"] == 4 and h.config["steps_per_epoch"] == 6
    assert len(h.epochs) == 2 and h.last_step == 12
    assert all(np.array_equal(a, b) for a, b in zip(runs[0], runs[1]))
    assert not all(np.array_equal(a, b) for a, b in zip(runs[0], runs[2]))
    assert [c["what"] for c in h.compiles if c["what"].startswith("train")] == ["train call (12 steps)"]


@pytest.mark.slow
def test_metrics_evaluate_predict_and_history_faces():
    X, y = dataset(128)
    model = TinyMLP(rngs=nnx.Rngs(0))
    metrics = {"accuracy": nnx.metrics.Accuracy(), "top_logit": lambda aux, batch: aux.max(axis=-1).mean()}
    trainer = Trainer(model, optax.adam(1e-2), loss_fn, metrics=metrics, devices=one_device())
    h = trainer.fit((X[:96], y[:96]), epochs=3, batch_size=16, eval_data=(X[96:], y[96:]), progress=None)
    assert set(h.metrics) == {"loss", "accuracy", "top_logit"} and len(h.metric("loss")) == 18
    assert len(h.evals) == 3 and {"eval_loss", "eval_accuracy", "eval_top_logit"} <= set(h.evals[-1])
    ev = trainer.evaluate((X[96:], y[96:]), batch_size=16)
    assert ev["eval_loss"] == pytest.approx(h.evals[-1]["eval_loss"], rel=1e-5)
    logits = np.asarray(model(X[96:]))
    assert ev["eval_accuracy"] == pytest.approx(float((logits.argmax(-1) == y[96:]).mean()), abs=1e-6)
    pred = trainer.predict(X[96:], batch_size=10)  # 32 rows: 3 batches of 10 and one of 2
    np.testing.assert_allclose(pred, logits, rtol=1e-5, atol=1e-5)
    # the three faces
    assert repr(h).startswith("History(18 steps, completed")
    text = h.to_text()
    assert "epoch" in text and "eval_loss" in text and "steps/s" in text
    page = h.to_html()
    parser = parse_html(page)
    assert parser.count("svg") == 1 and parser.count("polyline") >= 1 and "<script" not in page
    json.dumps(h.to_dict())


def test_compiled_call_donates_the_train_state():
    X, y = dataset(64)
    model = TinyMLP(rngs=nnx.Rngs(0))
    trainer = Trainer(model, optax.adam(1e-3), loss_fn, devices=one_device())
    h = trainer.fit((X, y), steps=4, batch_size=16, progress=None)
    state_bytes = sum(x.nbytes for x in jax.tree.leaves(trainer._state))
    entry = next(c for c in h.compiles if c["what"].startswith("train"))
    assert entry["alias_bytes"] >= state_bytes - 8  # everything aliased (the bad flag may be copied)


@pytest.mark.slow
def test_non_finite_loss_stops_and_restores_last_finite_state():
    X, y = dataset(160)
    data = batches(X, y, 16, 10)
    bad = list(data)
    bad[6] = (np.full_like(data[6][0], np.nan), data[6][1])  # step 7 produces NaN
    model = TinyMLP(rngs=nnx.Rngs(0))
    trainer = Trainer(model, optax.adam(1e-2), loss_fn, devices=one_device())
    with pytest.raises(TrainingDivergedError, match="at step 7") as err:
        trainer.fit(bad, progress=None, steps_per_call=4)
    assert err.value.step == 7 and trainer.step == 6 and trainer.history.status == "diverged"
    expected = hand_loop(TinyMLP(rngs=nnx.Rngs(0)), optax.adam(1e-2), data[:6])
    for a, b in zip(params_of(model), expected):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)
    assert np.isfinite(np.asarray(model(X[:4]))).all()


@pytest.mark.slow
def test_callbacks_early_stopping_lr_logger_metric_logs(tmp_path):
    X, y = dataset(96)
    sched = optax.linear_schedule(0.1, 0.0, 40)
    seen = []

    class Recorder(Callback):
        def on_train_begin(self, trainer, info):
            seen.append(("begin", info["target"]))

        def on_step(self, trainer, step, logs):
            seen.append(("step", step))

        def on_eval(self, trainer, step, logs):
            seen.append(("eval", step))

        def on_train_end(self, trainer, history):
            seen.append(("end", history.status))

    model = TinyMLP(rngs=nnx.Rngs(0))
    trainer = Trainer(model, optax.sgd(sched), loss_fn, devices=one_device())
    # eval data unrelated to the labels: eval_loss stops improving quickly
    rng = np.random.default_rng(5)
    Xe, ye = rng.normal(size=(32, 8)).astype(np.float32), rng.integers(0, 3, 32).astype(np.int32)
    h = trainer.fit(
        (X, y),
        epochs=40,
        batch_size=16,
        eval_data=(Xe, ye),
        progress=None,
        callbacks=[
            EarlyStopping("eval_loss", patience=2, min_delta=10.0),
            LearningRateLogger(sched),
            MetricLogger(tmp_path / "m.csv"),
            MetricLogger(tmp_path / "m.jsonl", every=2),
            Recorder(),
        ],
    )
    assert h.status == "stopped" and "early stopping" in h.message
    assert trainer.step == 18  # best at epoch 1, then 2 evaluations without improvement
    assert seen[0] == ("begin", 240) and seen[-1] == ("end", "stopped")
    assert [s for k, s in seen if k == "step"] == list(range(1, 19))
    np.testing.assert_allclose(h.metric("lr"), np.asarray(sched(np.arange(18))), rtol=1e-6)
    rows = (tmp_path / "m.csv").read_text().splitlines()
    assert (
        rows[0] == "kind,step,name,value"
        and sum(r.startswith("train,") and ",loss," in r for r in rows) == 18
    )
    lines = [json.loads(x) for x in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines if x["kind"] == "train"] == list(range(2, 19, 2))
    assert sum(x["kind"] == "eval" for x in lines) == 3


def test_stop_request_from_callback_and_terminal_progress():
    X, y = dataset(96)

    class StopAt(Callback):
        def on_step(self, trainer, step, logs):
            if step == 6:
                trainer.request_stop()

    buf = io.StringIO()
    model = TinyMLP(rngs=nnx.Rngs(0))
    trainer = Trainer(model, optax.sgd(0.1), loss_fn, devices=one_device())
    h = trainer.fit(
        (X, y),
        steps=40,
        batch_size=16,
        steps_per_call=3,
        callbacks=[StopAt()],
        progress=TerminalProgress(buf),
    )
    # metrics are read one call behind: the stop lands at the next call boundary
    assert h.status == "stopped" and 6 <= trainer.step <= 12 and trainer.step % 3 == 0
    out = buf.getvalue()
    assert f"step {trainer.step}/40" in out and "stopped at step" in out and "steps/s" in out
    assert np.isfinite(np.asarray(model(X[:2]))).all()


def test_keyboard_interrupt_stops_at_boundary_saves_and_propagates(tmp_path):
    X, y = dataset(96)

    class Interrupt(Callback):
        def on_step(self, trainer, step, logs):
            if step == 5:
                os.kill(os.getpid(), signal.SIGINT)

        def on_checkpoint(self, trainer, step, path):
            os.kill(os.getpid(), signal.SIGINT)  # a second interrupt while the save is running

    model = TinyMLP(rngs=nnx.Rngs(0))
    trainer = Trainer(
        model,
        optax.sgd(0.1),
        loss_fn,
        devices=one_device(),
        checkpoint_dir=tmp_path / "ck",
        save_every_epoch=False,
    )
    with pytest.raises(KeyboardInterrupt):
        trainer.fit(
            (X, y), steps=100, batch_size=16, steps_per_call=2, callbacks=[Interrupt()], progress=None
        )
    h = trainer.history
    assert h.status == "interrupted" and h.message.startswith(f"interrupted at step {trainer.step}")
    assert trainer.checkpoint_steps == [trainer.step]
    params = params_of(model)  # usable, and equal to what a new trainer restores
    restored = TinyMLP(rngs=nnx.Rngs(1))
    t2 = Trainer(restored, optax.sgd(0.1), loss_fn, devices=one_device(), checkpoint_dir=tmp_path / "ck")
    assert t2.step == trainer.step
    assert all(np.array_equal(a, b) for a, b in zip(params, params_of(restored)))


def test_auto_call_length_divides_the_run_so_it_compiles_once():
    """1100 steps at the automatic 200 per call would need a second program for the last 100."""
    import jax
    import numpy as np
    import optax
    from flax import nnx

    from jaxmagic.train import Trainer

    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(256, 8)).astype(np.float32), rng.integers(0, 3, 256).astype(np.int32)
    model = nnx.Linear(8, 3, rngs=nnx.Rngs(0))

    def loss_fn(m, batch):
        return optax.softmax_cross_entropy_with_integer_labels(m(batch[0]), batch[1]).mean()

    tr = Trainer(model, optax.sgd(0.1), loss_fn, devices=jax.devices()[:1])
    tr.fit((X, y), steps=1100, batch_size=8, progress=None)
    k = tr.history.config["steps_per_call"]
    assert 1100 % k == 0 and k > 100
    assert len([c for c in tr.history.compiles if c["what"].startswith("train call")]) == 1


@pytest.mark.slow
def test_learning_rate_logger_feeds_the_live_view():
    import jax
    import numpy as np
    import optax
    from flax import nnx

    from jaxmagic.train import Callback, LearningRateLogger, Trainer

    rng = np.random.default_rng(1)
    X, y = rng.normal(size=(64, 4)).astype(np.float32), rng.integers(0, 2, 64).astype(np.int32)
    schedule = optax.warmup_cosine_decay_schedule(0.0, 0.1, 10, 40)

    def loss_fn(m, batch):
        return optax.softmax_cross_entropy_with_integer_labels(m(batch[0]), batch[1]).mean()

    tr = Trainer(nnx.Linear(4, 2, rngs=nnx.Rngs(0)), optax.sgd(schedule), loss_fn, devices=jax.devices()[:1])
    seen = []

    class Watch(Callback):  # a progress view: reads what the live widget reads, after user callbacks
        def on_steps(self, trainer, steps, logs):
            seen.append(trainer.progress.last.get("lr"))

    tr.fit(
        (X, y),
        steps=40,
        batch_size=8,
        progress=None,
        steps_per_call=10,
        callbacks=[LearningRateLogger(schedule), Watch()],
    )
    import pytest

    assert seen == pytest.approx([float(schedule(s - 1)) for s in (10, 20, 30, 40)], rel=1e-6)
    assert tr.history.metric("lr")[9] == pytest.approx(float(schedule(9)), rel=1e-6)
