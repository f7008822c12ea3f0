"""Fixes for an out-of-memory step, each with the bytes per device it saves where that can be
computed honestly, ranked by it.

- free names: what ``del``/``%reset -f out`` frees, exact (``%jaxmemory``'s suggestions);
- donation: outputs that could reuse arguments of their exact type not donated yet, read from
  the failing call's compiled program (``PlanReport.donatable``);
- a smaller batch: the failing call compiled again (never run) at half its batch, peak
  before minus peak after;
- sharding: the arguments split over this process's devices, arguments / N per device;
- rematerialisation: unknown (it depends on where the checkpoints go).

Nothing is run: the half-batch program is compiled from ``jax.ShapeDtypeStruct``s.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from jaxmagic._format import fmt_bytes

_ORDER = ("free", "batch", "donate", "shard", "remat")


@dataclass(frozen=True)
class Remedy:
    """One fix and the bytes per device it saves (``None``: not computable honestly here)."""

    action: str
    saves: int | None
    why: str
    kind: str  # "free", "batch", "donate", "shard" or "remat"

    def to_dict(self) -> dict[str, Any]:
        return {"action": self.action, "saves": self.saves, "why": self.why, "kind": self.kind}


def _batch_args(failing: Any) -> tuple[list[int], int] | None:
    """The trailing positional arguments that carry the batch (every array leaf has the same
    dimension 0 as the last argument's first one) and that batch size; ``None`` if none."""
    import jax

    def dims(a: Any) -> list[int]:
        return [int(x.shape[0]) for x in jax.tree.leaves(a) if len(getattr(x, "shape", ())) > 0]

    if not failing.args:
        return None
    last = dims(failing.args[-1])
    if not last or last[0] < 2:
        return None
    size, idx = last[0], []
    for i in range(len(failing.args) - 1, -1, -1):
        d = dims(failing.args[i])
        if not d or any(x != size for x in d):
            break
        idx.insert(0, i)
    return idx, size


def _halve_batch(failing: Any, program: Any) -> Remedy:
    generic = "use a smaller batch"
    if program is None or program.peak is None:
        return Remedy(
            generic,
            None,
            "activations and temporaries scale with the batch; the failing line is not a plain "
            "call of a jitted function, so it was not compiled again to measure it "
            "(%jaxplan --batch-sweep does, for a call you give it)",
            "batch",
        )
    found = _batch_args(failing)
    if found is None:
        return Remedy(generic, None, "no argument of the call has a batch dimension to halve", "batch")
    idx, size = found
    half = size // 2
    names = ", ".join(failing.arg_names[i] for i in idx)
    action = f"halve the batch ({names}: {size} → {half})"
    from jaxmagic.memories.plan import _compile, _resized

    args = [_resized(a, half, True) if i in idx else a for i, a in enumerate(failing.args)]
    try:
        _, memory = _compile(failing.fn, args, None, None, failing.kwargs)
    except Exception as e:  # a program that does not take another batch size
        return Remedy(action, None, f"it does not compile at batch {half}: {type(e).__name__}", "batch")
    if memory is None:
        return Remedy(action, None, "the backend reports no memory analysis", "batch")
    saves = max(0, program.peak - memory["peak_bytes"])
    return Remedy(
        action,
        saves,
        f"compiled again at batch {half} (nothing ran): peak {fmt_bytes(program.peak)} → "
        f"{fmt_bytes(memory['peak_bytes'])} per device",
        "batch",
    )


def _donate(program: Any) -> Remedy:
    action = "donate what it replaces (donate_argnums)"
    if program is None or program.donatable is None:
        return Remedy(
            action,
            None,
            "outputs then reuse their buffers (jax.jit(..., donate_argnums=...)); the failing "
            "call's program is not known here",
            "donate",
        )
    if not program.donatable:
        return Remedy(
            action,
            0,
            "no argument not donated yet has the exact type of an output: nothing to reuse",
            "donate",
        )
    return Remedy(
        action,
        program.donatable,
        "outputs of an argument's exact type can reuse its buffer (read from the compiled "
        "program): jax.jit(..., donate_argnums=...) for arguments the caller no longer needs",
        "donate",
    )


def _shard(program: Any, n_devices: int) -> Remedy:
    action = "shard the arguments over more devices"
    if program is None or program.memory is None:
        return Remedy(action, None, "the failing call's program is not known here", "shard")
    args = program.memory["argument_bytes"]
    if program.devices > 1 or n_devices < 2:
        where = (
            f"the program spans {program.devices} devices already"
            if program.devices > 1
            else "this process has one device"
        )
        return Remedy(action, None, f"{where}: more devices would be needed to tell", "shard")
    per = -(-args // n_devices)
    return Remedy(
        f"shard the arguments over {n_devices} devices",
        args - per,
        f"arguments {fmt_bytes(args)} per device now, {fmt_bytes(per)} split {n_devices} ways "
        "by a PartitionSpec on the batch or model axis (at most: what stays replicated saves "
        "nothing; temporaries may shrink too)",
        "shard",
    )


def _remat() -> Remedy:
    return Remedy(
        "rematerialise (jax.checkpoint, nnx.remat)",
        None,
        "trades compute for the activations kept for the backward pass; what it saves depends on "
        "where the checkpoints go: plan the changed step with %jaxplan",
        "remat",
    )


def rank_remedies(fixes: Sequence[Any], failing: Any, program: Any) -> list[Remedy]:
    """Every fix with the bytes per device it saves, most first; unknown savings last.

    Args:
        fixes: ``%jaxmemory``'s suggestions (``Suggestion``): the names to free.
        failing: the failing call (``oom.FailingCall``) or ``None`` when it is not known.
        program: the failing call's ``PlanReport`` (compiled, not run) or ``None``.
    """
    import jax

    out = [
        Remedy(s.action, s.per_device if s.per_device is not None else s.frees, s.why, "free") for s in fixes
    ]
    out.append(_halve_batch(failing, program))
    out.append(_donate(program))
    out.append(_shard(program, len(jax.local_devices())))
    out.append(_remat())
    return sorted(out, key=lambda r: (r.saves is None, -(r.saves or 0), _ORDER.index(r.kind)))
