"""The trainer on data and code as users write them: loaders with a short last batch, and
mistakes JAX reports from deep inside the trainer (or not at all) named in the user's terms."""

from __future__ import annotations

import re

import jax
import numpy as np
import optax
import pytest
from flax import nnx

from jaxmagic.train import EarlyStopping, Trainer
from tests.helpers import TinyMLP, batches, dataset, loss_fn, one_device, params_of


def hand_loop(model, tx, data):
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    opt = tx.init(params)

    @jax.jit
    def step(params, opt, batch):
        grads = jax.grad(lambda p: loss_fn(nnx.merge(graphdef, p, rest, copy=True), batch)[0])(params)
        updates, opt = tx.update(grads, opt, params)
        return optax.apply_updates(params, updates), opt

    for b in data:
        params, opt = step(params, opt, b)
    return [np.asarray(x) for x in jax.tree.leaves(params)]


def loader(X, y, batch_size):
    """A data loader without drop_last: the last batch is short."""
    for i in range(0, len(X), batch_size):
        yield X[i : i + batch_size], y[i : i + batch_size]


# -- short batches ---------------------------------------------------------------------------
@pytest.mark.parametrize("steps_per_call", ["auto", 4, 1])
@pytest.mark.slow
def test_generator_with_a_short_last_batch_trains_every_full_batch(steps_per_call):
    X, y = dataset(164)  # 10 batches of 16, then one of 4
    tx = optax.adam(1e-2)
    expected = hand_loop(TinyMLP(rngs=nnx.Rngs(0)), tx, batches(X, y, 16, 10))
    model = TinyMLP(rngs=nnx.Rngs(0))
    trainer = Trainer(model, tx, loss_fn, devices=one_device())
    h = trainer.fit(loader(X, y, 16), progress=None, steps_per_call=steps_per_call)
    assert trainer.step == 10 and h.status == "completed" and h.last_step == 10
    for a, b in zip(params_of(model), expected):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)
    note = "1 short batch not trained (batch 11: 4 rows; batch size 16), as with drop_last=True"
    assert h.runs[-1].notes == [note + ": every step keeps one shape"] and note in h.message
    assert note in " ".join(h.to_text().split()) and note in trainer.progress.message  # text face wraps lines
    # no program for the short batch's shape: train calls, the flight recorder's probe of a
    # call's first step, and a process's one-off peak FLOP/s measurement
    assert all(
        c["what"].startswith(("train call", "flight recorder probe", "device peak")) for c in h.compiles
    )


@pytest.mark.slow
def test_a_short_batch_mid_stream_is_dropped_too_and_a_bigger_one_is_an_error():
    X, y = dataset(200)
    data = batches(X, y, 16, 6)
    data.insert(3, (X[:8], y[:8]))  # e.g. two epochs of a loader without drop_last, chained
    model = TinyMLP(rngs=nnx.Rngs(0))
    h = Trainer(model, optax.sgd(0.1), loss_fn, devices=one_device()).fit(
        data, progress=None, steps_per_call=2
    )
    assert h.last_step == 6 and "batch 4: 8 rows" in h.message
    bigger = batches(X, y, 16, 3) + [(X[:32], y[:32])]
    t = Trainer(TinyMLP(rngs=nnx.Rngs(0)), optax.sgd(0.1), loss_fn, devices=one_device())
    with pytest.raises(ValueError, match="(?s)batch 4.*batch size: expected 16, got 32"):
        t.fit(bigger, progress=None, steps_per_call=1)
    assert t.step == 3  # the steps before it are kept


def test_arrays_with_a_short_last_batch_train_the_full_batches_and_say_what_was_dropped():
    X, y = dataset(164)
    model = TinyMLP(rngs=nnx.Rngs(0))
    h = Trainer(model, optax.sgd(0.1), loss_fn, devices=one_device()).fit(
        (X, y), epochs=2, batch_size=16, progress=None
    )
    assert h.last_step == 20 and h.config["dropped_per_epoch"] == 4
    assert "4 of 164 examples per epoch not trained" in h.message and h.runs[-1].notes


@pytest.mark.slow
def test_resuming_a_loader_with_dropped_short_batches_continues_at_its_data_position(tmp_path):
    X, y = dataset(200)
    data = batches(X, y, 16, 8)
    data.insert(2, (X[:4], y[:4]))  # a short batch early: the data position is no longer the step
    full = TinyMLP(rngs=nnx.Rngs(0))
    Trainer(full, optax.adam(1e-2), loss_fn, devices=one_device()).fit(data, progress=None, steps_per_call=2)
    part = TinyMLP(rngs=nnx.Rngs(0))
    Trainer(part, optax.adam(1e-2), loss_fn, devices=one_device(), checkpoint_dir=tmp_path).fit(
        data, steps=4, progress=None, steps_per_call=2
    )
    again = TinyMLP(rngs=nnx.Rngs(9))
    t = Trainer(again, optax.adam(1e-2), loss_fn, devices=one_device(), checkpoint_dir=tmp_path)
    assert t.step == 4
    t.fit(data, progress=None, steps_per_call=2)  # skips the 5 batches used (4 trained, 1 dropped)
    assert t.step == 8
    assert all(np.array_equal(a, b) for a, b in zip(params_of(full), params_of(again)))


# -- evaluation-driven features without evaluation ----------------------------------------------
def _first_batch_is_still_there(gen, X):
    return np.array_equal(next(gen)[0], X[:16])


def test_early_stopping_without_eval_data_is_refused_before_anything_happens():
    X, y = dataset(96)
    model = TinyMLP(rngs=nnx.Rngs(0))
    before = params_of(model)
    trainer = Trainer(model, optax.sgd(0.1), loss_fn, devices=one_device())
    gen = loader(X, y, 16)
    with pytest.raises(
        ValueError,
        match=r"EarlyStopping\('eval_loss'\) acts on evaluations, but fit\(\) has no "
        r"eval_data: pass eval_data=",
    ):
        trainer.fit(gen, progress=None, callbacks=[EarlyStopping("eval_loss")])
    assert _first_batch_is_still_there(gen, X)
    with pytest.raises(
        ValueError,
        match=r"EarlyStopping\('eval_acc'\) watches 'eval_acc', which evaluation does "
        r"not produce; evaluations give eval_loss",
    ):
        trainer.fit(
            (X, y),
            steps=3,
            batch_size=16,
            eval_data=(X, y),
            progress=None,
            callbacks=[EarlyStopping("eval_acc")],
        )
    assert trainer.step == 0 and trainer.history.runs == []
    assert all(np.array_equal(a, b) for a, b in zip(params_of(model), before))


def test_keep_best_without_eval_data_or_checkpoint_dir_is_refused(tmp_path):
    X, y = dataset(96)
    with pytest.raises(
        ValueError, match="keep_best='eval_loss' keeps the best checkpoint, but there is no checkpoint_dir"
    ):
        Trainer(
            TinyMLP(rngs=nnx.Rngs(0)), optax.sgd(0.1), loss_fn, devices=one_device(), keep_best="eval_loss"
        )
    trainer = Trainer(
        TinyMLP(rngs=nnx.Rngs(0)),
        optax.sgd(0.1),
        loss_fn,
        devices=one_device(),
        checkpoint_dir=tmp_path / "ck",
        keep_best="eval_loss",
    )
    with pytest.raises(
        ValueError, match=r"keep_best='eval_loss' acts on evaluations, but fit\(\) has no eval_data"
    ):
        trainer.fit((X, y), steps=3, batch_size=16, progress=None)
    assert trainer.step == 0 and trainer.checkpoint_steps == []


# -- loss_fn that is not traceable -----------------------------------------------------------------
def loss_with_float(model, batch):
    loss = loss_fn(model, batch)[0]
    return float(loss) * 1.0  # the mistake


def loss_with_item(model, batch):
    loss = loss_fn(model, batch)[0]
    print("loss", loss.item())  # the mistake
    return loss


def loss_with_numpy(model, batch):
    logits = np.asarray(model(batch[0]))  # the mistake
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch[1]).mean()


def _line_of(fn, text):
    import inspect

    lines, first = inspect.getsourcelines(fn)
    return first + next(i for i, line in enumerate(lines) if text in line)


@pytest.mark.parametrize(
    "bad_loss, code",
    [
        (loss_with_float, "return float(loss) * 1.0"),
        (loss_with_item, 'print("loss", loss.item())'),
        (loss_with_numpy, "logits = np.asarray(model(batch[0]))"),
    ],
)
def test_loss_fn_that_converts_to_python_numbers_names_the_users_line(bad_loss, code):
    X, y = dataset(96)
    model = TinyMLP(rngs=nnx.Rngs(0))
    before = params_of(model)
    trainer = Trainer(model, optax.sgd(0.1), bad_loss, devices=one_device())
    where = f"`{code}  # the mistake` at {__file__}:{_line_of(bad_loss, code)}"
    with pytest.raises(TypeError) as err:
        trainer.fit((X, y), steps=3, batch_size=16, progress=None)
    msg = str(err.value)
    assert msg.startswith(f"loss_fn must stay traceable: {where} needs a concrete number"), msg
    assert "jax.jit" in msg and "jaxmagic/" not in msg and err.value.__cause__ is None
    with pytest.raises(TypeError, match=re.escape(f"loss_fn must stay traceable: {where}")):
        trainer.evaluate((X, y), batch_size=16)
    assert trainer.step == 0 and trainer.history.runs == []
    assert all(np.array_equal(a, b) for a, b in zip(params_of(model), before))


def test_a_metric_function_that_is_not_traceable_is_named():
    X, y = dataset(96)

    def acc(aux, batch):
        return float((aux.argmax(-1) == batch[1]).mean())

    trainer = Trainer(
        TinyMLP(rngs=nnx.Rngs(0)), optax.sgd(0.1), loss_fn, metrics={"acc": acc}, devices=one_device()
    )
    with pytest.raises(TypeError, match=r"^metric 'acc' must stay traceable: `return float\(\(aux"):
        trainer.fit((X, y), steps=3, batch_size=16, progress=None)
    assert trainer.step == 0


# -- dict batches and nnx.metrics ---------------------------------------------------------------
def dict_loss(model, batch):
    logits = model(batch["image"])
    labels = batch["label"] if "label" in batch else batch["labels"]
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), logits


@pytest.mark.slow
def test_dict_batches_with_accuracy_say_which_keys_the_metric_needs():
    X, y = dataset(96)
    model = TinyMLP(rngs=nnx.Rngs(0))
    before = params_of(model)
    trainer = Trainer(
        model, optax.sgd(0.1), dict_loss, metrics={"accuracy": nnx.metrics.Accuracy()}, devices=one_device()
    )
    with pytest.raises(ValueError) as err:
        trainer.fit({"image": X, "label": y}, steps=3, batch_size=16, progress=None)
    msg = str(err.value)
    assert msg.startswith(
        "metric 'accuracy' (Accuracy) is updated as update(logits=..., labels=...) and nothing "
        "provides 'labels': it gets loss and values (the loss); the batch's keys image, label; "
        "logits (the aux loss_fn returns). Map them: name the batch key 'labels'"
    ), msg
    assert trainer.step == 0 and all(np.array_equal(a, b) for a, b in zip(params_of(model), before))
    # the suggested mappings work
    h = trainer.fit({"image": X, "labels": y}, steps=3, batch_size=16, progress=None)
    assert len(h.metric("accuracy")) == 3

    def aux_loss(model, batch):
        loss, logits = dict_loss(model, batch)
        return loss, {"logits": logits, "labels": batch["label"]}

    t2 = Trainer(
        TinyMLP(rngs=nnx.Rngs(0)),
        optax.sgd(0.1),
        aux_loss,
        metrics={"accuracy": nnx.metrics.Accuracy()},
        devices=one_device(),
    )
    assert (
        len(t2.fit({"image": X, "label": y}, steps=3, batch_size=16, progress=None).metric("accuracy")) == 3
    )
