"""The sharding explorer's plan mode: the inputs of one call, laid out on a mesh, and the plan
(``jaxmagic.plan``: per-device peak memory and the collectives XLA inserted) for that layout.

The call's positional arguments are turned into ``jax.ShapeDtypeStruct``s once, when the
report is made: every edit of a spec compiles the call again on those (nothing runs, no
data moves, and no object of the user's is touched, NNX modules included).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from jaxmagic.shardings.layout import ArrayLayout, layout_from_sharding


def _pretty(path: str) -> str:
    """``['l1']['kernel'].value`` -> ``.l1.kernel`` (a Variable's ``.value`` is not a path step)."""
    path = re.sub(r"\['([A-Za-z_]\w*)'\]", r".\1", path)
    return re.sub(r"\.(value|raw_value)$", "", path)


@dataclass(frozen=True)
class PlannedCall:
    """``fn(*args, **kwargs)`` with abstract positional arguments on ``mesh``.

    ``leaves`` names every array leaf: ``(argument index, key path, explorer name)``, e.g.
    ``(0, "['w1']", "params.w1")``.
    """

    fn: Callable
    args: tuple
    kwargs: dict
    mesh: Any
    label: str  # "step(params, x)"
    leaves: tuple[tuple[int, str, str], ...]
    notes: tuple[str, ...] = field(default=())
    label_file: Callable[[str], str | None] | None = None  # names the collectives' source files

    def abstract_args(self, layouts: Sequence[ArrayLayout]) -> list:
        """The arguments with every leaf laid out as ``layouts`` (by name) say."""
        import jax
        from jax.sharding import NamedSharding

        from jaxmagic.memories.plan import _map_arrays, _pspec

        by_name = {a.name: a for a in layouts}
        names = {(i, path): name for i, path, name in self.leaves}
        out = []
        for i, arg in enumerate(self.args):

            def leaf(path: str, x: Any, i: int = i) -> Any:
                name = names.get((i, path))
                if name is None or not hasattr(x, "shape"):
                    return x
                spec = _pspec(by_name[name].spec)
                return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=NamedSharding(self.mesh, spec))

            out.append(_map_arrays(arg, leaf))
        return out

    def plan(self, layouts: Sequence[ArrayLayout]) -> Any:
        """``jaxmagic.plan`` of the call for ``layouts`` (compiles, never runs)."""
        from jaxmagic.memories.plan import plan

        return plan(
            self.fn, *self.abstract_args(layouts), mesh=self.mesh, label_file=self.label_file, **self.kwargs
        )


def _mesh_of(args: Sequence[Any]) -> Any:
    import jax
    from jax.sharding import NamedSharding

    for x in jax.tree.leaves(args):
        s = getattr(x, "sharding", None)
        if isinstance(s, NamedSharding) and isinstance(s.mesh, jax.sharding.Mesh):
            return s.mesh
    return None


def planned_call(
    fn: Callable,
    args: Sequence[Any],
    kwargs: Mapping[str, Any] | None = None,
    *,
    mesh: Any = None,
    specs: Sequence[Any] | None = None,
    label_file: Callable[[str], str | None] | None = None,
) -> tuple[PlannedCall, list[ArrayLayout]]:
    """The call with abstract arguments, and the layout of each of their array leaves.

    ``specs`` as for ``jaxmagic.plan``; without them every leaf keeps its own sharding when it
    is a ``NamedSharding`` on ``mesh`` and is replicated otherwise (a note says which).
    ``mesh`` defaults to the mesh of the arguments' first ``NamedSharding``; ``label_file``
    names source files for the collectives' lines (``In[5]`` for a notebook cell).
    """
    import jax
    from jax.sharding import NamedSharding, PartitionSpec

    from jaxmagic._calls import bound_arguments, name_of
    from jaxmagic.memories.plan import _abstract, _is_spec, _map_arrays

    if not callable(fn):
        raise TypeError(f"fn must be callable, not {type(fn).__name__}")
    args = tuple(args)
    kwargs = dict(kwargs or {})
    mesh = mesh if mesh is not None else _mesh_of(args)
    if mesh is None:
        raise ValueError("plan mode lays the arguments out on a mesh: pass mesh=... (--mesh)")
    if isinstance(specs, str) or (specs is not None and _is_spec(specs)):
        specs = (specs,)
    abstract = _abstract(args, mesh, specs)  # SpecError for a spec the mesh cannot take
    named = [n for n, _ in bound_arguments(fn, args, {})][: len(args)]
    arg_names = [n or f"arg{i}" for i, n in enumerate(named + [None] * (len(args) - len(named)))]
    leaves, layouts, moved = [], [], []
    placed = []
    for i, arg in enumerate(abstract):

        def visit(path: str, x: Any, i: int = i) -> Any:
            if not (hasattr(x, "shape") and hasattr(x, "dtype")):
                return x
            name = arg_names[i] + _pretty(path)
            sharding = x.sharding
            if not (isinstance(sharding, NamedSharding) and sharding.mesh == mesh):
                moved.append(name)
                sharding = NamedSharding(mesh, PartitionSpec())
            leaves.append((i, path, name))
            layouts.append(layout_from_sharding(sharding, x.shape, x.dtype, name=name))
            return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)

        placed.append(_map_arrays(arg, visit))
    if not leaves:
        raise ValueError(f"{name_of(fn)}'s positional arguments hold no arrays to lay out")
    notes = ()
    if moved:
        shown = ", ".join(moved[:4]) + (" …" if len(moved) > 4 else "")
        notes = (f"not laid out on this mesh, planned replicated (P()): {shown}",)
    label = f"{name_of(fn)}({', '.join(arg_names)})"
    call = PlannedCall(fn, tuple(placed), kwargs, mesh, label, tuple(leaves), notes, label_file)
    return call, layouts
