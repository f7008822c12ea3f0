"""A plain description of a device mesh: axis names and sizes, device ids, processes.

Built from a ``jax.sharding.Mesh`` (real devices), an ``AbstractMesh`` or a
``{"axis": size}`` mapping (shapes only: devices are numbered 0..n-1 and nothing is
allocated, so a 512-device mesh costs nothing).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class MeshInfo:
    """Axis names/sizes and the device id at every mesh position (row-major order)."""

    axis_names: tuple[str, ...]
    axis_sizes: tuple[int, ...]
    device_ids: tuple[int, ...]
    process_indices: tuple[int, ...] | None = None
    platform: str | None = None
    device_kind: str | None = None
    abstract: bool = False

    @property
    def size(self) -> int:
        return len(self.device_ids)

    @property
    def shape(self) -> dict[str, int]:
        return dict(zip(self.axis_names, self.axis_sizes))

    def describe(self) -> str:
        """``data=2 × model=4 (8 cpu devices)``."""
        axes = " × ".join(f"{n}={s}" for n, s in zip(self.axis_names, self.axis_sizes)) or "(no axes)"
        what = "simulated devices" if self.abstract else f"{self.platform or ''} devices".strip()
        procs = len(set(self.process_indices)) if self.process_indices else 1
        extra = f", {procs} processes" if procs > 1 else ""
        return f"{axes} ({self.size} {what}{extra})"

    def process_of(self, device_id: int) -> int:
        if not self.process_indices:
            return 0
        return self.process_indices[self.device_ids.index(device_id)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "axis_names": list(self.axis_names),
            "axis_sizes": list(self.axis_sizes),
            "device_ids": list(self.device_ids),
            "process_indices": list(self.process_indices) if self.process_indices else None,
            "platform": self.platform,
            "device_kind": self.device_kind,
            "abstract": self.abstract,
        }


def mesh_info(mesh: Any) -> MeshInfo:
    """Describe ``mesh``: a ``jax.sharding.Mesh``, ``AbstractMesh`` or ``{"axis": size}``.

    Example:
        >>> mesh_info({"data": 64, "model": 8}).size
        512
    """
    if isinstance(mesh, MeshInfo):
        return mesh
    if isinstance(mesh, Mapping):
        names = tuple(str(k) for k in mesh)
        sizes = tuple(int(v) for v in mesh.values())
        if any(s < 1 for s in sizes):
            raise ValueError(f"mesh axis sizes must be positive, got {dict(mesh)}")
        if len(set(names)) != len(names):
            raise ValueError(f"mesh axis names repeat: {names}")
        return MeshInfo(names, sizes, tuple(range(math.prod(sizes))), abstract=True)
    names = getattr(mesh, "axis_names", None)
    if names is None:
        raise TypeError(
            f"expected a jax Mesh, AbstractMesh or {{axis: size}} dict, got {type(mesh).__name__}"
        )
    names = tuple(str(n) for n in names)
    devices = None if type(mesh).__name__ == "AbstractMesh" else getattr(mesh, "devices", None)
    if devices is None:
        sizes = tuple(int(s) for s in mesh.axis_sizes)
        return MeshInfo(names, sizes, tuple(range(math.prod(sizes))), abstract=True)
    sizes = tuple(int(s) for s in devices.shape)
    flat = list(devices.flat)
    first = flat[0] if flat else None
    return MeshInfo(
        names,
        sizes,
        tuple(int(d.id) for d in flat),
        process_indices=tuple(int(d.process_index) for d in flat),
        platform=getattr(first, "platform", None),
        device_kind=getattr(first, "device_kind", None),
    )
