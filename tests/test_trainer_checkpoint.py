"""Orbax checkpoints: bit-identical resume after SIGKILL, refusal of a different model, cleanup
of crashed saves, retention, resuming an iterable at its data position."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import optax
import pytest
from flax import nnx

from jaxmagic.train import CheckpointMismatchError, Trainer
from tests.conftest import ROOT
from tests.helpers import TinyMLP, batches, dataset, loss_fn, one_device, params_of

STEPS = 96


def _worker(ckpt, out, **env):
    e = dict(os.environ, PYTHONPATH=str(ROOT), XLA_FLAGS="--xla_force_host_platform_device_count=1", **env)
    return subprocess.Popen([sys.executable, "-m", "tests.train_worker", str(ckpt), str(out), str(STEPS)],
                            cwd=ROOT, env=e, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow  # three training processes
def test_resume_after_sigkill_is_bit_identical(tmp_path):
    ref = _worker(tmp_path / "ref", tmp_path / "ref.npz", WORKER_SLEEP="0")
    assert ref.wait(timeout=300) == 0, ref.stdout.read()

    victim = _worker(tmp_path / "ck", tmp_path / "unused.npz", WORKER_SLEEP="0.06")
    # wait for the first progress line after a checkpoint could exist, then kill at a random moment
    seen = 0
    for line in victim.stdout:
        if line.startswith("at "):
            seen = int(line.split()[1])
            if seen >= 8:
                break
    time.sleep(random.uniform(0.0, 0.6))
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=60)
    assert not (tmp_path / "unused.npz").exists(), "the victim finished before it was killed"

    resumed = _worker(tmp_path / "ck", tmp_path / "resumed.npz", WORKER_SLEEP="0")
    out = resumed.communicate(timeout=300)[0]
    assert resumed.returncode == 0, out
    start = int(out.split("start ")[1].split()[0])
    assert 8 <= start < STEPS, out  # it really resumed mid-run
    a, b = np.load(tmp_path / "ref.npz"), np.load(tmp_path / "resumed.npz")
    assert sorted(a.files) == sorted(b.files) and any("rest" in k and "key" in k for k in a.files)
    for k in a.files:
        assert np.array_equal(a[k], b[k]), f"{k} differs after resume"
    leftovers = [p.name for p in (tmp_path / "ck").iterdir() if "tmp" in p.name]
    assert leftovers == []


def test_directory_of_a_different_model_is_refused_and_untouched(tmp_path):
    X, y = dataset(64)
    t = Trainer(TinyMLP(width=8, rngs=nnx.Rngs(0)), optax.adam(1e-3), loss_fn, devices=one_device(),
                checkpoint_dir=tmp_path)
    t.fit((X, y), steps=4, batch_size=16, progress=None)
    before = sorted((p.relative_to(tmp_path), p.stat().st_mtime_ns) for p in tmp_path.rglob("*"))
    with pytest.raises(CheckpointMismatchError) as err:
        Trainer(TinyMLP(width=16, rngs=nnx.Rngs(0)), optax.adam(1e-3), loss_fn, devices=one_device(),
                checkpoint_dir=tmp_path)
    msg = str(err.value)
    assert "params.l1.kernel.value: checkpoint f32[8,8], model f32[8,16]" in msg
    assert "opt.0.mu.l1.kernel.value" in msg and "Nothing was restored or overwritten" in msg
    after = sorted((p.relative_to(tmp_path), p.stat().st_mtime_ns) for p in tmp_path.rglob("*"))
    assert before == after


def test_leftover_temporary_saves_are_removed_and_retention(tmp_path):
    X, y = dataset(96)
    model = TinyMLP(rngs=nnx.Rngs(0))
    t = Trainer(model, optax.adam(1e-2), loss_fn, devices=one_device(), checkpoint_dir=tmp_path, keep=2,
                keep_best="eval_loss", best_mode="min", save_every_epoch=True)
    # eval data the model cannot fit: eval_loss is best early, so the best checkpoint is an old one
    rng = np.random.default_rng(1)
    Xe, ye = rng.normal(size=(32, 8)).astype(np.float32), rng.integers(0, 3, 32).astype(np.int32)
    h = t.fit((X, y), epochs=6, batch_size=16, eval_data=(Xe, ye), progress=None)
    evals = {e["step"]: e["eval_loss"] for e in h.evals}
    best = min(evals, key=evals.get)
    steps = t.checkpoint_steps
    assert steps[-2:] == [30, 36] and best in steps and len(steps) == (2 if best >= 30 else 3)
    (tmp_path / "42.orbax-checkpoint-tmp-1234").mkdir()
    (tmp_path / "42.orbax-checkpoint-tmp-1234" / "junk").write_text("half-written")
    t2 = Trainer(TinyMLP(rngs=nnx.Rngs(5)), optax.adam(1e-2), loss_fn, devices=one_device(), checkpoint_dir=tmp_path)
    assert not (tmp_path / "42.orbax-checkpoint-tmp-1234").exists()
    assert t2.step == 36 and all(np.array_equal(a, b) for a, b in zip(params_of(model), params_of(t2.model)))
    assert len(t2.history.evals) == 6 and t2.history.last_step == 36  # metric history came back too


def test_iterable_resumes_at_its_data_position(tmp_path):
    X, y = dataset(160)
    data = batches(X, y, 16, 10)
    full = TinyMLP(rngs=nnx.Rngs(0))
    Trainer(full, optax.adam(1e-2), loss_fn, devices=one_device()).fit(data, progress=None, steps_per_call=2)
    part = TinyMLP(rngs=nnx.Rngs(0))
    Trainer(part, optax.adam(1e-2), loss_fn, devices=one_device(), checkpoint_dir=tmp_path).fit(
        data, steps=6, progress=None, steps_per_call=2)
    again = TinyMLP(rngs=nnx.Rngs(9))
    t = Trainer(again, optax.adam(1e-2), loss_fn, devices=one_device(), checkpoint_dir=tmp_path)
    assert t.step == 6
    t.fit(data, progress=None, steps_per_call=2)  # skips the 6 batches already used
    assert t.step == 10
    assert all(np.array_equal(a, b) for a, b in zip(params_of(full), params_of(again)))
