"""What one ``fit`` will do, decided before the first step: the :class:`FitPlan`.

Planning reads the arguments, the data and the model and changes nothing; running the plan
(``Trainer._run``) is the only part with effects. The plan is frozen so the step loop reads
fixed facts: where calls end, when evaluations and checkpoints are due.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator
from typing import Any

import jax
import numpy as np

from jaxmagic.train import data_state
from jaxmagic.train.callbacks import CallbackList
from jaxmagic.train.data import ArrayFeed, IterFeed
from jaxmagic.train.data import plan as call_bounds
from jaxmagic.train.step import StepFns

MAX_STEPS_PER_CALL = 200  # tiny models: amortise the per-call host work (measured +8-10% at 200 vs 50)
# ~0.1-0.2 s of work per call on CPU, so the Stop button stays responsive; accelerators: 1e11
_FLOPS_PER_CALL = {"cpu": 1e10}
_DEFAULT_FLOPS_PER_CALL = 1e11


def is_int(x: Any) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


@dataclasses.dataclass(frozen=True)
class EvalPlan:
    """Evaluation batches (host side, in order) and when to evaluate.

    ``every``: every this many steps (at the first call boundary at or after); ``None``: at each
    epoch end of array data. Always once more at the end of the run.
    """

    batches: list[Any]
    local: bool  # each process holds its own share of every batch
    every: int | None


@dataclasses.dataclass(frozen=True)
class Boundary:
    """What happens after a call that ends at step ``end``."""

    end: int
    epoch_end: bool
    eval_due: bool
    save_due: bool


@dataclasses.dataclass(frozen=True)
class FitPlan:
    """One ``fit``: the data feed, the compiled functions, the call length and the bounds.

    Attributes:
      feed: batches for the steps (arrays shuffled per epoch, or an iterable).
      fns: the pure step / eval functions to compile.
      target: the step to reach (``None``: until an iterable is exhausted).
      steps_per_call: steps fused into one compiled call.
      epoch_bound: calls end at epoch ends, because something happens there (eval, checkpoint).
      evaluation: what to evaluate and when, or ``None``.
      save_every / save_at_epoch_end: when checkpoints are due (``checkpointing`` off: never).
      callbacks: the user's callbacks and the progress view, in order.
      prefetch: calls whose inputs the background thread prepares ahead.
    """

    feed: ArrayFeed | IterFeed
    fns: StepFns
    target: int | None
    steps_per_call: int
    epoch_bound: bool
    evaluation: EvalPlan | None
    checkpointing: bool
    save_every: int | None
    save_at_epoch_end: bool
    callbacks: CallbackList
    prefetch: int

    @property
    def steps_per_epoch(self) -> int | None:
        return self.feed.steps_per_epoch

    def calls(self, start: int) -> Iterator[tuple[int, int]]:
        """``(start, length)`` of the compiled calls from step ``start`` on."""
        return call_bounds(
            start, self.target, self.steps_per_call, self.steps_per_epoch if self.epoch_bound else None
        )

    def boundary(self, start: int, end: int) -> Boundary:
        """Is an epoch over, an evaluation or a checkpoint due, after a call from ``start`` to ``end``."""
        spe = self.steps_per_epoch
        epoch_end = bool(spe) and end % spe == 0
        ev = self.evaluation
        eval_due = ev is not None and (
            (ev.every is not None and start // ev.every != end // ev.every)
            or (ev.every is None and epoch_end)
        )
        save_due = self.checkpointing and (
            (self.save_every is not None and start // self.save_every != end // self.save_every)
            or (self.save_at_epoch_end and epoch_end)
        )
        return Boundary(end, epoch_end, eval_due, save_due)

    def describe(self, start: int, checkpoint_dir: str | None, metric_names: list[str]) -> dict[str, Any]:
        """The ``info`` dict callbacks receive in ``on_train_begin``."""
        return {
            "start_step": start,
            "target": self.target,
            "steps_per_call": self.steps_per_call,
            "batch_size": self.feed.batch_size,
            "steps_per_epoch": self.steps_per_epoch,
            "dropped_per_epoch": self.feed.dropped,
            "eval": self.evaluation is not None,
            "checkpoint_dir": checkpoint_dir,
            "metrics": metric_names,
        }


GUARD_MEMORY_SHARE = 0.1  # guard="auto" keeps a rollback copy of the state up to this share


def state_bytes_per_device(state: Any) -> int:
    """Bytes of ``state`` on one device (each array's shard, by its sharding)."""
    total = 0
    for x in jax.tree.leaves(state):
        n = int(np.prod(np.shape(x)))
        shard = int(np.prod(x.sharding.shard_shape(x.shape))) if hasattr(x, "sharding") else n
        total += int(getattr(x, "nbytes", 0)) * shard // max(n, 1)
    return total


def choose_guard(guard: str, state: Any, mesh: Any) -> str:
    """``guard=`` -> ``"call"`` or ``"step"``. ``"auto"``: ``"call"`` (no per-step pass over the
    gradients) unless its rollback copy of the train state would take more than
    ``GUARD_MEMORY_SHARE`` of a device's memory (where the backend reports its limit)."""
    if guard in ("call", "step"):
        return guard
    if guard != "auto":
        raise ValueError(f"guard must be 'auto', 'call' or 'step', got {guard!r}")
    try:
        stats = mesh.devices.flat[0].memory_stats()
    except Exception:  # a backend without memory statistics
        stats = None
    limit = (stats or {}).get("bytes_limit")
    if not limit:
        return "call"
    return "call" if state_bytes_per_device(state) <= GUARD_MEMORY_SHARE * limit else "step"


def choose_steps_per_call(
    steps_per_call: int | str,
    *,
    params: Any,
    feed: ArrayFeed | IterFeed,
    epoch_bound: bool,
    n_steps: int | None,
) -> int:
    """Steps per compiled call: ``"auto"`` sizes a call to ~``_FLOPS_PER_CALL`` of work (at most
    ``MAX_STEPS_PER_CALL`` steps); calls tile an epoch evenly when they end at epoch ends."""
    if steps_per_call == "auto":
        n_params = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
        flops = max(1.0, 6.0 * n_params * feed.batch_size)
        budget = _FLOPS_PER_CALL.get(jax.default_backend(), _DEFAULT_FLOPS_PER_CALL)
        k = int(max(1, min(MAX_STEPS_PER_CALL, budget // flops)))
    elif is_int(steps_per_call) and steps_per_call >= 1:
        k = int(steps_per_call)
    else:
        raise ValueError(f"steps_per_call must be 'auto' or a positive int, got {steps_per_call!r}")
    spe = feed.steps_per_epoch
    if spe and epoch_bound:  # equal-length calls that tile an epoch exactly where possible
        k = min(k, spe)
        k = math.ceil(spe / math.ceil(spe / k))
    elif steps_per_call == "auto" and n_steps and n_steps % k:
        # Every distinct call length is another compile: prefer a length in [k/2, k] that
        # divides the run, so a run of 2000 steps is 40 calls of 50, not 32 of 61 and one of 48.
        k = next((d for d in range(k, (k + 1) // 2 - 1, -1) if n_steps % d == 0), k)
    return k


def make_feed(
    data: Any,
    *,
    steps: int | None,
    epochs: int | None,
    batch_size: int | None,
    seed: int,
    mesh: Any,
    shuffle: bool,
    data_on_device: bool | None,
    is_array: bool,
    resume_state: dict[str, Any] | None = None,
) -> ArrayFeed | IterFeed:
    """The feed for ``data``, after checking that the arguments fit the kind of data.

    ``resume_state``: a checkpoint's saved iterator position, applied to a stateful iterator
    before its first batch is read."""
    if is_array:
        if steps is None and epochs is None:
            raise ValueError(
                "array data needs steps= or epochs= (an iterable of batches may run until it is exhausted)"
            )
        if batch_size is None:
            raise ValueError("array data needs batch_size=")
        return ArrayFeed(
            data, batch_size=batch_size, seed=seed, mesh=mesh, shuffle=shuffle, on_device=data_on_device
        )
    if batch_size is not None:
        raise ValueError("batch_size= applies to array data; an iterable already yields batches")
    epoch_length = data_state.map_dataset_length(data)
    if data_state.is_map_dataset(data) and epoch_length is None and steps is None:
        raise ValueError(
            "this grain.MapDataset repeats without end (.repeat()): pass steps= to say when to stop"
        )
    if epochs is not None and epoch_length is None:
        raise ValueError(
            "epochs= needs array data or a finite grain.MapDataset (their length defines an epoch); "
            "for an iterable pass steps= or neither"
        )
    if isinstance(data, (str, bytes)) or data is None:
        raise TypeError(f"data must be arrays or an iterable of batches, got {type(data).__name__}")
    return IterFeed(data, mesh=mesh, resume_state=resume_state)
