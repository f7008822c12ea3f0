"""Data parallel and sharded training on 8 simulated devices, and two processes training one model."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import jax
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from jaxmagic.train import Trainer
from tests.conftest import ROOT
from tests.helpers import TinyMLP, dataset, loss_fn, one_device, params_of


@pytest.mark.slow
def test_default_mesh_is_data_parallel_and_matches_one_device():
    X, y = dataset(128)
    single, multi = TinyMLP(rngs=nnx.Rngs(0)), TinyMLP(rngs=nnx.Rngs(0))
    Trainer(single, optax.adam(1e-2), loss_fn, devices=one_device()).fit(
        (X, y), steps=12, batch_size=32, progress=None
    )
    t = Trainer(multi, optax.adam(1e-2), loss_fn)
    h = t.fit((X, y), steps=12, batch_size=32, progress=None)
    assert h.config["devices"] == 8 and h.config["mesh"] == {"data": 8}
    for a, b in zip(params_of(single), params_of(multi)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


class Annotated(nnx.Module):
    """Tensor parallel over "model", rows of the first kernel FSDP-style over "data"."""

    def __init__(self, rngs):
        init = nnx.initializers.lecun_normal()
        self.l1 = nnx.Linear(8, 16, kernel_init=nnx.with_partitioning(init, ("data", "model")), rngs=rngs)
        self.l2 = nnx.Linear(16, 3, kernel_init=nnx.with_partitioning(init, ("model", None)), rngs=rngs)

    def __call__(self, x):
        return self.l2(nnx.relu(self.l1(x)))


@pytest.mark.slow
def test_partitioning_annotations_shard_parameters_and_results_match():
    X, y = dataset(128)
    mesh = Mesh(np.array(jax.devices()).reshape(4, 2), ("data", "model"))
    with jax.set_mesh(mesh):  # annotated variables are created (initialised) sharded, under the mesh
        sharded, single = Annotated(nnx.Rngs(0)), Annotated(nnx.Rngs(0))
    t = Trainer(sharded, optax.adam(1e-2), loss_fn, mesh=mesh)
    t.fit((X, y), steps=8, batch_size=16, progress=None)
    Trainer(single, optax.adam(1e-2), loss_fn, devices=one_device()).fit(
        (X, y), steps=8, batch_size=16, progress=None
    )
    k1 = sharded.l1.kernel.get_value()
    assert k1.sharding.spec == P("data", "model") and len(k1.addressable_shards) == 8
    assert k1.addressable_shards[0].data.shape == (2, 8)
    mu = t._state["opt"][0].mu["l1"]["kernel"].get_value()
    assert mu.sharding.spec == P("data", "model")  # optimizer state sharded like its parameter
    for a, b in zip(params_of(sharded), params_of(single)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_pair(ckpt, out, steps):
    port = _port()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.dist_worker", str(i), str(port), str(ckpt), str(out), str(steps)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    outs = []
    for p in procs:
        try:
            outs.append(p.communicate(timeout=240)[0])
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
    assert all(p.returncode == 0 for p in procs), "\n----\n".join(outs)
    return outs


@pytest.mark.slow  # two jax.distributed processes, run twice
def test_two_processes_train_checkpoint_and_resume_together(tmp_path):
    outs = _run_pair(tmp_path / "ck", tmp_path / "first.npz", 8)
    assert "devices 2, start 0" in outs[0] and "done at 8" in outs[1]
    steps = sorted(int(p.name) for p in (tmp_path / "ck").iterdir() if p.name.isdigit())
    assert steps[-1] == 8  # one checkpoint written through Orbax by both processes
    outs = _run_pair(tmp_path / "ck", tmp_path / "final.npz", 16)
    assert "start 8" in outs[0] and "start 8" in outs[1] and "done at 16" in outs[0]
    # same run in one process on 2 devices
    X, y = dataset(128)
    ref = TinyMLP(rngs=nnx.Rngs(0))
    Trainer(ref, optax.adam(1e-2), loss_fn, devices=jax.devices()[:2]).fit(
        (X, y), steps=16, batch_size=16, steps_per_call=4, progress=None
    )
    got = np.load(tmp_path / "final.npz")
    for i, a in enumerate(params_of(ref)):
        np.testing.assert_allclose(got[f"arr_{i}"], a, rtol=1e-5, atol=1e-6)
    # evaluate / predict across the two processes: arrays each holds whole, and batches each
    # holds half of (put together row by row, they are the same 128 examples in order)
    ref_trainer = Trainer(ref, optax.adam(1e-2), loss_fn, devices=jax.devices()[:1])
    want_loss = ref_trainer.evaluate((X, y), batch_size=32)["eval_loss"]
    want_out = ref_trainer.predict(X)
    for key in ("eval_arrays", "eval_local"):
        np.testing.assert_allclose(got[key], want_loss, rtol=1e-5, err_msg=key)
    for key in ("predict_arrays", "predict_local"):
        assert got[key].shape == want_out.shape, key
        np.testing.assert_allclose(got[key], want_out, rtol=1e-5, atol=1e-6, err_msg=key)
