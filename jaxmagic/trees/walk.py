"""Walk any supported object into a flat list of :class:`Leaf` records.

Handlers are tried most specific first: Flax NNX graph nodes (through ``nnx.state``, so
shared and cyclic references are visited once), ``nnx.State``, NNX variables, graph defs,
Optax states (their leaves are optimizer state), Linen variable dicts (the collection names
the kind), and finally any JAX pytree. Objects JAX does not know are opaque leaves.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from jaxmagic.trees.leaves import Leaf, describe_leaf

LINEN_COLLECTIONS = {
    "params": "Param",
    "batch_stats": "BatchStat",
    "cache": "Cache",
    "intermediates": "Intermediate",
    "losses": "Loss",
    "perturbations": "Perturbation",
}


@dataclass
class Walk:
    """Everything the walker learned: leaves in order, notes for the reader, the source kind."""

    leaves: list[Leaf] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    source: str = "PyTree"


def _nnx():
    if "flax" not in sys.modules and "flax.nnx" not in sys.modules:
        return None  # a user who never imported flax has no NNX objects
    try:
        from flax import nnx
    except Exception:  # pragma: no cover - flax broken
        return None
    return nnx


def variable_kind(var: Any, nnx: Any) -> str:
    """The family an NNX variable belongs to: Param, BatchStat, RngState, OptState or its type."""
    for fam in ("Param", "BatchStat", "RngState", "OptState"):
        cls = getattr(nnx, fam, None)
        if cls is not None and isinstance(var, cls):
            return fam
    return type(var).__name__


def _key_str(k: Any) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(k, attr):
            return str(getattr(k, attr))
    return str(k)


def _annotation(meta: Mapping[str, Any]) -> str | None:
    for key in ("out_sharding", "sharding", "sharding_names"):
        val = meta.get(key)
        if val:
            from jaxmagic.shardings.spec import normalize_spec, spec_str

            try:
                return spec_str(normalize_spec(val)) + " (annotation)"
            except Exception:
                return str(val)
    return None


def _is_optax_state(x: Any) -> bool:
    return isinstance(x, tuple) and type(x).__module__.startswith("optax")


def _looks_optax(x: Any) -> bool:
    """An Optax state, or a (nested) tuple of them as ``optax.chain`` builds."""
    if _is_optax_state(x):
        return True
    return type(x) is tuple and bool(x) and all(_looks_optax(s) for s in x)


def _graph_references(root: Any, nnx: Any) -> tuple[list[str], list[str]]:
    """Paths of shared and cyclic references among NNX graph nodes (the state counts them once).

    Only graph nodes (``nnx.Pytree`` objects and ``nnx.Variable``) have identity in NNX;
    plain lists, dicts and tuples are walked but never "shared" (two equal empty tuples are
    one interned object, not a shared reference). Visited nodes are kept alive so that an
    ``id`` cannot be reused during the walk.
    """
    shared: list[str] = []
    cycles: list[str] = []
    first: dict[int, tuple[str, Any]] = {}
    stack: list[tuple[Any, str, frozenset]] = [(root, "", frozenset())]
    while stack:
        node, path, ancestors = stack.pop()
        nid = id(node)
        is_graph_node = isinstance(node, (nnx.Pytree, nnx.Variable))
        if nid in ancestors:
            cycles.append(f"{path or '(root)'} -> {first.get(nid, ('(root)',))[0] or '(root)'}")
            continue
        if is_graph_node:
            if nid in first:
                shared.append(f"{path} is {first[nid][0] or '(root)'}")
                continue
            first[nid] = (path, node)
        if isinstance(node, nnx.Variable):
            continue
        if isinstance(node, nnx.Pytree):
            items = [(k, v) for k, v in vars(node).items() if not k.startswith("_")]
        elif isinstance(node, Mapping):
            items = list(node.items())
        elif isinstance(node, (list, tuple)):
            items = list(enumerate(node))
        else:
            continue
        inner = ancestors | {nid} if is_graph_node or isinstance(node, (Mapping, list)) else ancestors
        for k, v in reversed(items):
            if isinstance(v, (nnx.Pytree, nnx.Variable, Mapping, list, tuple)):
                stack.append((v, f"{path}.{k}" if path else str(k), inner))
    return shared, cycles


class _Walker:
    def __init__(self) -> None:
        self.nnx = _nnx()
        self.out = Walk()

    # -- special nodes -------------------------------------------------------------
    def special(self, x: Any) -> bool:
        nnx = self.nnx
        if x is None or _is_optax_state(x):
            return True
        if nnx is not None and isinstance(x, (nnx.Variable, nnx.Pytree, nnx.State, nnx.GraphDef)):
            return True
        return False

    def visit(self, x: Any, path: tuple[str, ...], kind: str) -> None:
        nnx = self.nnx
        if nnx is not None:
            if isinstance(x, nnx.Variable):
                meta = x.get_metadata() if hasattr(x, "get_metadata") else {}
                value = x.get_value() if hasattr(x, "get_value") else x.value
                # inside an optimizer state a Param-typed variable is a moment, not a parameter
                own = "OptState" if kind == "OptState" else variable_kind(x, nnx)
                self.out.leaves.append(describe_leaf(value, path, own, type(x).__name__, _annotation(meta)))
                return
            if isinstance(x, nnx.GraphDef):
                self.graphdef(x, path)
                return
            if isinstance(x, nnx.Pytree):
                shared, cycles = _graph_references(x, nnx)
                where = ".".join(path) or type(x).__name__
                if shared:
                    self.out.notes.append(
                        f"{where}: {len(shared)} shared reference(s) counted once: "
                        + "; ".join(shared[:5])
                        + (" …" if len(shared) > 5 else "")
                    )
                if cycles:
                    self.out.notes.append(
                        f"{where}: {len(cycles)} cyclic reference(s) not followed: "
                        + "; ".join(cycles[:5])
                        + (" …" if len(cycles) > 5 else "")
                    )
                self.flat_state(nnx.state(x), path, kind)
                return
            if isinstance(x, nnx.State):
                self.flat_state(x, path, kind)
                return
        if x is None:
            self.out.leaves.append(describe_leaf(None, path, kind))
            return
        if _is_optax_state(x):
            kind = "OptState"
        self.pytree(x, path, kind, root=False)

    def flat_state(self, state: Any, prefix: tuple[str, ...], kind: str = "") -> None:
        for key_path, var in self.nnx.to_flat_state(state):
            self.visit(var, prefix + tuple(str(k) for k in key_path), kind)

    def graphdef(self, g: Any, path: tuple[str, ...]) -> None:
        node_types: Counter = Counter()
        for n in g.nodes:
            t = getattr(n, "type", None)
            name = getattr(t, "__name__", str(t))
            if type(n).__name__ == "VariableDef":
                kind = name
                for fam in ("Param", "BatchStat", "RngState", "OptState"):
                    cls = getattr(self.nnx, fam, None)
                    if isinstance(t, type) and cls is not None and issubclass(t, cls):
                        kind = fam
                self.out.leaves.append(Leaf(path + (f"variable{n.index}",), kind, name, status="graphdef"))
            elif name not in ("GenericPytree",):
                node_types[name] += 1
        kinds = ", ".join(f"{k} ×{v}" for k, v in node_types.most_common())
        self.out.notes.append(
            f"{'.'.join(path) or 'GraphDef'}: graph definition only ({kinds}); "
            "it holds no arrays, so shapes and bytes come with its State"
        )

    def pytree(self, x: Any, prefix: tuple[str, ...], kind: str, root: bool) -> None:
        import jax

        cycle = _container_cycle(x)
        if cycle is not None:
            raise ValueError(
                f"the tree is cyclic: {cycle or '(root)'} contains itself; JAX cannot flatten it"
            )
        linen = root and _is_linen_vars(x)
        if linen:
            self.out.source = "Linen variables"
        flat, _ = jax.tree_util.tree_flatten_with_path(x, is_leaf=lambda y: y is not x and self.special(y))
        for key_path, leaf in flat:
            path = prefix + tuple(_key_str(k) for k in key_path)
            k = kind
            if linen and key_path:
                k = LINEN_COLLECTIONS.get(_key_str(key_path[0]), _key_str(key_path[0]))
            if leaf is x or not self.special(leaf):
                self.out.leaves.append(describe_leaf(leaf, path, k))
            else:
                self.visit(leaf, path, k)


def _container_cycle(root: Any) -> str | None:
    """Path of a list/tuple/dict that contains itself, or None. Checked before JAX flattens,
    because recursing into a cycle inside JAX's C++ flattening leaves the interpreter's
    recursion accounting broken for the rest of the process."""
    stack: list[tuple[Any, str, frozenset]] = [(root, "", frozenset())]
    while stack:
        node, path, ancestors = stack.pop()
        if isinstance(node, dict):
            items = node.items()
        elif isinstance(node, (list, tuple)):
            items = enumerate(node)
        else:
            continue
        if id(node) in ancestors:
            return path
        inner = ancestors | {id(node)}
        for k, v in items:
            if isinstance(v, (dict, list, tuple)):
                stack.append((v, f"{path}.{k}" if path else str(k), inner))
    return None


def _is_linen_vars(x: Any) -> bool:
    if not isinstance(x, Mapping) or not x:
        return False
    keys = set(map(str, x.keys()))
    return "params" in keys and all(isinstance(v, Mapping) for v in x.values())


def walk(obj: Any) -> Walk:
    """Flatten ``obj`` into leaves with kinds; raises ``ValueError`` only for cyclic plain containers.

    Example:
        >>> [l.path_str for l in walk({"a": jnp.ones(3), "b": [1, 2]}).leaves]
        ['a', 'b.0', 'b.1']
    """
    w = _Walker()
    nnx = w.nnx
    if nnx is not None and isinstance(obj, nnx.Pytree):
        w.out.source = f"NNX {type(obj).__name__}"
        w.visit(obj, (), "")
    elif nnx is not None and isinstance(obj, nnx.State):
        w.out.source = "nnx.State"
        w.visit(obj, (), "")
    elif nnx is not None and isinstance(obj, nnx.GraphDef):
        w.out.source = "nnx.GraphDef"
        w.visit(obj, (), "")
    elif nnx is not None and isinstance(obj, nnx.Variable):
        w.out.source = f"NNX {type(obj).__name__}"
        w.visit(obj, (), "")
    elif _looks_optax(obj):
        w.out.source = "Optax state"
        w.pytree(obj, (), "OptState", root=False)
    else:
        w.pytree(obj, (), "", root=True)
    opaque = [l.path_str for l in w.out.leaves if l.status == "opaque"]
    if opaque:
        types = Counter(l.type_name for l in w.out.leaves if l.status == "opaque")
        w.out.notes.append(
            f"{len(opaque)} opaque leaf/leaves ({', '.join(f'{t} ×{n}' for t, n in types.most_common(5))}): "
            "not arrays and not registered pytree nodes, shown without shape or bytes"
        )
    deleted = [l.path_str for l in w.out.leaves if l.status == "deleted"]
    if deleted:
        w.out.notes.append(
            f"{len(deleted)} deleted array(s) (donated or freed; shape and dtype only): "
            + ", ".join(deleted[:5])
            + (" …" if len(deleted) > 5 else "")
        )
    traced = [l for l in w.out.leaves if l.status == "traced"]
    if traced:
        w.out.notes.append(f"{len(traced)} traced value(s): abstract shapes inside a transformation, no data")
    return w.out
