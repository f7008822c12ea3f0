"""Feeding batches to the device: arrays shuffled per epoch, or any iterable of batches.

Arrays (``(X, y)``, a dict of arrays, or one array) are cut into ``batch_size`` batches in
an order that depends only on ``(seed, epoch)``, so the data position of a step is a pure
function of the step number: resuming at step ``s`` continues exactly where an
uninterrupted run would be. The final partial batch of an epoch is **dropped** (its size is
reported), so every training step has the same shape and compiles once.

Small array datasets live on the device once and each call gathers its rows there (only
integer indices cross the host-device boundary); large ones are gathered on the host.
Iterables are consumed in order, one optimizer step per batch (Grain datasets and loaders
included; a finite ``grain.MapDataset``'s length is an epoch). A batch with fewer rows than
the first one but otherwise the same structure (the short last batch of a loader without
``drop_last``) is **dropped** and counted, like ``drop_last=True``: every step keeps one
shape, so nothing recompiles and no step already taken is lost. A background thread
prepares the next calls' inputs while the device computes.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
from collections.abc import Iterable, Iterator
from typing import Any

import jax
import numpy as np

from jaxmagic._format import shape_str
from jaxmagic.train import data_state
from jaxmagic.train import distributed as dist

ON_DEVICE_LIMIT = 512 * 2**20  # bytes of array data kept on device for on-device gathering


@dataclasses.dataclass(frozen=True)
class BatchSpec:
    """Structure of one batch: tree structure, per-leaf trailing shape and dtype, batch size."""

    treedef: Any
    paths: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]  # without the leading batch dimension
    dtypes: tuple[Any, ...]
    batch_size: int

    def describe(self) -> str:
        return ", ".join(
            f"{p or 'batch'}: {shape_str((self.batch_size, *s), d)}"
            for p, s, d in zip(self.paths, self.shapes, self.dtypes)
        )


def _path_str(path: tuple) -> str:
    return jax.tree_util.keystr(path) if path else ""


def is_array_data(data: Any) -> bool:
    """``True`` for arrays to be batched (an array, a tuple of arrays, a dict of arrays).

    A *list* is always an iterable of batches; a tuple or dict must hold only arrays.
    """

    def arr(x: Any) -> bool:
        return isinstance(x, (np.ndarray, jax.Array)) and np.ndim(x) >= 1

    if arr(data):
        return True
    if isinstance(data, (tuple, dict)) and not isinstance(data, str) and len(data):
        leaves = jax.tree.leaves(data)
        return bool(leaves) and all(arr(x) for x in leaves)
    return False


def spec_of(batch: Any, *, what: str = "batch") -> BatchSpec:
    """The :class:`BatchSpec` of one batch; raises ``ValueError`` for batches without arrays."""
    flat, treedef = jax.tree_util.tree_flatten_with_path(batch)
    if not flat:
        raise ValueError(f"{what} holds no arrays: {type(batch).__name__}")
    paths, shapes, dtypes, sizes = [], [], [], set()
    for path, leaf in flat:
        if not hasattr(leaf, "shape") or not hasattr(leaf, "dtype"):
            leaf = np.asarray(leaf)
        if len(leaf.shape) == 0:
            raise ValueError(
                f"{what} leaf {_path_str(path) or 'batch'} is a scalar; every leaf needs a "
                "leading batch dimension"
            )
        paths.append(_path_str(path))
        shapes.append(tuple(int(d) for d in leaf.shape[1:]))
        dtypes.append(np.dtype(leaf.dtype))
        sizes.add(int(leaf.shape[0]))
    if len(sizes) != 1:
        detail = ", ".join(f"{p or 'batch'}: {n}" for p, n in zip(paths, [s for s in sizes]))
        raise ValueError(f"{what} leaves have different leading (batch) sizes: {sorted(sizes)} ({detail})")
    return BatchSpec(treedef, tuple(paths), tuple(shapes), tuple(dtypes), sizes.pop())


def check_same(expected: BatchSpec, got: BatchSpec, *, what: str, batch_too: bool = True) -> None:
    """Raise ``ValueError`` naming every difference between two batch structures."""
    if got.treedef != expected.treedef:
        raise ValueError(
            f"{what} has a different structure than the training batches:\n"
            f"  expected {expected.treedef}\n  got      {got.treedef}"
        )
    diffs = []
    for p, s1, d1, s2, d2 in zip(expected.paths, expected.shapes, expected.dtypes, got.shapes, got.dtypes):
        if s1 != s2 or d1 != d2:
            b1 = expected.batch_size if batch_too else "N"
            b2 = got.batch_size if batch_too else "N"
            diffs.append(
                f"  {p or 'batch'}: expected {shape_str((0, *s1), d1).replace('[0', f'[{b1}')}, "
                f"got {shape_str((0, *s2), d2).replace('[0', f'[{b2}')}"
            )
    if batch_too and got.batch_size != expected.batch_size and not diffs:
        diffs.append(f"  batch size: expected {expected.batch_size}, got {got.batch_size}")
    if diffs:
        raise ValueError(f"{what} does not match the training batches:\n" + "\n".join(diffs))


def host_batches(data: Any, batch_size: int | None, what: str) -> tuple[list[Any], bool]:
    """``(batches, local)``: evaluation/prediction data as host batches in order (arrays cut
    into ``batch_size`` rows, the last batch short; an iterable taken as it is); ``local`` if
    each process holds its own share (an iterable), not the whole data (arrays)."""
    if is_array_data(data):
        data = _to_numpy_tree(data)
        n = {int(x.shape[0]) for x in jax.tree.leaves(data)}
        if len(n) != 1:
            raise ValueError(f"{what} leaves have different lengths: {sorted(n)}")
        n_ = n.pop()
        if n_ == 0:
            raise ValueError(f"{what} is empty (0 examples)")
        bs = int(batch_size or n_)
        return [jax.tree.map(lambda x, i=i: x[i : i + bs], data) for i in range(0, n_, bs)], False
    if data is None:
        raise ValueError(f"{what} is None")
    try:
        batches = list(data)
    except TypeError:
        raise TypeError(
            f"{what} must be arrays or an iterable of batches, got {type(data).__name__}"
        ) from None
    if not batches:
        raise ValueError(f"{what} is empty: no batches")
    return batches, True


def device_batch(batch: Any, local: bool, mesh: jax.sharding.Mesh) -> Any:
    """One host batch as a global device array: split over the data-parallel devices where
    its rows divide evenly, replicated otherwise (a short last batch)."""
    rows = spec_of(batch).batch_size * (jax.process_count() if local else 1)
    dp = dist.data_parallel_size(mesh)
    sharding = dist.batch_sharding(mesh, stacked=False) if rows % dp == 0 else dist.replicated(mesh)
    if local and jax.process_count() > 1:
        if rows % dp:
            raise ValueError(f"a batch of {rows} rows cannot be split over {dp} data-parallel devices")
        return jax.tree.map(lambda x: dist.global_from_local(x, sharding, (rows, *np.shape(x)[1:])), batch)
    return jax.tree.map(lambda x: dist.global_from_full(np.asarray(x), sharding), batch)


def _to_numpy_tree(data: Any) -> Any:
    return jax.tree.map(np.asarray, data)


class ArrayFeed:
    """Arrays batched with ``batch_size`` and shuffled from ``(seed, epoch)``; partial batch dropped.

    Example:
      >>> feed = ArrayFeed((X, y), batch_size=64, seed=0, mesh=mesh)
      >>> feed.steps_per_epoch, feed.dropped
      (28, 5)
    """

    kind = "arrays"

    def __init__(
        self,
        data: Any,
        *,
        batch_size: int,
        seed: int,
        mesh: Any,
        shuffle: bool = True,
        on_device: bool | None = None,
    ):
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int for array data, got {batch_size!r}")
        self.data = _to_numpy_tree(data)
        leaves = jax.tree.leaves(self.data)
        lengths = {int(x.shape[0]) for x in leaves}
        if len(lengths) != 1:
            raise ValueError(f"array data leaves have different lengths: {sorted(lengths)}")
        self.n = lengths.pop()
        if self.n == 0:
            raise ValueError("the dataset is empty (0 examples)")
        self.batch_size = int(batch_size)
        if self.n < self.batch_size:
            raise ValueError(
                f"the dataset has {self.n} examples, fewer than batch_size={self.batch_size}: "
                "no full batch to train on"
            )
        self.steps_per_epoch = self.n // self.batch_size
        self.dropped = self.n - self.steps_per_epoch * self.batch_size
        self.seed, self.shuffle, self.mesh = int(seed), shuffle, mesh
        self.spec = spec_of(jax.tree.map(lambda x: x[: self.batch_size], self.data))
        nbytes = sum(x.nbytes for x in leaves)
        self.on_device = nbytes <= ON_DEVICE_LIMIT if on_device is None else bool(on_device)
        self._perms: dict[int, np.ndarray] = {}
        self.device_data = None
        if self.on_device:
            rep = dist.replicated(mesh)
            self.device_data = jax.tree.map(lambda x: dist.global_from_full(x, rep), self.data)

    def position(self, step: int) -> tuple[int, int]:
        """``(epoch, index of the batch in that epoch)`` for the batch that trains step ``step+1``."""
        return divmod(step, self.steps_per_epoch)

    def _perm(self, epoch: int) -> np.ndarray:
        perm = self._perms.get(epoch)
        if perm is None:
            perm = (
                np.random.default_rng([self.seed, epoch]).permutation(self.n).astype(np.int32)
                if self.shuffle
                else np.arange(self.n, dtype=np.int32)
            )
            if len(self._perms) > 4:
                self._perms.pop(min(self._perms))
            self._perms[epoch] = perm
        return perm

    def indices(self, start: int, length: int) -> np.ndarray:
        """Example indices ``[length, batch_size]`` for steps ``start+1 .. start+length``."""
        out = np.empty((length, self.batch_size), np.int32)
        for k in range(length):
            epoch, i = self.position(start + k)
            out[k] = self._perm(epoch)[i * self.batch_size : (i + 1) * self.batch_size]
        return out

    def batch(self, start: int) -> Any:
        """The host batch that trains step ``start+1`` (for tests and hand-written loops)."""
        idx = self.indices(start, 1)[0]
        return jax.tree.map(lambda x: x[idx], self.data)

    def make(self, start: int, length: int) -> Any:
        """Device input for steps ``start+1 .. start+length``: indices (on-device data) or batches."""
        idx = self.indices(start, length)
        if self.on_device:
            return dist.global_from_full(idx, dist.batch_sharding(self.mesh, stacked=True))
        sharding = dist.batch_sharding(self.mesh, stacked=True)

        def leaf(x: np.ndarray) -> jax.Array:
            shape = (length, self.batch_size, *x.shape[1:])
            return jax.make_array_from_callback(
                shape, sharding, lambda index: x[idx[index[:2]]][(slice(None), slice(None), *index[2:])]
            )

        return jax.tree.map(leaf, self.data)


class IterFeed:
    """Batches from any iterable, in order; every batch must match the first one's structure.

    Short batches (same structure, fewer rows than the first batch) are skipped and listed in
    ``short_batches`` as ``(batch number, rows)``; any other difference is an error.
    """

    kind = "iterable"

    def __init__(self, data: Iterable[Any], *, mesh: Any, resume_state: dict[str, Any] | None = None):
        try:
            self._it: Iterator[Any] = data_state.iterator_for(data)
        except TypeError:
            raise TypeError(
                f"data must be arrays (an array, a tuple or dict of arrays) or an iterable of "
                f"batches, got {type(data).__name__}"
            ) from None
        self.mesh = mesh
        # a finite grain.MapDataset: one pass is an epoch (read repeatedly, reshuffled each pass)
        self.steps_per_epoch = data_state.map_dataset_length(data)
        self.stateful = data_state.is_stateful(self._it)
        self.restored = False  # put back at a checkpoint's position by set_state (no replay)
        self.state: dict[str, Any] | None = None  # position after the last batch taken
        if resume_state is not None and self.stateful:
            data_state.apply(self._it, resume_state)  # before the first batch is read
            self.restored, self.state = True, resume_state
        self.dropped = 0
        self.on_device = False
        self.device_data = None
        try:
            first = next(self._it)
        except StopIteration:
            raise ValueError("the dataset is empty: the iterable yielded no batches") from None
        self.spec = spec_of(first, what="the first batch")
        self._first: Any = first
        self._consumed = 0
        self.exhausted = False
        self.short_batches: list[tuple[int, int]] = []
        # every process feeds its own share: the global batch is the local one times the processes
        self.batch_size = self.spec.batch_size * jax.process_count()

    def _next(self) -> Any | None:
        if self._first is not None:
            b, self._first = self._first, None
            return b
        try:
            return next(self._it)
        except StopIteration:
            self.exhausted = True
            return None

    def skip(self, n: int) -> None:
        """Discard ``n`` batches (resuming at a data position)."""
        for _ in range(n):
            if self._next() is None:
                raise ValueError(
                    f"cannot resume: the iterable ended after {self._consumed} batches, "
                    f"before the checkpoint's position ({n})"
                )
            self._consumed += 1

    def count_from(self, n: int) -> None:
        """Count ``n`` batches as taken (the iterator was put after them by ``set_state``)."""
        self._consumed = n

    @property
    def consumed(self) -> int:
        """Batches taken from the iterable so far (trained, skipped on resume, or dropped as short)."""
        return self._consumed

    def _is_short(self, got: BatchSpec) -> bool:
        s = self.spec
        return (
            got.batch_size < s.batch_size
            and got.treedef == s.treedef
            and got.shapes == s.shapes
            and got.dtypes == s.dtypes
        )

    def take(self, length: int) -> list[Any]:
        """Up to ``length`` full batches; fewer only when the iterable is exhausted."""
        out = []
        while len(out) < length:
            b = self._next()
            if b is None:
                break
            self._consumed += 1
            got = spec_of(b, what=f"batch {self._consumed}")
            if self._is_short(got):
                self.short_batches.append((self._consumed, got.batch_size))
                continue
            check_same(self.spec, got, what=f"batch {self._consumed} (shapes must not change mid-run)")
            out.append(b)
        if self.stateful:  # in the feeding thread, right after the call's last batch
            self.state = data_state.take_state(self._it)
        return out

    def make_from(self, batches: list[Any]) -> Any:
        sharding = dist.batch_sharding(self.mesh, stacked=True)
        stacked = jax.tree.map(lambda *xs: np.stack([np.asarray(x) for x in xs]), *batches)
        return jax.tree.map(
            lambda x: dist.global_from_local(
                x, sharding, (x.shape[0], x.shape[1] * jax.process_count(), *x.shape[2:])
            ),
            stacked,
        )


@dataclasses.dataclass
class Chunk:
    """Input for one compiled call: steps ``start+1 .. start+length``.

    ``consumed``: for an iterable, the batches taken from it once this call's steps are done
    (its data position for a checkpoint; it counts dropped short batches too). ``state``: a
    stateful iterator's position at that same point (:mod:`jaxmagic.train.data_state`).
    """

    start: int
    length: int
    feed: Any
    consumed: int | None = None
    state: dict[str, Any] | None = None


def plan(start: int, target: int | None, per_call: int, epoch_len: int | None) -> Iterator[tuple[int, int]]:
    """``(start, length)`` of successive calls: at most ``per_call`` steps, never crossing an epoch
    end or ``target``. A pure function of ``start``, so a resumed run makes the same calls."""
    s = start
    while target is None or s < target:
        e = s + per_call
        if epoch_len:
            e = min(e, (s // epoch_len + 1) * epoch_len)
        if target is not None:
            e = min(e, target)
        yield s, e - s
        s = e


class Prefetcher:
    """A background thread that builds the next ``depth`` calls' device inputs."""

    def __init__(self, feed: ArrayFeed | IterFeed, calls: Iterator[tuple[int, int]], depth: int = 2):
        self.feed, self.calls = feed, calls
        self._q: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="jaxmagic-prefetch", daemon=True)
        self._thread.start()

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            for start, length in self.calls:
                if self._stop.is_set():
                    return
                if isinstance(self.feed, IterFeed):
                    batches = self.feed.take(length)
                    if not batches:
                        break
                    item = Chunk(
                        start, len(batches), self.feed.make_from(batches), self.feed.consumed, self.feed.state
                    )
                    if not self._put(item) or len(batches) < length:
                        break
                else:
                    if not self._put(Chunk(start, length, self.feed.make(start, length))):
                        return
        except BaseException as e:  # surfaced in the training loop, at a step boundary
            self._put(e)
            return
        self._put(None)

    def get(self) -> Chunk | None:
        """The next call's input; ``None`` at the end; re-raises errors from the feeding thread."""
        item = self._q.get()
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
