"""A fingerprint of user objects: everything a user would notice changing.

``fingerprint(x)`` is a plain, comparable value built from
- the graph of an NNX object (modules, optimizers, ``nnx.Rngs``): its ``GraphDef``, the
  identity and type of every node and variable in it, and each node's Python attributes;
- every leaf's value, as bytes (typed PRNG keys through their key data), shape and dtype,
  so RNG counters, BatchNorm statistics and optimizer steps count;
- whether an array was deleted (donated).

``namespace_fingerprint(ns)`` does that for every model, optimizer, array and pytree of
arrays in a namespace (an IPython ``user_ns``); ``fingerprint_all(ns, names)`` for chosen
names. Two equal fingerprints mean nothing the user holds changed; ``differences`` says what
did. ``CompileCounter`` is a test's own, independent count of XLA compiles.
"""

from __future__ import annotations

import collections
import contextlib
from collections.abc import Iterator
from typing import Any

import jax
import numpy as np
from flax import nnx


def _array(x: Any) -> tuple:
    if isinstance(x, jax.Array):
        if x.is_deleted():
            return ("deleted", x.shape, str(x.dtype))
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            return ("key", str(x.dtype), np.asarray(jax.random.key_data(x)).tobytes())
        return ("jax", x.shape, str(x.dtype), np.asarray(x).tobytes())
    a = np.asarray(x)
    return ("numpy", a.shape, str(a.dtype), a.tobytes())


def _leaf(x: Any) -> Any:
    if isinstance(x, (jax.Array, np.ndarray, np.generic)):
        return _array(x)
    return ("py", type(x).__name__, repr(x))


def _python_attributes(node: Any) -> tuple:
    """A node's attribute names, and the values of those that are plain Python data."""
    attrs = vars(node) if hasattr(node, "__dict__") else {}
    out = []
    for name in sorted(attrs):
        value = attrs[name]
        plain = isinstance(value, (bool, int, float, str, type(None), tuple)) and not any(
            isinstance(v, (jax.Array, np.ndarray)) or nnx.graph.is_graph_node(v)
            for v in (value if isinstance(value, tuple) else ())
        )
        out.append((name, repr(value) if plain else type(value).__name__))
    return tuple(out)


def graph_fingerprint(obj: Any) -> tuple:
    """Structure, identities, Python attributes and every value of an NNX graph object."""
    graphdef, state = nnx.split(obj)
    nodes = []
    for path, node in nnx.iter_graph(obj):
        entry = (tuple(map(str, path)), type(node).__name__, id(node))
        if isinstance(node, nnx.Variable):
            entry += (_leaf(node.get_value()),)
        elif nnx.graph.is_graph_node(node):
            entry += (_python_attributes(node),)
        else:
            entry += (_leaf(node),)
        nodes.append(entry)
    values = tuple((tuple(map(str, p)), _leaf(v)) for p, v in jax.tree_util.tree_flatten_with_path(state)[0])
    return ("graph", graphdef, values, tuple(nodes))


def fingerprint(obj: Any) -> Any:
    """A comparable snapshot of ``obj`` (see the module docstring)."""
    if nnx.graph.is_graph_node(obj):
        return graph_fingerprint(obj)
    if isinstance(obj, (jax.Array, np.ndarray, np.generic)):
        return _array(obj)
    leaves, treedef = jax.tree_util.tree_flatten(obj, is_leaf=nnx.graph.is_graph_node)
    return (
        "tree",
        str(treedef),
        tuple(fingerprint(v) if nnx.graph.is_graph_node(v) else _leaf(v) for v in leaves),
        id(obj),
    )


def _holds_arrays(obj: Any) -> bool:
    if nnx.graph.is_graph_node(obj) or isinstance(obj, (jax.Array, np.ndarray)):
        return True
    if isinstance(obj, (dict, list, tuple)) or type(obj).__module__.startswith("optax"):
        try:
            leaves = jax.tree_util.tree_leaves(obj, is_leaf=nnx.graph.is_graph_node)
        except Exception:
            return False
        return bool(leaves) and all(
            isinstance(x, (jax.Array, np.ndarray, np.generic, int, float)) or nnx.graph.is_graph_node(x)
            for x in leaves
        )
    return False


def namespace_fingerprint(ns: dict) -> dict:
    """``{name: fingerprint}`` of every model, optimizer, array and pytree of arrays in ``ns``."""
    return {
        name: fingerprint(value)
        for name, value in ns.items()
        if not name.startswith("_") and _holds_arrays(value)
    }


def values(obj: Any) -> tuple:
    """Only the values (no identities): compares two distinct objects, e.g. a profiled run's
    model with an unprofiled twin's."""
    return fingerprint(obj)[2]


def fingerprint_all(ns: dict, names: list[str]) -> dict:
    """Fingerprints of ``ns[name]`` for each name (missing names recorded as missing)."""
    return {name: fingerprint(ns[name]) if name in ns else "<missing>" for name in names}


_PARTS = {
    "graph": ("kind", "graph structure", "values", "nodes"),
    "tree": ("kind", "structure", "leaves", "identity"),
}


def differences(before: dict, after: dict) -> list[str]:
    """Names whose fingerprint changed, with the first part that differs, for messages."""
    changed = []
    for name, b in before.items():
        a = after.get(name)
        if b == a:
            continue
        what = "value"
        if isinstance(b, tuple) and isinstance(a, tuple) and len(a) == len(b) and b[0] in _PARTS:
            what = next((_PARTS[b[0]][i] for i in range(len(b)) if b[i] != a[i]), "value")
        changed.append(f"{name}: {what} changed")
    return changed


COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"


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
