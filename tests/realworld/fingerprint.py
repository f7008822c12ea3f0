"""Fingerprints of user objects and an independent compile counter, for the real-world layer.

A fingerprint captures everything a magic could harm: for NNX objects the graph structure
(``nnx.graphdef``), every state leaf's dtype, shape and bytes (RNG keys and counts included)
and the Python attributes of every node in the graph; for any other pytree (Linen variables,
``TrainState``, optax states, arrays) the tree structure and every leaf's bytes. Equal
fingerprints before and after mean the object is exactly as it was.
"""

from __future__ import annotations

import collections
import contextlib
from collections.abc import Iterator
from typing import Any

import jax
import numpy as np
from flax import nnx

COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


def _leaf_bytes(x: Any) -> tuple:
    if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        x = jax.random.key_data(x)
    if isinstance(x, (jax.Array, np.ndarray, np.generic)):
        a = np.asarray(x)
        return (str(a.dtype), a.shape, a.tobytes())
    return ("py", repr(x))


def _python_attrs(obj: Any) -> list:
    """(path, sorted attribute names, non-array attribute values) of every node in an NNX graph."""
    out = []
    for path, node in nnx.iter_graph(obj):
        if hasattr(node, "__dict__") and not isinstance(node, nnx.Variable):
            attrs = getattr(node, "__dict__", {})
            plain = {
                k: repr(v)
                for k, v in attrs.items()
                if isinstance(v, (bool, int, float, str, tuple, type(None)))
            }
            out.append((tuple(map(str, path)), type(node).__name__, sorted(attrs), sorted(plain.items())))
    return out


_NNX_GRAPH_TYPES = tuple(t for t in (getattr(nnx, "Pytree", None), nnx.Object, nnx.Module, nnx.Variable) if t)


def fingerprint(obj: Any) -> Any:
    """A comparable snapshot of ``obj`` (NNX module/optimizer/metric, pytree, array)."""
    if isinstance(obj, _NNX_GRAPH_TYPES):
        graphdef, state = nnx.split(obj)
        leaves = [
            (jax.tree_util.keystr(p), _leaf_bytes(x))
            for p, x in jax.tree_util.tree_flatten_with_path(state)[0]
        ]
        return ("nnx", repr(graphdef), leaves, _python_attrs(obj))
    flat, treedef = jax.tree_util.tree_flatten_with_path(obj)
    return ("tree", str(treedef), [(jax.tree_util.keystr(p), _leaf_bytes(x)) for p, x in flat])


def values(obj: Any) -> list:
    """Only the leaves (paths, dtypes, shapes, bytes) of ``obj``: compares two distinct objects."""
    return fingerprint(obj)[2]


def fingerprint_all(ns: dict, names: list[str]) -> dict:
    """Fingerprints of ``ns[name]`` for each name (missing names recorded as missing)."""
    return {name: fingerprint(ns[name]) if name in ns else "<missing>" for name in names}


def differences(before: dict, after: dict) -> list[str]:
    """Names whose fingerprint changed, with the first differing component, for messages."""
    changed = []
    for name in before:
        if before[name] != after.get(name):
            b, a = before[name], after.get(name)
            what = "value"
            if isinstance(b, tuple) and isinstance(a, tuple) and len(a) == len(b):
                parts = ["kind", "structure", "leaves", "attributes"]
                what = next((parts[i] for i in range(len(b)) if b[i] != a[i]), "value")
            changed.append(f"{name}: {what} changed")
    return changed


class CompileCounter:
    """Counts XLA backend compiles per function name with the test's own jax.monitoring listener."""

    def __init__(self) -> None:
        self.by_name: collections.Counter = collections.Counter()

    def _listener(self, event: str, seconds: float, **kwargs: Any) -> None:
        if event == COMPILE_EVENT:
            name = str(kwargs.get("fun_name", "?"))
            if name.startswith("jit(") and name.endswith(")"):
                name = name[4:-1]
            self.by_name[name] += 1

    @property
    def total(self) -> int:
        return sum(self.by_name.values())

    @contextlib.contextmanager
    def listening(self) -> Iterator[CompileCounter]:
        jax.monitoring.register_event_duration_secs_listener(self._listener)
        try:
            yield self
        finally:
            jax.monitoring.unregister_event_duration_listener(self._listener)
