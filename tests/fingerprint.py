"""A fingerprint of user objects: everything a user would notice changing.

``fingerprint(x)`` is a plain, comparable value built from
- the graph of an NNX object (modules, optimizers, ``nnx.Rngs``): its ``GraphDef``, the
  identity and type of every node and variable in it, and each node's Python attributes;
- every leaf's value, as bytes (typed PRNG keys through their key data), shape and dtype,
  so RNG counters, BatchNorm statistics and optimizer steps count;
- whether an array was deleted (donated).

``namespace_fingerprint(ns)`` does that for every model, optimizer, array and pytree of
arrays in a namespace (an IPython ``user_ns``). Two equal fingerprints mean nothing the user
holds changed. (A candidate for ``tests/helpers.py`` when that module lands.)
"""

from __future__ import annotations

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
    return ("graph", graphdef, tuple(nodes), values)


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
        id(obj),
        tuple(fingerprint(v) if nnx.graph.is_graph_node(v) else _leaf(v) for v in leaves),
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
