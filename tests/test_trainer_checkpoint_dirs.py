"""Checkpoint directories as users have them: checkpoints that do not grow with the step count
(history in a log beside them, equal after a resume), directories of someone else's Orbax
checkpoints or numbered data folders refused untouched, checkpoints from before the log."""

from __future__ import annotations

import hashlib
import json

import jax
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from flax import nnx

from jaxmagic.train import CheckpointMismatchError, Trainer
from jaxmagic.train.checkpoint import Checkpointer
from jaxmagic.train.history_log import LOG_NAME
from tests.helpers import TinyMLP, dataset, loss_fn, one_device, params_of


def _bytes_under(path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


@pytest.mark.slow
def test_checkpoint_size_does_not_grow_with_the_step_count(tmp_path):
    X, y = dataset(64)
    t = Trainer(
        TinyMLP(rngs=nnx.Rngs(0)),
        optax.adam(1e-3),
        loss_fn,
        devices=one_device(),
        checkpoint_dir=tmp_path,
        save_every=100,
        save_every_epoch=False,
        keep=20,
    )
    t.fit((X, y), steps=1000, batch_size=16, progress=None, steps_per_call=100)
    assert t.checkpoint_steps == list(range(100, 1001, 100))
    meta_100, meta_1000 = _bytes_under(tmp_path / "100" / "meta"), _bytes_under(tmp_path / "1000" / "meta")
    step_100, step_1000 = _bytes_under(tmp_path / "100"), _bytes_under(tmp_path / "1000")
    assert meta_1000 <= meta_100 + 64, (meta_100, meta_1000)  # a few more digits, not 10x the history
    assert step_1000 < 1.5 * step_100, (step_100, step_1000)  # Orbax's own files vary a little
    # the history is in the log, appended at each save, and comes back whole
    lines = (tmp_path / LOG_NAME).read_text().splitlines()
    assert (
        len(lines) == 11 and sum(len(json.loads(line)["steps"]) for line in lines) == 1000
    )  # 10 saves, the end
    again = Trainer(
        TinyMLP(rngs=nnx.Rngs(1)), optax.adam(1e-3), loss_fn, devices=one_device(), checkpoint_dir=tmp_path
    )
    assert again.step == 1000 and np.array_equal(again.history.steps, np.arange(1, 1001))
    np.testing.assert_array_equal(again.history.metric("loss"), t.history.metric("loss"))


def _history_facts(h):
    return (
        h.steps.tolist(),
        {k: v.tolist() for k, v in h.metrics.items()},
        h.evals,
        h.epochs,
        [c["step"] for c in h.checkpoints],
    )


def _trainer(path, seed=0):
    return Trainer(
        TinyMLP(rngs=nnx.Rngs(seed), dropout=0.2, batchnorm=True),
        optax.adam(1e-2),
        loss_fn,
        metrics={"accuracy": nnx.metrics.Accuracy()},
        devices=one_device(),
        checkpoint_dir=path,
        keep=10,
    )


@pytest.mark.slow
def test_history_after_a_resume_equals_an_uninterrupted_runs(tmp_path):
    X, y = dataset(96)
    ev = (X[:32], y[:32])
    full = _trainer(tmp_path / "full")
    full.fit((X, y), epochs=6, batch_size=16, eval_data=ev, progress=None)

    part = _trainer(tmp_path / "part")
    part.fit((X, y), epochs=4, batch_size=16, eval_data=ev, progress=None)
    # as if the process died before the save of step 24 committed: the log runs ahead of the checkpoints
    import shutil

    shutil.rmtree(tmp_path / "part" / "24")
    resumed = _trainer(tmp_path / "part", seed=7)
    assert resumed.step == 18 and resumed.history.status == "resumed"
    resumed.fit((X, y), epochs=6, batch_size=16, eval_data=ev, progress=None)
    assert _history_facts(resumed.history) == _history_facts(full.history)
    assert all(np.array_equal(a, b) for a, b in zip(params_of(full.model), params_of(resumed.model)))
    # the log was cut at the restored step, not appended twice: reading it gives the same history
    reread = _trainer(tmp_path / "part", seed=3)
    assert _history_facts(reread.history) == _history_facts(full.history)
    assert [r.status for r in reread.history.runs] == ["completed", "resumed", "completed", "resumed"]


@pytest.mark.slow
def test_a_log_whose_checkpoints_were_deleted_does_not_leak_into_a_new_run(tmp_path):
    import shutil

    X, y = dataset(64)
    Trainer(
        TinyMLP(rngs=nnx.Rngs(0)), optax.adam(1e-3), loss_fn, devices=one_device(), checkpoint_dir=tmp_path
    ).fit((X, y), steps=4, batch_size=16, progress=None)
    for step_dir in tmp_path.iterdir():
        if step_dir.is_dir():
            shutil.rmtree(step_dir)  # the user deleted the checkpoints, the log stayed
    t = Trainer(
        TinyMLP(rngs=nnx.Rngs(0)), optax.adam(1e-3), loss_fn, devices=one_device(), checkpoint_dir=tmp_path
    )
    assert t.step == 0
    t.fit((X, y), steps=6, batch_size=16, progress=None)
    again = Trainer(
        TinyMLP(rngs=nnx.Rngs(0)), optax.adam(1e-3), loss_fn, devices=one_device(), checkpoint_dir=tmp_path
    )
    assert again.history.steps.tolist() == [1, 2, 3, 4, 5, 6]
    np.testing.assert_array_equal(again.history.metric("loss"), t.history.metric("loss"))


@pytest.mark.slow
def test_checkpoint_written_before_the_history_log_still_resumes_its_history(tmp_path):
    X, y = dataset(64)
    t = Trainer(TinyMLP(rngs=nnx.Rngs(0)), optax.adam(1e-3), loss_fn, devices=one_device())
    h = t.fit((X, y), steps=8, batch_size=16, progress=None)
    # the earlier format: the whole history in the checkpoint's JSON metadata, no log
    ckpt = Checkpointer(tmp_path)
    ckpt.save(8, t._state, {"step": 8, "seed": 0, "batch_size": 16, "data": "arrays", "history": h.to_dict()})
    ckpt.wait()
    ckpt.close()
    resumed = Trainer(
        TinyMLP(rngs=nnx.Rngs(1)), optax.adam(1e-3), loss_fn, devices=one_device(), checkpoint_dir=tmp_path
    )
    assert resumed.step == 8 and resumed.history.steps.tolist() == list(range(1, 9))
    np.testing.assert_array_equal(resumed.history.metric("loss"), h.metric("loss"))
    assert (tmp_path / LOG_NAME).exists()  # from now on the history is in the log


def _fingerprint(root):
    """Every path under ``root`` with its bytes' hash and modification time."""
    return sorted(
        (
            str(p.relative_to(root)),
            p.is_dir(),
            p.stat().st_mtime_ns,
            hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "",
        )
        for p in root.rglob("*")
    )


def test_a_users_own_orbax_checkpoints_are_refused_and_untouched(tmp_path):
    user_model = TinyMLP(rngs=nnx.Rngs(0))
    mngr = ocp.CheckpointManager(tmp_path, options=ocp.CheckpointManagerOptions(max_to_keep=3))
    for step in (1, 2):
        mngr.save(step, args=ocp.args.StandardSave(nnx.state(user_model)))
    mngr.wait_until_finished()
    mngr.close()
    (tmp_path / "3.orbax-checkpoint-tmp-99").mkdir()  # a save of theirs in flight: not ours to clean
    (tmp_path / "3.orbax-checkpoint-tmp-99" / "part").write_text("half")
    before, params_before = _fingerprint(tmp_path), params_of(user_model)
    model = TinyMLP(rngs=nnx.Rngs(1))
    with pytest.raises(CheckpointMismatchError) as err:
        Trainer(model, optax.adam(1e-3), loss_fn, devices=one_device(), checkpoint_dir=tmp_path)
    msg = str(err.value)
    assert "holds numbered folders the Trainer did not write: 1/ (default), 2/ (default)" in msg
    assert "'state' and 'meta'" in msg and "Nothing was read, cleaned or written" in msg
    assert _fingerprint(tmp_path) == before
    assert all(np.array_equal(a, b) for a, b in zip(params_of(user_model), params_before))


def test_numbered_folders_of_other_data_are_refused_and_untouched(tmp_path):
    for i in range(3):
        (tmp_path / str(i)).mkdir()
        (tmp_path / str(i) / "image.png").write_bytes(bytes([i]) * 10)
    (tmp_path / "notes.txt").write_text("mine")
    before = _fingerprint(tmp_path)
    with pytest.raises(CheckpointMismatchError, match=r"0/ \(no sub-folders\), 1/ \(no sub-folders\)"):
        Trainer(
            TinyMLP(rngs=nnx.Rngs(0)),
            optax.adam(1e-3),
            loss_fn,
            devices=one_device(),
            checkpoint_dir=tmp_path,
        )
    assert _fingerprint(tmp_path) == before


def test_orbax_names_come_from_its_public_api():
    # the names in mismatch messages: ocp.tree.get_param_names, as Orbax names checkpoint leaves
    from jaxmagic.train.checkpoint import _names_shapes

    state = {
        "params": nnx.state(TinyMLP(rngs=nnx.Rngs(0), dropout=0.1), nnx.Param),
        "opt": (optax.EmptyState(),),
        "key": jax.random.key(0),
    }
    names = _names_shapes(state)
    assert names["params.l1.kernel.value"] == ((8, 16), "float32")
    assert names["key"] == ((2,), "uint32")  # typed keys are stored as their data
    assert set(names) == {
        "params.l1.kernel.value",
        "params.l1.bias.value",
        "params.l2.kernel.value",
        "params.l2.bias.value",
        "key",
    }
