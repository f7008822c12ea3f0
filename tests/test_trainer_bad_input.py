"""Bad input is refused with a clear error before any training step, and nothing changes."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen as nn
from flax import nnx

from jaxmagic.train import Trainer
from tests.helpers import TinyMLP, batches, dataset, loss_fn, one_device, params_of


@pytest.fixture
def setup():
    X, y = dataset(96)
    model = TinyMLP(rngs=nnx.Rngs(0))
    return X, y, model, params_of(model)


def unchanged(model, before):
    return all(np.array_equal(a, b) for a, b in zip(params_of(model), before))


def test_model_that_is_not_nnx():
    with pytest.raises(TypeError, match="flax.nnx.Module.*Linen.*nnx.bridge.ToNNX"):
        Trainer(nn.Dense(3), optax.sgd(0.1), loss_fn)
    with pytest.raises(TypeError, match="must be a flax.nnx.Module"):
        Trainer(lambda x: x, optax.sgd(0.1), loss_fn)


@pytest.mark.parametrize(
    "bad_loss, message",
    [
        (
            lambda m, b: (optax.softmax_cross_entropy_with_integer_labels(m(b[0]), b[1]), None),
            "scalar loss, got f32\\[16\\]",
        ),
        (lambda m, b: jnp.sum(m(b[0]) > 0), "floating-point loss, got i32\\[\\]"),
        (lambda m, b: "loss", "scalar float array"),
    ],
)
def test_loss_that_is_not_a_float_scalar(setup, bad_loss, message):
    X, y, model, before = setup
    trainer = Trainer(model, optax.sgd(0.1), bad_loss, devices=one_device())
    with pytest.raises(TypeError, match=message):
        trainer.fit((X, y), steps=3, batch_size=16, progress=None)
    assert trainer.step == 0 and unchanged(model, before) and trainer.history.runs == []


def test_batches_whose_shapes_or_structure_change_mid_run(setup):
    X, y, model, _ = setup
    data = batches(X, y, 16, 5)
    data[3] = (X[:16, :4], y[:16])  # feature dimension changes at batch 4
    trainer = Trainer(model, optax.sgd(0.1), loss_fn, devices=one_device())
    with pytest.raises(ValueError, match=r"(?s)batch 4.*\[0\]: expected f32\[16,8\], got f32\[16,4\]"):
        trainer.fit(data, progress=None, steps_per_call=1)
    assert trainer.step == 3 and trainer.history.status == "failed"
    model(X[:2])  # usable, holding step 3
    data2 = batches(X, y, 16, 4)
    data2[2] = {"x": X[:16], "y": y[:16]}
    t2 = Trainer(TinyMLP(rngs=nnx.Rngs(0)), optax.sgd(0.1), loss_fn, devices=one_device())
    with pytest.raises(ValueError, match="different structure"):
        t2.fit(data2, progress=None, steps_per_call=1)
    assert t2.step == 2


def test_empty_dataset(setup):
    X, y, model, before = setup
    trainer = Trainer(model, optax.sgd(0.1), loss_fn, devices=one_device())
    with pytest.raises(ValueError, match="empty"):
        trainer.fit((X[:0], y[:0]), steps=3, batch_size=16, progress=None)
    with pytest.raises(ValueError, match="empty"):
        trainer.fit([], progress=None)
    with pytest.raises(ValueError, match="empty"):
        trainer.fit(iter(()), progress=None)
    with pytest.raises(ValueError, match="fewer than batch_size"):
        trainer.fit((X[:8], y[:8]), steps=3, batch_size=16, progress=None)
    assert trainer.step == 0 and unchanged(model, before)


def test_steps_and_epochs(setup):
    X, y, model, before = setup
    trainer = Trainer(model, optax.sgd(0.1), loss_fn, devices=one_device())
    with pytest.raises(ValueError, match="steps= or epochs=, not both"):
        trainer.fit((X, y), steps=3, epochs=1, batch_size=16, progress=None)
    with pytest.raises(ValueError, match="array data needs steps= or epochs="):
        trainer.fit((X, y), batch_size=16, progress=None)
    with pytest.raises(ValueError, match="epochs= needs array data"):
        trainer.fit(batches(X, y, 16, 3), epochs=1, progress=None)
    with pytest.raises(ValueError, match="positive int"):
        trainer.fit((X, y), steps=0, batch_size=16, progress=None)
    assert trainer.step == 0 and unchanged(model, before)


def test_checkpoint_path_that_is_a_file_or_not_writable(tmp_path, setup):
    X, y, model, before = setup
    f = tmp_path / "file"
    f.write_text("not a directory")
    with pytest.raises(NotADirectoryError, match="is a file"):
        Trainer(model, optax.sgd(0.1), loss_fn, checkpoint_dir=f)
    with pytest.raises(NotADirectoryError, match="is a file"):
        Trainer(model, optax.sgd(0.1), loss_fn, checkpoint_dir=f / "sub")
    # /proc refuses new directories even for root
    with pytest.raises(PermissionError, match="not writable"):
        Trainer(model, optax.sgd(0.1), loss_fn, checkpoint_dir="/proc/jaxmagic-no-such-dir/ck")
    assert f.read_text() == "not a directory" and unchanged(model, before)


def test_batch_size_not_divisible_by_data_parallel_devices(setup):
    X, y, model, before = setup
    assert len(jax.devices()) == 8  # tests run with 8 simulated devices: data parallel by default
    trainer = Trainer(model, optax.sgd(0.1), loss_fn)
    with pytest.raises(ValueError, match="batch size 12 is not divisible by the 8 data-parallel devices"):
        trainer.fit((X, y), steps=3, batch_size=12, progress=None)
    with pytest.raises(ValueError, match="batch size 12 is not divisible"):
        trainer.fit(batches(X, y, 12, 3), progress=None)
    assert trainer.step == 0 and unchanged(model, before)


def test_eval_data_with_a_different_structure(setup):
    X, y, model, before = setup
    trainer = Trainer(model, optax.sgd(0.1), loss_fn, devices=one_device())
    with pytest.raises(ValueError, match="eval_data has a different structure"):
        trainer.fit((X, y), steps=3, batch_size=16, eval_data={"x": X, "y": y}, progress=None)
    with pytest.raises(
        ValueError, match=r"(?s)eval_data does not match.*expected f32\[N,8\], got f32\[N,5\]"
    ):
        trainer.fit((X, y), steps=3, batch_size=16, eval_data=(X[:, :5], y), progress=None)
    assert trainer.step == 0 and unchanged(model, before)
