"""Divergence: a real run that diverges (Adam with too high a learning rate sharpens a gate until
a softmax probability underflows to 0, where ``p * log(p)`` has a NaN gradient under a finite
loss) is stopped at the last finite state by either guard; the layer whose gradients went
non-finite is named; ``replay_diverged()`` names the operation and the source line and changes
nothing. Also: non-finite updates from finite gradients, a later fit after a divergence, the
last checkpoint, and the bad inputs (nothing diverged, the model changed since)."""

from __future__ import annotations

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxmagic.train import Trainer, TrainingDivergedError
from tests.helpers import TinyMLP, batches, dataset, loss_fn, one_device, params_of, parse_html


class Gated(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.body = nnx.Linear(8, 16, rngs=rngs)
        self.head = nnx.Linear(16, 3, rngs=rngs)
        self.gate = nnx.Linear(8, 4, rngs=rngs)  # a routing gate, sharpened by an entropy penalty

    def __call__(self, x):
        return self.head(nnx.relu(self.body(x))), jax.nn.softmax(self.gate(x))


def gated_loss(model, batch):
    x, y = batch
    logits, p = model(x)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()
    plogp = jnp.where(p > 0, p * jnp.log(p), 0.0)  # THE LINE: 0 log 0 is 0, its gradient NaN
    return ce - 0.5 * plogp.sum(-1).mean()


LINE = (
    next(i for i, text in enumerate(inspect.getsource(gated_loss).splitlines()) if "THE LINE" in text)
    + inspect.getsourcelines(gated_loss)[1]
)
X, Y = dataset(640)


def _diverge(guard, **kw):
    model = Gated(nnx.Rngs(0))
    trainer = Trainer(model, optax.adam(0.3), gated_loss, guard=guard, devices=one_device(), **kw)
    with pytest.raises(TrainingDivergedError) as err:
        trainer.fit((X, Y), steps=400, batch_size=32, progress=None, steps_per_call=16)
    return model, trainer, err.value


@pytest.fixture(scope="module")
def diverged_call():
    return _diverge("call")


@pytest.mark.slow
def test_a_real_divergence_names_the_layer_and_keeps_the_last_finite_state(diverged_call):
    model, trainer, err = diverged_call
    d = err.divergence
    bad = err.step
    assert d["grad_layers"] == ["gate"] and d["update_layers"] == ["gate"]  # body and head are fine
    assert isinstance(d["loss"], float) and np.isfinite(d["loss"])  # the loss never showed it
    assert trainer.step == bad - 1 == d["last_finite_step"] and trainer.history.status == "diverged"
    assert f"step {bad} went non-finite" in str(err) and "gradients non-finite in gate" in str(err)
    assert "replay_diverged()" in str(err) and trainer.history.divergence == d
    assert all(np.isfinite(p).all() for p in params_of(model))
    # the same run with the per-step guard stops at the same step, in the same state
    model_s, trainer_s, err_s = _diverge("step")
    assert err_s.step == bad and err_s.divergence["grad_layers"] == ["gate"] and trainer_s.step == bad - 1
    for a, b in zip(params_of(model), params_of(model_s)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # and the first calls of that run agree with a hand loop up to the step before
    assert trainer.history.metric("loss")[-1] == pytest.approx(trainer_s.history.metric("loss")[-1], rel=1e-5)


@pytest.mark.slow
def test_replay_names_the_operation_and_the_line_and_changes_nothing(diverged_call):
    model, trainer, err = diverged_call
    before = params_of(model)
    rest_before = [np.asarray(x) for x in jax.tree.leaves(nnx.state(model, nnx.Not(nnx.Param)))]
    config = (jax.config.jax_debug_nans, jax.config.jax_enable_checks)
    report = trainer.replay_diverged()
    f = report.finding
    assert f.kind == "nan" and report.operation == "mul" and f.line == LINE
    assert "p * jnp.log(p)" in report.source and f.file == __file__
    assert report.divergence["step"] == err.step and report.divergence["grad_layers"] == ["gate"]
    text = report.to_text()
    assert f"step {err.step}" in text and "gradients non-finite in gate" in text and "p * jnp.log(p)" in text
    page = parse_html(report.to_html())
    assert f"Divergence at step {err.step}" in page.text and "p * jnp.log(p)" in page.text
    d = report.to_dict()
    assert d["operation"] == "mul" and d["source"] == f.source and d["check"]["findings"]
    assert repr(report).startswith(f"DivergenceReport(step {err.step}: NaN produced by mul at ")
    for a, b in zip(params_of(model), before):
        np.testing.assert_array_equal(a, b)
    rest_after = [np.asarray(x) for x in jax.tree.leaves(nnx.state(model, nnx.Not(nnx.Param)))]
    for a, b in zip(rest_after, rest_before):
        np.testing.assert_array_equal(a, b)
    assert (jax.config.jax_debug_nans, jax.config.jax_enable_checks) == config


@pytest.mark.slow
def test_replay_after_the_user_changed_the_model_uses_the_kept_state(diverged_call):
    model, trainer, err = diverged_call
    first = trainer.replay_diverged()
    saved = np.asarray(model.head.kernel[...]).copy()
    model.head.kernel[...] = np.zeros_like(saved)  # the user edits the model after the divergence
    report = trainer.replay_diverged()
    assert report.operation == first.operation and report.finding.line == LINE
    assert any("model was changed after the divergence" in n for n in report.notes)
    np.testing.assert_array_equal(np.asarray(model.head.kernel[...]), 0.0)  # the edit stays
    model.head.kernel[...] = saved


def test_replay_when_nothing_diverged_is_a_clear_error():
    X, y = dataset(64)
    trainer = Trainer(TinyMLP(rngs=nnx.Rngs(0)), optax.adam(1e-2), loss_fn, devices=one_device())
    with pytest.raises(RuntimeError, match="nothing to replay: the last fit\\(\\) did not diverge \\(no fit"):
        trainer.replay_diverged()
    trainer.fit((X, y), steps=4, batch_size=16, progress=None)
    with pytest.raises(RuntimeError, match="did not diverge \\(it ended completed\\)"):
        trainer.replay_diverged()


def _nan_batches():
    X, y = dataset(160)
    data = batches(X, y, 16, 10)
    bad = list(data)
    bad[6] = (np.full_like(data[6][0], np.nan), data[6][1])  # step 7 produces NaN
    return data, bad


@pytest.mark.parametrize("guard", ["call", "step"])
@pytest.mark.slow
def test_a_later_fit_trains_again_and_replay_follows_the_last_fit(guard, tmp_path):
    data, bad = _nan_batches()
    model = TinyMLP(rngs=nnx.Rngs(0))
    trainer = Trainer(
        model,
        optax.adam(1e-2),
        loss_fn,
        guard=guard,
        devices=one_device(),
        checkpoint_dir=tmp_path,
        save_every=4,
    )
    with pytest.raises(TrainingDivergedError, match="last checkpoint: step 4") as err:
        trainer.fit(bad, progress=None, steps_per_call=4)
    assert err.value.step == 7 and err.value.divergence["checkpoint_step"] == 4 and trainer.step == 6
    assert err.value.divergence["grad_layers"] == ["l1", "l2"]
    assert "all 2 layers" in err.value.divergence["what"]
    report = trainer.replay_diverged()
    assert report.check.findings and any("input already contains NaN" in n for n in report.check.notes)
    h = trainer.fit(data, steps=10, progress=None, steps_per_call=4)  # the mark of the divergence is gone
    assert trainer.step == 10 and h.status == "completed"
    with pytest.raises(RuntimeError, match="did not diverge"):
        trainer.replay_diverged()


def _exploding_tx(at: int) -> optax.GradientTransformation:
    """SGD whose update divides by zero at step ``at``: non-finite updates from finite gradients."""

    def init(params):
        return jnp.zeros((), jnp.int32)

    def update(grads, count, params=None):
        scale = -0.1 / (count + 1 - at).astype(jnp.float32) * (count + 1 - at)  # 0/0 at step `at`
        return jax.tree.map(lambda g: scale * g, grads), count + 1

    return optax.GradientTransformation(init, update)


@pytest.mark.slow
def test_non_finite_updates_from_finite_gradients_are_caught_by_the_call_guard():
    data, _ = _nan_batches()
    model = TinyMLP(rngs=nnx.Rngs(0))
    trainer = Trainer(model, _exploding_tx(5), loss_fn, guard="call", devices=one_device())
    with pytest.raises(TrainingDivergedError) as err:
        trainer.fit(data, progress=None, steps_per_call=4)
    d = err.value.divergence
    assert err.value.step == 5 and trainer.step == 4
    assert d["grad_layers"] == [] and d["update_layers"] == ["l1", "l2"]
    assert "updates non-finite in all 2 layers" in d["what"]
    assert all(np.isfinite(p).all() for p in params_of(model))


def _loss_nan_on_marked_batches(model, batch):
    """A NaN loss with finite gradients (a logged term under stop_gradient): the parameters stay
    finite, so the call launched after the bad one checks out finite on its own."""
    x, y = batch
    logits = model(x)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.maximum(y, 0)).mean()
    return ce + jax.lax.stop_gradient(jnp.where(jnp.any(y < 0), jnp.nan, 0.0))


@pytest.mark.parametrize("guard", ["call", "step"])
@pytest.mark.slow
def test_the_call_after_a_bad_one_counts_for_nothing_even_when_it_checks_out_finite(guard):
    X, y = dataset(640)
    data = batches(X, y, 16, 40)
    marked = list(data)
    marked[5] = (data[5][0], np.full_like(data[5][1], -1))  # step 6: NaN loss, finite gradients
    model = TinyMLP(rngs=nnx.Rngs(0))
    trainer = Trainer(model, optax.adam(1e-2), _loss_nan_on_marked_batches, guard=guard, devices=one_device())
    with pytest.raises(TrainingDivergedError, match="at step 6"):
        trainer.fit(marked, progress=None, steps_per_call=4)
    assert trainer.step == 5 and list(trainer.history.steps) == [1, 2, 3, 4, 5]
    # the model holds the state after step 5: the same as five steps on the same batches
    ref = TinyMLP(rngs=nnx.Rngs(0))
    Trainer(ref, optax.adam(1e-2), _loss_nan_on_marked_batches, guard=guard, devices=one_device()).fit(
        data[:5], progress=None, steps_per_call=1
    )
    for got, want in zip(params_of(model), params_of(ref)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
