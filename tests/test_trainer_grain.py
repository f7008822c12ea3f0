"""Grain data in ``Trainer.fit``: MapDataset / IterDataset / DataLoader, and the iterator's position
saved in the model's Orbax checkpoint and restored in one step (no replay), bit-identically."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import warnings

import numpy as np
import optax
import pytest
from flax import nnx

from jaxmagic.train import Callback, Trainer
from tests.conftest import ROOT
from tests.grain_pipelines import BATCH, CountingSource, data_loader, iter_dataset, map_dataset
from tests.helpers import TinyMLP, batches, dataset, loss_fn, one_device, params_of
from tests.test_trainer_checkpoint import _committed_steps, _drain

grain = pytest.importorskip("grain")


class StopAt(Callback):
    """Request a stop once step ``at`` is done (honoured at the next call boundary)."""

    def __init__(self, at: int):
        self.at = at

    def on_steps(self, trainer, steps, logs):
        if steps[-1] >= self.at:
            trainer.request_stop()


def _trainer(ckpt=None, seed=0):
    return Trainer(
        TinyMLP(rngs=nnx.Rngs(seed)),
        optax.adam(1e-2),
        loss_fn,
        devices=one_device(),
        checkpoint_dir=ckpt,
        save_every=8,
        save_every_epoch=False,
        seed=3,
    )


def _same(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(params_of(a), params_of(b)))


def _stop_and_resume(tmp_path, make, stop_at, **fit):
    """Train to the end in one go; then stop at ``stop_at``, resume in a new Trainer, finish."""
    full = _trainer()
    full.fit(make(), progress=None, steps_per_call=4, **fit)
    part = _trainer(tmp_path)
    with pytest.raises(KeyboardInterrupt):  # a stop request at a call boundary: a checkpoint, then this
        part.fit(make(), progress=None, steps_per_call=4, callbacks=[InterruptAt(stop_at)], **fit)
    saved = part.step
    resumed = _trainer(tmp_path, seed=9)  # other initial parameters: all must come from the checkpoint
    assert resumed.step == saved
    return full, resumed, saved


class InterruptAt(Callback):
    """What Ctrl-C does: a stop request with reason "interrupted" (checkpoint saved, then re-raised)."""

    def __init__(self, at: int):
        self.at = at

    def on_steps(self, trainer, steps, logs):
        if steps[-1] >= self.at:
            trainer.request_stop("interrupted")


@pytest.mark.slow
def test_map_dataset_epoch_is_its_length_and_epochs_reshuffle():
    src = CountingSource()
    t = _trainer()
    h = t.fit(map_dataset(src), epochs=2, progress=None, steps_per_call=4)
    assert t.step == 2 * (200 // BATCH) == 24
    assert [e["epoch"] for e in h.epochs] == [1, 2]
    assert t.history.config["steps_per_epoch"] == 12
    # without steps= or epochs=: one pass
    t2 = _trainer()
    t2.fit(map_dataset(CountingSource()), progress=None, steps_per_call=4)
    assert t2.step == 12


def test_map_dataset_is_not_read_far_past_the_end_of_the_run():
    from jaxmagic.train.data_state import READ_AHEAD_BATCHES

    src = CountingSource()
    t = _trainer()
    t.fit(map_dataset(src), epochs=1, progress=None, steps_per_call=4)
    assert t.step == 12
    # Grain's threads may read a bounded buffer ahead; its default (500 elements, each a batch
    # here) read the endless repeat ~20 epochs ahead of a one-epoch run
    assert 12 * BATCH <= src.reads <= (12 + READ_AHEAD_BATCHES + 1) * BATCH, src.reads


@pytest.mark.parametrize("stop_at", [5, 14, 21])
@pytest.mark.slow
def test_map_dataset_interrupt_and_resume_is_bit_identical(tmp_path, stop_at):
    full, resumed, saved = _stop_and_resume(
        tmp_path, lambda: map_dataset(CountingSource()), stop_at, epochs=3
    )
    assert 0 < saved < 36
    step_dir = tmp_path / str(saved)
    state_files = sorted(p.name for p in (step_dir / "data").glob("process_*"))
    assert state_files == ["process_0-of-1.json"]  # Grain's handler wrote it, in the same checkpoint
    record = json.loads((step_dir / "data" / state_files[0]).read_text())
    # the position after the last *trained* batch, not where the prefetching thread had got to
    assert record["state"] == {"next_index": saved}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no replay warning
        resumed.fit(map_dataset(CountingSource()), epochs=3, progress=None, steps_per_call=4)
    assert resumed.step == 36 and _same(full.model, resumed.model)


@pytest.mark.slow
def test_resume_reads_no_batch_twice(tmp_path):
    target, stop_at = 40, 22
    full_src = CountingSource()
    full = _trainer()
    full.fit(iter_dataset(full_src), steps=target, progress=None, steps_per_call=4)
    assert full_src.reads == target * BATCH  # reads are exactly what the trainer asked for

    part = _trainer(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        part.fit(
            iter_dataset(CountingSource()),
            steps=target,
            progress=None,
            steps_per_call=4,
            callbacks=[InterruptAt(stop_at)],
        )
    saved = part.step
    src = CountingSource()
    resumed = _trainer(tmp_path, seed=9)
    resumed.fit(iter_dataset(src), steps=target, progress=None, steps_per_call=4)
    assert src.reads == (target - saved) * BATCH  # a replay would read saved * BATCH more
    assert resumed.step == target and _same(full.model, resumed.model)


@pytest.mark.slow
def test_data_loader_resume_is_bit_identical(tmp_path):
    full, resumed, saved = _stop_and_resume(tmp_path, lambda: data_loader(CountingSource()), 10, steps=30)
    src = CountingSource()
    resumed.fit(data_loader(src), steps=30, progress=None, steps_per_call=4)
    assert src.reads == (30 - saved) * BATCH
    assert resumed.step == 30 and _same(full.model, resumed.model)


class Stateful:
    """Any iterator with get_state/set_state (not Grain): batches from a list, position an int."""

    def __init__(self, data):
        self.data, self.i, self.reads = data, 0, 0

    def __iter__(self):
        return self

    def __next__(self):
        if self.i >= len(self.data):
            raise StopIteration
        self.i += 1
        self.reads += 1
        return self.data[self.i - 1]

    def get_state(self):
        return {"i": self.i}

    def set_state(self, state):
        self.i = state["i"]


@pytest.mark.slow
def test_any_iterator_with_get_state_is_restored_without_replay(tmp_path):
    X, y = dataset(320)
    data = batches(X, y, 16, 20)
    full, resumed, saved = _stop_and_resume(tmp_path, lambda: Stateful(data), 9)
    it = Stateful(data)
    resumed.fit(it, progress=None, steps_per_call=4)
    assert it.reads == 20 - saved
    assert resumed.step == 20 and _same(full.model, resumed.model)


def test_infinite_map_dataset_needs_steps_and_epochs_needs_a_length():
    t = _trainer()
    before = params_of(t.model)
    with pytest.raises(ValueError, match=r"repeats without end.*steps="):
        t.fit(map_dataset(CountingSource()).repeat(None), progress=None)
    with pytest.raises(ValueError, match=r"epochs= needs array data or a finite grain.MapDataset"):
        t.fit(iter_dataset(CountingSource()), epochs=2, progress=None)
    assert t.step == 0 and all(np.array_equal(a, b) for a, b in zip(before, params_of(t.model)))


def test_elements_that_change_shape_mid_epoch_are_refused():
    ds = grain.MapDataset.range(64).map(
        lambda i: (np.zeros((4, 8 if i < 40 else 9), np.float32), np.zeros(4, np.int32))
    )
    t = _trainer()
    with pytest.raises(ValueError, match=r"shapes must not change mid-run"):
        t.fit(ds, progress=None, steps_per_call=4)
    assert t.step == 40  # the steps before the bad batch are kept


@pytest.mark.slow
def test_checkpoint_without_position_replays_with_a_warning(tmp_path):
    src = CountingSource()
    ds = map_dataset(src)
    plain = [ds[i] for i in range(12)]  # the same batches, as a plain list: no position saved
    part = _trainer(tmp_path)
    part.fit(plain, steps=8, progress=None, steps_per_call=4)
    assert not (tmp_path / "8" / "data").exists()
    resumed = _trainer(tmp_path, seed=9)
    with pytest.warns(UserWarning, match=r"holds no position for this data iterator.*replaying 8 batches"):
        resumed.fit(map_dataset(CountingSource()), progress=None, steps_per_call=4)
    full = _trainer()
    full.fit(map_dataset(CountingSource()), progress=None, steps_per_call=4)
    assert resumed.step == 12 and _same(full.model, resumed.model)


@pytest.mark.slow
def test_position_saved_by_another_process_count_replays_with_a_warning(tmp_path):
    part = _trainer(tmp_path)
    part.fit(map_dataset(CountingSource()), steps=8, progress=None, steps_per_call=4)
    data = tmp_path / "8" / "data"
    (data / "process_0-of-1.json").rename(data / "process_0-of-2.json")  # as if two processes saved it
    resumed = _trainer(tmp_path, seed=9)
    with pytest.warns(UserWarning, match=r"holds no position for this data iterator.*replaying 8 batches"):
        resumed.fit(map_dataset(CountingSource()), progress=None, steps_per_call=4)
    full = _trainer()
    full.fit(map_dataset(CountingSource()), progress=None, steps_per_call=4)
    assert resumed.step == 12 and _same(full.model, resumed.model)


@pytest.mark.slow
def test_position_from_another_pipeline_is_refused(tmp_path):
    part = _trainer(tmp_path)
    part.fit(data_loader(CountingSource()), steps=8, progress=None, steps_per_call=4)
    resumed = _trainer(tmp_path, seed=9)
    before = params_of(resumed.model)
    with pytest.raises(ValueError, match=r"a different pipeline"):
        resumed.fit(map_dataset(CountingSource()), progress=None, steps_per_call=4)
    assert resumed.step == 8 and all(np.array_equal(a, b) for a, b in zip(before, params_of(resumed.model)))
    assert resumed.checkpoint_steps == [8]


@pytest.mark.slow
def test_position_that_the_pipeline_rejects_is_refused_clearly(tmp_path):
    part = _trainer(tmp_path)
    part.fit(data_loader(CountingSource(200)), steps=8, progress=None, steps_per_call=4)
    resumed = _trainer(tmp_path, seed=9)
    before = params_of(resumed.model)
    with pytest.raises(ValueError, match=r"does not fit this data pipeline .*set_state raised ValueError"):
        resumed.fit(data_loader(CountingSource(320)), progress=None, steps_per_call=4)
    assert resumed.step == 8 and all(np.array_equal(a, b) for a, b in zip(before, params_of(resumed.model)))


def test_get_state_that_raises_fails_clearly_and_keeps_the_checkpoint(tmp_path):
    X, y = dataset(320)
    data = batches(X, y, 16, 20)

    class Broken(Stateful):
        def get_state(self):
            if self.i > 8:
                raise OSError("state store unavailable")
            return super().get_state()

    t = _trainer(tmp_path)
    with pytest.raises(RuntimeError, match=r"get_state\(\) raised OSError: state store unavailable"):
        t.fit(Broken(data), progress=None, steps_per_call=4)
    assert t.step == 8 and t.checkpoint_steps == [8]
    assert json.loads((tmp_path / "8" / "data" / "process_0-of-1.json").read_text())["state"] == {"i": 8}


# -- SIGKILL mid-run, resume in a new process ------------------------------------------------


def _grain_worker(ckpt, out, **env):
    e = dict(
        os.environ,
        PYTHONPATH=str(ROOT),
        XLA_FLAGS="--xla_force_host_platform_device_count=1",
        PYTHONFAULTHANDLER="1",
        **env,
    )
    return subprocess.Popen(
        [sys.executable, "-m", "tests.grain_worker", str(ckpt), str(out)],
        cwd=ROOT,
        env=e,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.fixture(scope="module")
def grain_reference(tmp_path_factory):
    d = tmp_path_factory.mktemp("grain_ref")
    ref = _grain_worker(d / "ck", d / "ref.npz", WORKER_SLEEP="0")
    out = ref.communicate(timeout=300)[0]
    assert ref.returncode == 0, f"exit status {ref.returncode}: {out}"
    return np.load(d / "ref.npz")


@pytest.mark.slow  # two training processes per kill point (and one reference run)
@pytest.mark.parametrize("kill", range(3))
def test_sigkill_mid_run_then_resume_is_bit_identical(tmp_path, grain_reference, kill):
    # Kill once a checkpoint is committed, after a random delay (a step, an async save or a
    # retention delete may be under way). KILL_SEED=<seed> replays the same delay.
    seed = int(os.environ.get("KILL_SEED", random.SystemRandom().randrange(2**32)))
    delay = 0.8 * kill + random.Random(seed).uniform(0.0, 0.8)  # three kill points, early to late
    print(f"KILL_SEED={seed}: kill {delay:.3f} s after the first committed checkpoint")
    victim = _grain_worker(tmp_path / "ck", tmp_path / "unused.npz", WORKER_SLEEP="0.2")
    log = _drain(victim)
    deadline = time.monotonic() + 240
    while not _committed_steps(tmp_path / "ck") and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    committed = _committed_steps(tmp_path / "ck")
    assert committed and victim.poll() is None, f"no committed checkpoint while the victim ran: {log}"
    time.sleep(delay)
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=60)
    assert victim.returncode == -signal.SIGKILL, f"exit status {victim.returncode}: {log}"

    resumed = _grain_worker(tmp_path / "ck", tmp_path / "resumed.npz", WORKER_SLEEP="0")
    out = resumed.communicate(timeout=300)[0]
    assert resumed.returncode == 0, f"exit status {resumed.returncode}: {out}"
    start = int(out.split("start ")[1].split()[0])
    print(f"committed {committed} before the kill; resumed at step {start}")
    assert 8 <= start < 96, (committed, out)  # it really resumed mid-run
    assert "replaying" not in out  # restored from the saved position, not replayed
    a, b = grain_reference, np.load(tmp_path / "resumed.npz")
    assert sorted(a.files) == sorted(b.files)
    for k in a.files:
        assert np.array_equal(a[k], b[k]), f"{k} differs after resume (KILL_SEED={seed})"


# -- two processes, one shard each ------------------------------------------------------------


def _grain_pair(ckpt, out, steps):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.grain_dist_worker",
                str(i),
                str(port),
                str(ckpt),
                str(out),
                str(steps),
            ],
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


def _reads(out: str) -> int:
    return int(out.rsplit("reads ", 1)[1].split()[0])


@pytest.mark.slow  # two jax.distributed processes, three times
def test_two_processes_save_and_restore_their_own_positions(tmp_path):
    ref = _grain_pair(tmp_path / "ref", tmp_path / "ref.npz", 16)
    assert all(_reads(o) == 16 * 8 for o in ref)  # each process read only its shard's batches
    _grain_pair(tmp_path / "ck", tmp_path / "first.npz", 8)
    data_dir = tmp_path / "ck" / "8" / "data"
    files = sorted(p.name for p in data_dir.glob("process_*"))
    assert files == ["process_0-of-2.json", "process_1-of-2.json"]  # one position per process
    assert files and len({(data_dir / f).read_text() for f in files}) == 2  # different shards, positions
    outs = _grain_pair(tmp_path / "ck", tmp_path / "final.npz", 16)
    assert all("start 8" in o and "done at 16" in o for o in outs), outs
    assert all(_reads(o) == 8 * 8 for o in outs)  # no replay of the first 8 batches
    a, b = np.load(tmp_path / "ref.npz"), np.load(tmp_path / "final.npz")
    for k in a.files:
        assert np.array_equal(a[k], b[k]), k
