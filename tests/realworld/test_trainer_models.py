"""jaxmagic's Trainer over the tutorial-style models, a loader with a short last batch and a
user's own Orbax directory; and the Trainer profiled by %%jaxprofile.

Asserts: no error, the steps that were asked for, the user's data untouched (no donated or
deleted arrays), the model usable afterwards, and XLA compiles equal to the test's own count.
"""

from __future__ import annotations

import numpy as np
import optax
import pytest
from flax import nnx

from jaxmagic.train import Trainer
from tests.fingerprint import CompileCounter, fingerprint, values
from tests.realworld import models as M
from tests.realworld.shell import run, setup

pytestmark = [pytest.mark.realworld, pytest.mark.slow]  # whole models under every magic: ~1 min


def one_device():
    import jax

    return jax.devices()[:1]


def _unet_loss(model, batch):
    x0, t, noise = batch
    return M.diffusion_loss(model, x0, t, noise)


def _linen_bridge():
    X, _ = M.classification_data(4)
    model = nnx.bridge.ToNNX(M.LinenMLP(), rngs=nnx.Rngs(0))
    nnx.bridge.lazy_init(model, X[:1])
    return model


def _linen_loss(model, batch):
    logits = model(batch[0])
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch[1]).mean(), logits


def _cases():
    rng = np.random.default_rng(0)
    images = rng.normal(size=(32, 8, 8, 1)).astype(np.float32)
    labels = rng.integers(0, 10, 32).astype(np.int32)
    unet_batches = [
        (
            M.images(8, seed=i)[..., None],
            rng.integers(0, M.NOISE_STEPS, 8).astype(np.int32),
            rng.normal(size=(8, 8, 8, 1)).astype(np.float32),
        )
        for i in range(4)
    ]
    X, y = M.classification_data(64)
    return {
        # model factory, loss_fn, data, fit kwargs, steps expected
        "gpt": (lambda: M.MiniGPT(rngs=nnx.Rngs(0)), M.gpt_loss_fn, M.token_batches(4), {}, 4),
        "vae": (
            lambda: M.VAE(rngs=nnx.Rngs(0, noise=1)),
            M.vae_loss,
            M.images(64),
            {"steps": 4, "batch_size": 16},
            4,
        ),
        "cnn": (
            lambda: M.CNN(rngs=nnx.Rngs(0)),
            M.cnn_loss_fn,
            {"image": images, "label": labels},
            {"steps": 4, "batch_size": 8},
            4,
        ),
        "unet": (lambda: M.TinyUNet(rngs=nnx.Rngs(0)), _unet_loss, unet_batches, {}, 4),
        "linen": (_linen_bridge, _linen_loss, (X, y), {"steps": 4, "batch_size": 16}, 4),
    }


@pytest.mark.parametrize("name", ["gpt", "vae", "cnn", "unet", "linen"])
def test_trainer_fits_each_model(name):
    make, loss_fn, data, kwargs, steps = _cases()[name]
    model = make()
    start = values(nnx.state(model, nnx.Param))
    data_before = fingerprint(data)
    counter = CompileCounter()
    trainer = Trainer(model, optax.adam(1e-3), loss_fn, devices=one_device())
    with counter.listening():
        history = trainer.fit(data, progress=None, **kwargs)
    assert history.status == "completed" and trainer.step == steps
    assert values(nnx.state(model, nnx.Param)) != start  # trained in place
    assert fingerprint(data) == data_before  # the user's batches are neither donated nor changed
    assert len(history.compiles) == counter.total, (history.compiles, dict(counter.by_name))
    if name == "gpt":  # the tutorial's jitted generate method still works on the trained model
        assert len(model.generate_text(2, [1, 2])) == 4


@pytest.mark.parametrize("as_generator", [False, True])
def test_loader_with_short_last_batch_trains_the_full_batches(as_generator):
    X, y = M.classification_data(70)  # 4 batches of 16 and one of 6
    loader = M.NumpyLoader(X, y, batch_size=16)
    data = iter(loader) if as_generator else loader
    model = M.MLP(rngs=nnx.Rngs(0))
    start = values(nnx.state(model, nnx.Param))
    trainer = Trainer(model, optax.adam(1e-2), M.mlp_loss_fn, devices=one_device())
    history = trainer.fit(data, progress=None)
    assert history.status == "completed"
    assert trainer.step in (4, 5)  # the short batch dropped with a note, or padded and masked
    assert values(nnx.state(model, nnx.Param)) != start


def test_users_own_orbax_directory_is_refused_clearly_and_untouched(tmp_path):
    directory = M.save_with_manager(M.MLP(rngs=nnx.Rngs(1)), tmp_path / "mine", steps=(1, 2))
    files = sorted((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in directory.rglob("*"))
    model = M.MLP(rngs=nnx.Rngs(0))
    before = fingerprint(model)
    with pytest.raises(Exception) as info:
        Trainer(model, optax.adam(1e-2), M.mlp_loss_fn, devices=one_device(), checkpoint_dir=str(directory))
    assert not isinstance(info.value, KeyError), repr(info.value)
    assert str(directory) in str(info.value)
    assert fingerprint(model) == before
    assert sorted((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in directory.rglob("*")) == files


def test_trainer_checkpoints_do_not_grow_with_steps(ip, tmp_path):
    X, y = M.classification_data(64)
    model = M.MLP(rngs=nnx.Rngs(0))
    trainer = Trainer(
        model,
        optax.adam(1e-2),
        M.mlp_loss_fn,
        devices=one_device(),
        checkpoint_dir=str(tmp_path / "run"),
        save_every_epoch=False,
        save_every=100,
        keep=10,
    )
    trainer.fit((X, y), steps=4, batch_size=16, progress=None, steps_per_call=4)
    trainer.fit((X, y), steps=200, batch_size=16, progress=None, steps_per_call=4)
    ip.user_ns["run_dir"] = str(tmp_path / "run")
    first = run(ip, "a = %jaxtree -o -q run_dir --step 4")
    last = run(ip, "b = %jaxtree -o -q run_dir --step 200")
    assert first.error is None and last.error is None, (first.error, last.error)
    assert ip.user_ns["a"].total_leaves == ip.user_ns["b"].total_leaves
    assert ip.user_ns["a"].totals.bytes == ip.user_ns["b"].totals.bytes


PROFILED_FIT = """
X, y = classification_data(96)
Xv, yv = classification_data(40, seed=1)
mlp = MLP(rngs=nnx.Rngs(0))
trainer = Trainer(mlp, optax.adam(1e-2), mlp_loss_fn, devices=jax.devices()[:1])
"""


def test_profiled_fit_is_clean_and_readable(ip):
    setup(ip)
    ip.run_cell("from jaxmagic.train import Trainer\n" + PROFILED_FIT)
    cell = run(
        ip,
        "%%jaxprofile -o -q\n"
        "history = trainer.fit((X, y), epochs=3, batch_size=16, eval_data=(Xv, yv), progress=None)",
    )
    assert cell.error is None
    report = cell.result.result
    assert [i.kind for i in report.insights if i.severity == "warn"] == [], [
        i.message for i in report.insights
    ]
    assert not {f.name for f in report.functions} & {"call", "f", "eval_batch"}, [
        f.name for f in report.functions
    ]


def test_profiled_fit_compile_count_matches_xla(ip):
    setup(ip)
    ip.run_cell("from jaxmagic.train import Trainer\n" + PROFILED_FIT)
    cell = run(ip, "%%jaxprofile -o -q\nhistory = trainer.fit((X, y), steps=6, batch_size=16, progress=None)")
    assert cell.error is None
    report = cell.result.result
    assert report.n_compiles == cell.compiles.total, (
        {f.name: len(f.compiles) for f in report.functions},
        dict(cell.compiles.by_name),
    )
