"""``jaxmagic.plan()``: will a call fit, and what will it communicate, before it runs.

Lowers and compiles only (through :func:`jaxmagic.ir.inspect_call`): inputs may be
``jax.ShapeDtypeStruct``; with ``mesh`` and ``specs`` every input becomes one, laid out by
its PartitionSpec, so no data moves and no device memory is used. The numbers are the
current backend's compiler's (CPU here; on GPU/TPU the same call uses theirs).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from jaxmagic._format import fmt_bytes
from jaxmagic._result import Result
from jaxmagic.memories.hlo import Collective, collectives, donatable_bytes

GIB = 1024**3
# Nominal memory per device (per chip for TPUs). Usable memory is lower: the runtime, its
# kernels and, on GPU, XLA_PYTHON_CLIENT_MEM_FRACTION (75 % preallocated by default) take a share.
DEVICES = {
    "h100": 80 * GIB,
    "h100-80g": 80 * GIB,
    "h200": 141 * 10**9,
    "a100": 80 * GIB,
    "a100-80g": 80 * GIB,
    "a100-40g": 40 * GIB,
    "l4": 24 * GIB,
    "a10g": 24 * GIB,
    "v100": 32 * GIB,
    "b200": 192 * 10**9,
    "tpu-v4": 32 * GIB,
    "tpu-v5e": 16 * GIB,
    "tpu-v5p": 95 * GIB,
    "tpu-v6e": 32 * GIB,
}
_UNITS = {
    "": 1,
    "b": 1,
    "k": 10**3,
    "kb": 10**3,
    "m": 10**6,
    "mb": 10**6,
    "g": 10**9,
    "gb": 10**9,
    "t": 10**12,
    "tb": 10**12,
    "kib": 1024,
    "mib": 1024**2,
    "gib": GIB,
    "tib": 1024**4,
}


def device_capacity(device: str | int | float) -> tuple[str, int]:
    """``("h100", bytes)`` for a device name, or ``("17.2 GB", bytes)`` for a size such as
    ``"16GiB"``, ``"16e9"`` or ``17179869184``. Unknown names raise ``ValueError`` listing them."""
    if isinstance(device, (int, float)) and not isinstance(device, bool):
        if device <= 0:
            raise ValueError(f"device capacity must be positive, got {device}")
        return fmt_bytes(int(device)), int(device)
    text = str(device).strip().lower()
    if text in DEVICES:
        return text, DEVICES[text]
    m = re.match(r"^(\d+(?:\.\d+)?(?:e\d+)?)\s*([kmgt]i?b?|b)?$", text)
    if m:
        n = int(float(m.group(1)) * _UNITS[m.group(2) or ""])
        if n > 0:
            return fmt_bytes(n), n
    raise ValueError(
        f"unknown device {device!r}: use one of {', '.join(sorted(DEVICES))}, or a size "
        "such as 80GiB, 16e9 or 17179869184"
    )


@dataclass(frozen=True)
class PlanReport(Result):
    """Memory, cost and communication of one compiled call, per device, nothing executed."""

    name: str
    signature: str
    backend: str
    mesh: str | None
    devices: int
    memory: dict[str, int] | None  # argument/output/alias/temp/generated_code bytes and peak
    cost: dict[str, float | None]
    collectives: tuple[Collective, ...]
    capacity: tuple[str, int] | None = None
    sweep: tuple[tuple[int, int], ...] = ()  # (batch size, peak bytes) compiled by --batch-sweep
    max_batch: int | None = None  # the largest batch size that fits ``capacity`` (None: none tried fits)
    # bytes per device donation could let outputs reuse (arguments matching an output's type,
    # not donated yet), read from the compiled program; None when it cannot be read
    donatable: int | None = None

    @property
    def peak(self) -> int | None:
        return None if self.memory is None else self.memory["peak_bytes"]

    @property
    def fits(self) -> bool | None:
        if self.capacity is None or self.peak is None:
            return None
        return self.peak <= self.capacity[1]

    @property
    def headroom(self) -> int | None:
        return None if self.capacity is None or self.peak is None else self.capacity[1] - self.peak

    @property
    def intensity(self) -> float | None:
        flops, nbytes = self.cost.get("flops"), self.cost.get("bytes_accessed")
        return flops / nbytes if flops is not None and nbytes else None

    def communication_bytes(self) -> int:
        return sum(c.nbytes for c in self.collectives)

    def summary(self) -> str:
        peak = f"peak {fmt_bytes(self.peak)}/device" if self.peak is not None else "memory n/a"
        fit = (
            ""
            if self.fits is None
            else (f", fits {self.capacity[0]}" if self.fits else f", does not fit {self.capacity[0]}")
        )
        return f"{self.name}: {peak}, {len(self.collectives)} collectives{fit}"

    def to_text(self, width: int = 100) -> str:
        from jaxmagic.render.memory import plan_text

        return plan_text(self, width=width)

    def to_html(self) -> str:
        from jaxmagic.render.memory import plan_html

        return plan_html(self)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "signature": self.signature,
            "backend": self.backend,
            "mesh": self.mesh,
            "devices": self.devices,
            "memory": self.memory,
            "cost": dict(self.cost),
            "intensity": self.intensity,
            "collectives": [c.to_dict() for c in self.collectives],
            "capacity": list(self.capacity) if self.capacity else None,
            "fits": self.fits,
            "headroom": self.headroom,
            "sweep": [list(t) for t in self.sweep],
            "max_batch": self.max_batch,
            "donatable_bytes": self.donatable,
        }


def _is_spec(x: Any) -> bool:
    from jax.sharding import PartitionSpec

    return x is None or isinstance(x, (str, PartitionSpec))


def _pspec(norm: Any) -> Any:
    from jax.sharding import PartitionSpec

    return PartitionSpec(*(None if not axes else axes[0] if len(axes) == 1 else axes for axes in norm))


def _abstract(args: Sequence[Any], mesh: Any, specs: Sequence[Any] | None) -> list[Any]:
    """Array leaves -> ``ShapeDtypeStruct`` (laid out by ``specs`` on ``mesh`` where given)."""
    import jax
    from jax.sharding import NamedSharding

    from jaxmagic.shardings.mesh import mesh_info
    from jaxmagic.shardings.spec import SpecError, validate_spec

    if specs is not None and len(specs) != len(args):
        raise ValueError(f"specs has {len(specs)} entries but the call has {len(args)} positional arguments")
    axis_sizes = mesh_info(mesh).shape if mesh is not None else {}

    def to_sds(x: Any, spec: Any, where: str) -> Any:
        if not (hasattr(x, "shape") and hasattr(x, "dtype")):
            return x
        sharding = getattr(x, "sharding", None)
        if specs is not None:
            try:
                norm = validate_spec(spec, axis_sizes, x.shape)
            except SpecError as e:
                raise SpecError(f"{where}: {e}") from None
            sharding = NamedSharding(mesh, _pspec(norm))
        return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)

    out = []
    for i, a in enumerate(args):
        entry = None if specs is None else specs[i]
        if _is_spec(entry):
            out.append(_map_arrays(a, lambda path, x, e=entry, i=i: to_sds(x, e, f"argument {i}{path}")))
            continue
        paths, leaves, treedef = _flatten(a)
        spec_leaves = jax.tree.leaves(entry, is_leaf=_is_spec)
        if len(spec_leaves) != len(leaves):
            raise ValueError(
                f"specs[{i}] has {len(spec_leaves)} specs but argument {i} has {len(leaves)} leaves"
            )
        out.append(
            jax.tree.unflatten(
                treedef, [to_sds(x, s, f"argument {i}{p}") for p, x, s in zip(paths, leaves, spec_leaves)]
            )
        )
    return out


def _flatten(tree: Any) -> tuple[list[str], list[Any], Any]:
    import jax

    flat, treedef = jax.tree_util.tree_flatten_with_path(tree)
    return [jax.tree_util.keystr(p) for p, _ in flat], [x for _, x in flat], treedef


def _map_arrays(tree: Any, fn: Callable[[str, Any], Any]) -> Any:
    """Apply ``fn(path, leaf)`` to every leaf of ``tree``; NNX modules are split into their state."""
    import jax

    try:
        from flax import nnx
    except ImportError:  # pragma: no cover - flax is a dependency
        nnx = None
    if nnx is not None and isinstance(tree, nnx.Module):
        graphdef, state = nnx.split(tree)
        return nnx.merge(graphdef, _map_arrays(state, fn))
    paths, leaves, treedef = _flatten(tree)
    return jax.tree.unflatten(treedef, [fn(p, x) for p, x in zip(paths, leaves)])


def plan(
    fn: Callable,
    *args: Any,
    mesh: Any = None,
    specs: Sequence[Any] | None = None,
    device: str | int | None = None,
    batch_sweep: bool = False,
    batch_argnums: Sequence[int] = (-1,),
    label_file: Callable[[str], str | None] | None = None,
    **kwargs: Any,
) -> PlanReport:
    """Compile ``fn(*args, **kwargs)`` without running it and report, per device, its memory
    (arguments, outputs, temporaries, aliased, generated code → peak), FLOPs, bytes accessed
    and the collectives XLA inserted.

    Args:
        fn: the function (plain, ``jax.jit``, ``nnx.jit``) to plan.
        *args, **kwargs: its arguments: arrays, ``jax.ShapeDtypeStruct``, pytrees, NNX modules.
        mesh: a ``jax.sharding.Mesh`` to lay the positional arguments out on, with ``specs``.
        specs: one entry per positional argument: a PartitionSpec (or its text, ``"data, None"``)
            for every array of that argument, ``None`` for replicated, or a pytree of specs
            matching the argument.
        device: a capacity to compare the peak with: ``"h100"``, ``"tpu-v5e"``, ``"80GiB"``, bytes.
        batch_sweep: also find the largest batch size that fits ``device``, by compiling only:
            dimension 0 of every array in the arguments ``batch_argnums`` (default: the last
            positional one) is resized, in steps of the number of shards that dimension has.
        batch_argnums: which positional arguments carry the batch.
        label_file: names a source file for the collectives' source lines (the magic passes
            one that turns a notebook cell's file into ``In[5]``).

    Returns:
        A :class:`PlanReport`. Raises ``NotTraceableError`` when the call does not trace,
        ``SpecError`` for a spec that does not fit the mesh, ``ValueError`` for an unknown device.

    Example::

        jaxmagic.plan(step, state, batch, mesh=mesh, specs=(None, P("data")), device="h100").fits
    """
    import jax

    from jaxmagic.shardings.mesh import mesh_info

    capacity = device_capacity(device) if device is not None else None
    if specs is not None and mesh is None:
        raise ValueError("specs need a mesh: pass mesh=... as well")
    if isinstance(specs, str) or (specs is not None and _is_spec(specs)):
        specs = (specs,)
    if batch_sweep and capacity is None:
        raise ValueError("batch_sweep needs a device capacity to fit: pass device=... as well")
    report, memory = _compile(fn, args, mesh, specs, kwargs)
    sweep, max_batch = ((), None)
    if batch_sweep:
        sweep, max_batch = _sweep(fn, args, mesh, specs, kwargs, capacity[1], batch_argnums)
    info = mesh_info(mesh) if mesh is not None else None
    axes = (info.axis_names, info.axis_sizes) if info is not None else None
    n_devices = info.size if info is not None else _devices_of(report.hlo or "")
    found = collectives(report.hlo or "", axes)
    if label_file is not None:
        found = [_relabel(c, label_file) for c in found]
    return PlanReport(
        name=report.name,
        signature=report.signature,
        backend=jax.default_backend(),
        mesh=info.describe() if info is not None else None,
        devices=n_devices,
        memory=memory,
        cost=dict(report.cost),
        collectives=tuple(found),
        capacity=capacity,
        sweep=sweep,
        max_batch=max_batch,
        donatable=donatable_bytes(report.hlo or ""),
    )


def _relabel(c: Collective, label_file: Callable[[str], str | None]) -> Collective:
    """``/tmp/ipykernel_1/123.py:2 (loss)`` -> ``In[5], line 2 (loss)`` where ``label_file`` knows the file."""
    import dataclasses

    m = re.match(r"^(.*):(\d+)( \(.*\))?$", c.source or "")
    label = label_file(m.group(1)) if m else None
    if not label:
        return c
    return dataclasses.replace(c, source=f"{label}, line {m.group(2)}{m.group(3) or ''}")


def _compile(
    fn: Callable, args: Sequence[Any], mesh: Any, specs: Any, kwargs: dict
) -> tuple[Any, dict | None]:
    from jaxmagic.ir import inspect_call, peak_bytes

    report = inspect_call(fn, *_abstract(args, mesh, specs), stage="hlo", **kwargs)
    memory = dict(report.memory) if report.memory is not None else None
    if memory is not None:
        memory["peak_bytes"] = peak_bytes(memory)
    return report, memory


def _resized(arg: Any, size: int, keep_sharding: bool) -> Any:
    import jax

    def leaf(_path: str, x: Any) -> Any:
        if not (hasattr(x, "shape") and hasattr(x, "dtype")) or len(x.shape) == 0:
            return x
        sharding = getattr(x, "sharding", None) if keep_sharding else None
        return jax.ShapeDtypeStruct((size, *x.shape[1:]), x.dtype, sharding=sharding)

    return _map_arrays(arg, leaf)


def _sweep(
    fn: Callable,
    args: Sequence[Any],
    mesh: Any,
    specs: Any,
    kwargs: dict,
    capacity: int,
    argnums: Sequence[int],
    max_compiles: int = 24,
) -> tuple[tuple[tuple[int, int], ...], int | None]:
    """Largest batch size whose peak fits ``capacity``: doubling, then bisection, compiling only."""
    import jax

    from jaxmagic.shardings.mesh import mesh_info
    from jaxmagic.shardings.spec import validate_spec

    n = len(args)
    idx = sorted({a % n for a in argnums}) if n else []
    leaves = [x for i in idx for x in jax.tree.leaves(args[i]) if getattr(x, "shape", ())]
    if not leaves:
        raise ValueError(f"batch_sweep: arguments {list(argnums)} hold no arrays with a batch dimension")
    start = int(leaves[0].shape[0])
    step = 1
    if mesh is not None and specs is not None:
        sizes = mesh_info(mesh).shape
        for i in idx:
            if _is_spec(specs[i]) and specs[i] is not None:
                norm = validate_spec(specs[i], sizes, leaves[0].shape)
                for ax in norm[0] if norm else ():
                    step *= sizes[ax]
    tried: dict[int, int] = {}

    def fits(b: int) -> bool:
        resized = [(_resized(a, b, mesh is None) if i in idx else a) for i, a in enumerate(args)]
        _, memory = _compile(fn, resized, mesh, specs, kwargs)
        tried[b] = memory["peak_bytes"] if memory else 0
        return tried[b] <= capacity

    b = max(step, start // step * step)
    lo, hi = None, None
    if fits(b):
        lo = b
        while len(tried) < max_compiles // 2:
            b *= 2
            if not fits(b):
                hi = b
                break
            lo = b
    else:
        hi = b
        while b > step and len(tried) < max_compiles // 2:
            b = max(step, b // 2 // step * step)
            if fits(b):
                lo = b
                break
            hi = b
    while lo is not None and hi is not None and hi - lo > step and len(tried) < max_compiles:
        mid = (lo + hi) // 2 // step * step
        if mid <= lo:
            break
        if fits(mid):
            lo = mid
        else:
            hi = mid
    return tuple(sorted(tried.items())), lo


def _devices_of(hlo: str) -> int:
    m = re.search(r"num_partitions=(\d+)", hlo)
    return int(m.group(1)) if m else 1
