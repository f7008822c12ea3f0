"""Meshes, shardings and global arrays for data-parallel and sharded training.

One code path serves one device, many local devices and many processes: the batch is
split over the mesh axis ``"data"``, parameters follow their ``nnx.with_partitioning``
annotations, and every process feeds only its own share of a batch
(``jax.make_array_from_process_local_data``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

DATA_AXIS = "data"


def resolve_mesh(mesh: Mesh | None, devices: Sequence[Any] | None) -> Mesh:
    """The mesh training runs on.

    Args:
      mesh: an explicit mesh; its ``"data"`` axis (if any) carries data parallelism, its other
        axes are available to parameter annotations.
      devices: devices for a 1-D ``("data",)`` mesh when ``mesh`` is None; default: every device
        of every process (``jax.devices()``). ``devices=jax.devices()[:1]`` trains on one device.

    Returns:
      A ``jax.sharding.Mesh``.

    Example:
      >>> resolve_mesh(None, jax.devices()[:1]).shape
      {'data': 1}
    """
    if mesh is not None and devices is not None:
        raise ValueError("pass either mesh= or devices=, not both")
    if mesh is not None:
        if not isinstance(mesh, Mesh):
            raise TypeError(f"mesh must be a jax.sharding.Mesh, got {type(mesh).__name__}")
        return mesh
    devs = list(devices) if devices is not None else jax.devices()
    if not devs:
        raise ValueError("devices= is empty")
    return Mesh(np.array(devs), (DATA_AXIS,))


def data_parallel_size(mesh: Mesh) -> int:
    """How many ways each batch is split (the size of the mesh's ``"data"`` axis, else 1)."""
    return int(dict(mesh.shape).get(DATA_AXIS, 1))


def batch_sharding(mesh: Mesh, *, stacked: bool) -> NamedSharding:
    """Sharding for a batch (``stacked``: a ``[steps, batch, ...]`` stack of batches)."""
    axis = DATA_AXIS if DATA_AXIS in mesh.axis_names else None
    return NamedSharding(mesh, P(None, axis) if stacked else P(axis))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def _clean_spec(spec: Any, mesh: Mesh, shape: tuple[int, ...]) -> P:
    """Drop axis names the mesh lacks and axes that do not divide the dimension."""
    if spec is None:
        return P()
    names = set(mesh.axis_names)
    out = []
    for dim, entry in enumerate(tuple(spec)):
        if dim >= len(shape):
            break
        parts = entry if isinstance(entry, tuple) else (entry,)
        kept = tuple(a for a in parts if a is not None and a in names)
        size = int(np.prod([mesh.shape[a] for a in kept])) if kept else 1
        if not kept or shape[dim] % size:
            out.append(None)
        else:
            out.append(kept if len(kept) > 1 else kept[0])
    return P(*out)


def state_shardings(state: Any, mesh: Mesh) -> Any:
    """A ``NamedSharding`` per leaf of an NNX state, from its partitioning annotations.

    Annotation axes that are not in ``mesh`` (or that do not divide the dimension) are
    replicated, so a model annotated for ``("data", "model")`` still trains on a 1-D mesh.
    """
    from flax import nnx

    specs = nnx.get_partition_spec(state)
    spec_leaves = jax.tree.leaves(specs, is_leaf=lambda x: isinstance(x, P) or x is None)
    leaves, treedef = jax.tree.flatten(state)
    if len(spec_leaves) != len(leaves):  # unusual containers: replicate everything
        spec_leaves = [None] * len(leaves)
    return treedef.unflatten(
        [NamedSharding(mesh, _clean_spec(s, mesh, tuple(np.shape(x)))) for s, x in zip(spec_leaves, leaves)]
    )


def global_from_full(x: np.ndarray, sharding: NamedSharding) -> jax.Array:
    """A global array from a host array every process holds in full (same values everywhere)."""
    x = np.asarray(x)
    return jax.make_array_from_callback(x.shape, sharding, lambda idx: x[idx])


def global_from_local(x: np.ndarray, sharding: NamedSharding, global_shape: tuple[int, ...]) -> jax.Array:
    """A global array from this process's share of it (its rows of the ``data`` axis)."""
    if jax.process_count() == 1:
        return jax.device_put(np.asarray(x), sharding)
    return jax.make_array_from_process_local_data(sharding, np.asarray(x), global_shape)
