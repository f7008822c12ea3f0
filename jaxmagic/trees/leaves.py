"""One record per leaf of a tree: path, kind, shape, dtype, size, bytes, sharding, status.

``describe_leaf`` turns any leaf value (jax.Array, Tracer, ShapeDtypeStruct, numpy array,
Python scalar, Orbax ArrayMetadata, anything else) into a :class:`Leaf` without reading
array data; unknown objects become opaque leaves instead of errors.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from jaxmagic._format import dtype_short

# Leaf status values (empty string: a concrete array on device or host).
DELETED, ABSTRACT, TRACED, OPAQUE, METADATA, NONE = (
    "deleted",
    "abstract",
    "traced",
    "opaque",
    "metadata",
    "none",
)


@dataclass(frozen=True)
class Leaf:
    """A leaf of a summarised tree. ``sharding`` is the live JAX object (not serialised)."""

    path: tuple[str, ...]
    kind: str
    type_name: str
    shape: tuple[int, ...] | None = None
    dtype: str | None = None
    status: str = ""
    spec: str | None = None
    num_devices: int | None = None
    itemsize: int | None = None
    sharding: Any = field(default=None, repr=False, compare=False)

    @property
    def path_str(self) -> str:
        return ".".join(self.path) if self.path else "(root)"

    @property
    def size(self) -> int | None:
        return None if self.shape is None else math.prod(self.shape)

    @property
    def nbytes(self) -> int | None:
        if self.shape is None or self.itemsize is None:
            return None
        return self.size * self.itemsize

    @property
    def type_str(self) -> str:
        if self.shape is None:
            return self.type_name
        return f"{dtype_short(self.dtype)}[{','.join(map(str, self.shape))}]"

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path_str,
            "kind": self.kind,
            "type": self.type_name,
            "shape": list(self.shape) if self.shape is not None else None,
            "dtype": self.dtype,
            "size": self.size,
            "bytes": self.nbytes,
            "spec": self.spec,
            "num_devices": self.num_devices,
            "status": self.status,
        }


def _itemsize(dtype: Any) -> int | None:
    try:
        size = getattr(dtype, "itemsize", None)
        return int(size) if size is not None else int(np.dtype(dtype).itemsize)
    except Exception:
        return None


def _dtype_name(dtype: Any) -> str:
    return str(getattr(dtype, "name", dtype))


def sharding_label(sharding: Any) -> tuple[str | None, int | None]:
    """``(spec text, device count)`` for a JAX sharding or Orbax sharding metadata."""
    if sharding is None:
        return None, None
    name = type(sharding).__name__
    try:
        if name == "NamedSharding":
            from jaxmagic.shardings.spec import normalize_spec, spec_str

            return spec_str(normalize_spec(sharding.spec)), len(sharding.device_set)
        if name == "SingleDeviceSharding":
            (dev,) = sharding.device_set
            return f"device {dev.id}", 1
        if name == "NamedShardingMetadata":  # Orbax checkpoint metadata
            spec = sharding.partition_spec
            from jaxmagic.shardings.spec import normalize_spec, spec_str

            return spec_str(normalize_spec(spec)), int(math.prod(sharding.shape))
        if name == "SingleDeviceShardingMetadata":
            return f"device {sharding.device_str}", 1
        devices = getattr(sharding, "device_set", None)
        return name.replace("Sharding", ""), (len(devices) if devices is not None else None)
    except Exception:
        return name, None


def describe_leaf(
    value: Any, path: tuple[str, ...], kind: str, type_name: str | None = None, annotation: str | None = None
) -> Leaf:
    """Describe one leaf value; never touches array data and never raises for odd objects."""
    import jax

    tname = type_name or type(value).__name__
    if value is None:
        return Leaf(path, kind, type_name or "None", status=NONE)
    if isinstance(value, jax.core.Tracer):
        aval = value.aval
        return Leaf(
            path,
            kind,
            tname,
            tuple(aval.shape),
            _dtype_name(aval.dtype),
            TRACED,
            itemsize=_itemsize(aval.dtype),
        )
    if isinstance(value, jax.Array):
        status = DELETED if value.is_deleted() else ""
        sharding = getattr(value, "sharding", None)
        spec, ndev = sharding_label(sharding)
        return Leaf(
            path,
            kind,
            tname,
            tuple(value.shape),
            _dtype_name(value.dtype),
            status,
            spec or annotation,
            ndev,
            _itemsize(value.dtype),
            sharding,
        )
    if isinstance(value, jax.ShapeDtypeStruct):
        sharding = getattr(value, "sharding", None)
        spec, ndev = sharding_label(sharding)
        return Leaf(
            path,
            kind,
            tname,
            tuple(value.shape),
            _dtype_name(value.dtype),
            ABSTRACT,
            spec or annotation,
            ndev,
            _itemsize(value.dtype),
            sharding,
        )
    if isinstance(value, (np.ndarray, np.generic)):
        return Leaf(
            path,
            kind,
            tname,
            tuple(value.shape),
            _dtype_name(value.dtype),
            "",
            annotation,
            None,
            _itemsize(value.dtype),
        )
    if type(value).__module__.startswith("orbax") and hasattr(value, "shape") and hasattr(value, "dtype"):
        sharding = getattr(value, "sharding", None)
        spec, ndev = sharding_label(sharding)
        return Leaf(
            path,
            kind,
            tname,
            tuple(int(d) for d in value.shape),
            _dtype_name(value.dtype),
            METADATA,
            spec,
            ndev,
            _itemsize(value.dtype),
        )
    if isinstance(value, bool):
        return Leaf(path, kind, tname, (), "bool", "", None, None, 1)
    if isinstance(value, (int, float, complex)):
        dt = (
            {int: "int64", float: "float64", complex: "complex128"}[type(value)]
            if type(value) in (int, float, complex)
            else _dtype_name(np.asarray(value).dtype)
        )
        return Leaf(path, kind, tname, (), dt, "", None, None, _itemsize(dt))
    return Leaf(path, kind, tname, status=OPAQUE)
