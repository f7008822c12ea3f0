"""Where every shard of an array lives: pure index arithmetic, no data movement.

For a named spec the layout is computed from the mesh and the spec alone (so it works for
simulated meshes of any size); for any other JAX sharding it is read from
``sharding.devices_indices_map(shape)``. Both give the same :class:`ArrayLayout`, and the
tests check the arithmetic against JAX on many meshes, specs and ranks.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from jaxmagic._format import dtype_short
from jaxmagic.shardings.mesh import MeshInfo, mesh_info
from jaxmagic.shardings.spec import Spec, spec_str, validate_spec

Index = tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class ArrayLayout:
    """The shards of one array: per device, its index range and bytes.

    ``starts``/``stops`` are ``(devices, rank)`` integer arrays aligned with ``device_ids``;
    ``shard_ids[i]`` numbers the distinct shards, so devices with equal ids hold replicas.
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    itemsize: int
    mesh: MeshInfo
    spec: Spec | None
    device_ids: tuple[int, ...]
    starts: np.ndarray = field(repr=False, compare=False)
    stops: np.ndarray = field(repr=False, compare=False)
    sharding_repr: str = ""

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def spec_text(self) -> str:
        return spec_str(self.spec) if self.spec is not None else (self.sharding_repr or "—")

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.itemsize

    @property
    def type_str(self) -> str:
        return f"{dtype_short(self.dtype)}[{','.join(map(str, self.shape))}]"

    def shard_shape_of(self, i: int) -> tuple[int, ...]:
        return tuple(int(b - a) for a, b in zip(self.starts[i], self.stops[i]))

    @property
    def shard_shape(self) -> tuple[int, ...]:
        """Shape of the largest shard (all shards are equal for evenly split named specs)."""
        if not len(self.device_ids):
            return self.shape
        sizes = (self.stops - self.starts).max(axis=0) if self.rank else np.zeros(0, int)
        return tuple(int(s) for s in sizes)

    def device_bytes(self) -> np.ndarray:
        """Bytes held by each device (aligned with ``device_ids``; read-only)."""
        return self._device_bytes

    @functools.cached_property
    def _device_bytes(self) -> np.ndarray:
        if self.rank == 0:
            out = np.full(len(self.device_ids), self.itemsize, dtype=np.int64)
        else:
            out = np.prod(self.stops - self.starts, axis=1).astype(np.int64) * self.itemsize
        out.flags.writeable = False
        return out

    @functools.cached_property
    def shard_ids(self) -> np.ndarray:
        """Distinct-shard number per device, numbered in order of first appearance."""
        if self.rank == 0:
            return np.zeros(len(self.device_ids), dtype=np.int64)
        radix = [d + 1 for d in self.shape]
        if math.prod(radix) ** 2 < 2**62:  # one integer per (start, stop) box: a fast 1-D unique
            keys = np.zeros(len(self.device_ids), dtype=np.int64)
            for d, r in enumerate(radix):
                keys = (keys * r + self.starts[:, d]) * r + self.stops[:, d]
            _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
        else:
            boxes = np.concatenate([self.starts, self.stops], axis=1)
            _, first, inverse = np.unique(boxes, axis=0, return_index=True, return_inverse=True)
        order = np.argsort(np.argsort(first))
        return order[inverse.reshape(-1)]

    @property
    def num_shards(self) -> int:
        return int(self.shard_ids.max()) + 1 if len(self.device_ids) else 0

    @property
    def replication(self) -> int:
        """How many devices hold each shard (``devices / distinct shards``)."""
        return len(self.device_ids) // max(1, self.num_shards)

    def index_of(self, device_id: int) -> Index:
        i = self.device_ids.index(device_id)
        return tuple((int(a), int(b)) for a, b in zip(self.starts[i], self.stops[i]))

    def blocks(self, dim: int) -> list[tuple[int, int]]:
        """The distinct ``(start, stop)`` ranges along ``dim``, in order."""
        pairs = {(int(a), int(b)) for a, b in zip(self.starts[:, dim], self.stops[:, dim])}
        return sorted(pairs)

    def to_dict(self) -> dict[str, Any]:
        sid = self.shard_ids
        nbytes = self.device_bytes()
        devices = []
        for i, d in enumerate(self.device_ids):
            devices.append(
                {
                    "device": int(d),
                    "index": [[int(a), int(b)] for a, b in zip(self.starts[i], self.stops[i])],
                    "shard_shape": list(self.shard_shape_of(i)),
                    "bytes": int(nbytes[i]),
                    "shard": int(sid[i]),
                }
            )
        return {
            "name": self.name,
            "shape": list(self.shape),
            "dtype": self.dtype,
            "type": self.type_str,
            "bytes": self.nbytes,
            "spec": [list(a) for a in self.spec] if self.spec is not None else None,
            "spec_text": self.spec_text,
            "shard_shape": list(self.shard_shape),
            "num_shards": self.num_shards,
            "replication": self.replication,
            "devices": devices,
        }


def _dtype(dtype: Any) -> Any:
    """A dtype object: numpy/ml_dtypes dtypes, or JAX's extended dtypes (PRNG keys) as they are."""
    if (
        isinstance(dtype, type)
        or isinstance(dtype, str)
        or not isinstance(getattr(dtype, "itemsize", None), int)
    ):
        return np.dtype(dtype)
    return dtype


def _itemsize(dtype: Any, itemsize: int | None = None) -> int:
    return int(itemsize) if itemsize is not None else int(_dtype(dtype).itemsize)


def _dtype_name(dtype: Any) -> str:
    try:
        return str(getattr(_dtype(dtype), "name", dtype))
    except TypeError:  # a JAX extended dtype known by name only ("key<fry>")
        return str(dtype)


def layout_from_spec(
    shape: Sequence[int], dtype: Any, mesh: Any, spec: Any, *, name: str = "", itemsize: int | None = None
) -> ArrayLayout:
    """Layout of an array of ``shape``/``dtype`` split over ``mesh`` by ``spec``.

    Pure arithmetic: mesh position ``c`` holds, along a dimension split by axes
    ``(a1, a2, ...)``, block ``c[a1] * size(a2) * ... + c[a2] * ... + ...`` (the first axis
    is major, as in JAX). Raises :class:`~jaxmagic.shardings.spec.SpecError` for an invalid spec.

    Example:
        >>> layout_from_spec((8, 16), "float32", {"data": 2, "model": 4}, P("data", "model")).shard_shape
        (4, 4)
    """
    info = mesh_info(mesh)
    shape = tuple(int(d) for d in shape)
    norm = validate_spec(spec, info.shape, shape)
    n = info.size
    coords = (
        np.stack(np.unravel_index(np.arange(n), info.axis_sizes), axis=1)
        if info.axis_sizes
        else np.zeros((n, 0), int)
    )
    axis_pos = {a: i for i, a in enumerate(info.axis_names)}
    starts = np.zeros((n, len(shape)), dtype=np.int64)
    stops = np.tile(np.asarray(shape, dtype=np.int64), (n, 1)) if shape else np.zeros((n, 0), np.int64)
    for dim, axes in enumerate(norm):
        if not axes:
            continue
        block = np.zeros(n, dtype=np.int64)
        parts = 1
        for a in axes:
            size = info.axis_sizes[axis_pos[a]]
            block = block * size + coords[:, axis_pos[a]]
            parts *= size
        step = shape[dim] // parts
        starts[:, dim] = block * step
        stops[:, dim] = block * step + step
    return ArrayLayout(
        name,
        shape,
        _dtype_name(dtype),
        _itemsize(dtype, itemsize),
        info,
        norm,
        info.device_ids,
        starts,
        stops,
    )


def _slice_bounds(s: slice, size: int) -> tuple[int, int]:
    start, stop, _ = s.indices(size)
    return start, stop


def layout_from_sharding(
    sharding: Any, shape: Sequence[int], dtype: Any, *, name: str = "", itemsize: int | None = None
) -> ArrayLayout:
    """Layout of an array with JAX ``sharding``: arithmetic for named shardings, otherwise
    ``sharding.devices_indices_map(shape)``. ``itemsize`` overrides the dtype's (for dtypes
    known by name only, such as PRNG keys)."""
    shape = tuple(int(d) for d in shape)
    if type(sharding).__name__ == "NamedSharding":
        return layout_from_spec(shape, dtype, sharding.mesh, sharding.spec, name=name, itemsize=itemsize)
    index_map = sharding.devices_indices_map(shape)
    devices = sorted(index_map, key=lambda d: d.id)
    starts = np.zeros((len(devices), len(shape)), dtype=np.int64)
    stops = np.zeros((len(devices), len(shape)), dtype=np.int64)
    for i, dev in enumerate(devices):
        for d, sl in enumerate(index_map[dev]):
            starts[i, d], stops[i, d] = _slice_bounds(sl, shape[d])
    info = MeshInfo(
        ("devices",),
        (len(devices),),
        tuple(int(d.id) for d in devices),
        process_indices=tuple(int(d.process_index) for d in devices),
        platform=getattr(devices[0], "platform", None) if devices else None,
        device_kind=getattr(devices[0], "device_kind", None) if devices else None,
    )
    label = type(sharding).__name__.replace("Sharding", "")
    if label == "SingleDevice":
        label = f"device {devices[0].id}"
    return ArrayLayout(
        name,
        shape,
        _dtype_name(dtype),
        _itemsize(dtype, itemsize),
        info,
        None,
        info.device_ids,
        starts,
        stops,
        sharding_repr=label,
    )
