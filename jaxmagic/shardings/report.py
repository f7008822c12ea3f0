"""``jaxmagic.sharding(obj)``: where every array of an object lives on a device mesh."""

from __future__ import annotations

import functools
from collections import Counter, OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from jaxmagic._format import fmt_bytes
from jaxmagic._result import Result
from jaxmagic.shardings.layout import ArrayLayout, layout_from_sharding, layout_from_spec
from jaxmagic.shardings.mesh import MeshInfo


@dataclass(frozen=True, repr=False)
class ShardingReport(Result):
    """Layouts of one array or of every array in a tree, with per-device totals.

    ``arrays[i]`` is the :class:`ArrayLayout` of the leaf at ``arrays[i].name`` and
    ``kinds[i]`` its kind (Param, OptState, ...). Leaves without a placement (host arrays,
    abstract values without sharding, opaque objects, deleted arrays) are in ``skipped``
    with the reason. ``dims`` picks the two array dimensions drawn as the grid.
    """

    name: str
    source: str
    arrays: tuple[ArrayLayout, ...]
    kinds: tuple[str, ...] = ()
    skipped: tuple[tuple[str, str], ...] = ()
    dims: tuple[int, int] | None = None
    edited: tuple[str, ...] = ()
    # plan mode: the call whose inputs these are (shardings.planned.PlannedCall) and its
    # PlanReport for the layouts as they are now (re-planned on every edit)
    call: Any = None
    plan: Any = None

    # -- aggregates (cached: the report is frozen, and the explorer asks on every edit) --------
    @functools.cached_property
    def _meshes(self) -> tuple[MeshInfo, ...]:
        count = Counter(a.mesh for a in self.arrays)
        return tuple(m for m, _ in count.most_common())

    @property
    def meshes(self) -> list[MeshInfo]:
        """Distinct meshes, most used first."""
        return list(self._meshes)

    @property
    def mesh(self) -> MeshInfo | None:
        return self._meshes[0] if self._meshes else None

    @functools.cached_property
    def _device_totals(self) -> tuple[tuple[int, int], ...]:
        totals: dict[int, int] = {}
        for m in self._meshes:
            for d in m.device_ids:
                totals.setdefault(d, 0)
        for a in self.arrays:
            for d, b in zip(a.device_ids, a.device_bytes().tolist()):
                totals[d] = totals.get(d, 0) + int(b)
        return tuple(sorted(totals.items()))

    def device_bytes(self) -> OrderedDict[int, int]:
        """Total bytes per device id over every array (devices of every mesh, sorted)."""
        return OrderedDict(self._device_totals)

    def imbalance(self) -> float:
        """max / mean of per-device bytes (1.0 is perfectly even)."""
        vals = [b for _, b in self._device_totals]
        mean = sum(vals) / len(vals) if vals else 0
        return max(vals) / mean if mean else 1.0

    @property
    def logical_bytes(self) -> int:
        return sum(a.nbytes for a in self.arrays)

    def grid_dims(self, layout: ArrayLayout) -> tuple[int, int] | tuple[int] | tuple[()]:
        """The dimensions drawn as (rows, cols) for ``layout`` (honours ``dims`` when it fits)."""
        r = layout.rank
        if r == 0:
            return ()
        if r == 1:
            return (0,)
        if self.dims is not None and max(self.dims) < r:
            return tuple(self.dims)  # type: ignore[return-value]
        split = [d for d in range(r) if len(layout.blocks(d)) > 1]
        chosen = (split + [d for d in range(r) if d not in split])[:2]
        return tuple(sorted(chosen))  # type: ignore[return-value]

    # -- what-if ----------------------------------------------------------------------
    def with_spec(self, name: str, spec: Any) -> ShardingReport:
        """The same report with leaf ``name`` re-laid-out by ``spec`` on its mesh (no data moves).

        Raises :class:`SpecError` for a spec the mesh and shape cannot take; ``KeyError``
        for an unknown leaf name. In plan mode the call is planned again for the new layout
        (compiled, not run); an error doing so (``NotTraceableError``, ...) is raised too.
        """
        for i, a in enumerate(self.arrays):
            if a.name == name:
                new = layout_from_spec(
                    a.shape,
                    a.dtype if a.itemsize else "float32",
                    a.mesh,
                    spec,
                    name=a.name,
                    itemsize=a.itemsize,
                )
                arrays = self.arrays[:i] + (new,) + self.arrays[i + 1 :]
                return self.with_layouts(arrays, tuple(dict.fromkeys(self.edited + (name,))))
        raise KeyError(f"no array named {name!r}; arrays: {', '.join(a.name for a in self.arrays[:10])}")

    def with_layouts(self, arrays: tuple[ArrayLayout, ...], edited: tuple[str, ...]) -> ShardingReport:
        """The same report with ``arrays`` (and in plan mode their plan)."""
        plan = self.call.plan(arrays) if self.call is not None else None
        return replace(self, arrays=arrays, edited=edited, plan=plan)

    # -- Result protocol --------------------------------------------------------------
    def summary(self) -> str:
        mesh = self.mesh
        where = f" on {mesh.describe()}" if mesh else ""
        if len(self.arrays) == 1 and not self.skipped:
            a = self.arrays[0]
            return f"{self.name}: {a.type_str} {a.spec_text}{where}"
        return (
            f"{self.name}: {len(self.arrays)} arrays, {fmt_bytes(self.logical_bytes)}{where}, "
            f"max {fmt_bytes(max(self.device_bytes().values(), default=0))} per device"
        )

    def to_text(self, width: int = 100) -> str:
        from jaxmagic.render.sharding import sharding_text

        text = sharding_text(self, width=width)
        if self.plan is not None:
            from jaxmagic.render.memory import plan_text

            notes = "".join(f"\nnote: {n}" for n in self.call.notes)
            text += f"\n\nplan of {self.call.label} for this layout{notes}\n" + plan_text(
                self.plan, width=width
            )
        return text

    def to_html(self) -> str:
        from jaxmagic.render.sharding import sharding_html

        html = sharding_html(self)
        if self.plan is not None:
            from jaxmagic.render.memory import plan_html

            html += plan_html(self.plan, notes=self.call.notes)
        return html

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "source": self.source,
            "meshes": [m.to_dict() for m in self.meshes],
            "arrays": [
                dict(a.to_dict(), kind=k) for a, k in zip(self.arrays, self.kinds or [""] * len(self.arrays))
            ],
            "skipped": [{"path": p, "reason": r} for p, r in self.skipped],
            "device_bytes": {str(d): b for d, b in self.device_bytes().items()},
            "imbalance": self.imbalance(),
            "edited": list(self.edited),
            "plan": self.plan.to_dict() if self.plan is not None else None,
        }

    def explore(self) -> Any:
        """An interactive explorer widget over this report (anywidget)."""
        from jaxmagic.widgets.sharding import ShardingExplorer

        return ShardingExplorer(self)


# ---------------------------------------------------------------------------------------
def _check_dims(dims: Sequence[int] | None) -> tuple[int, int] | None:
    if dims is None:
        return None
    dims = tuple(int(d) for d in dims)
    if len(dims) != 2 or dims[0] == dims[1] or min(dims) < 0:
        raise ValueError(f"dims must be two different non-negative dimensions, got {dims}")
    return dims  # type: ignore[return-value]


def _leaf_layouts(obj: Any) -> tuple[list[ArrayLayout], list[str], list[tuple[str, str]], str]:
    from jaxmagic.trees.walk import walk

    w = walk(obj)
    arrays, kinds, skipped = [], [], []
    for leaf in w.leaves:
        path = leaf.path_str
        if leaf.status == "deleted":
            skipped.append((path, "deleted array (donated or freed): it holds no memory"))
        elif leaf.status == "traced":
            skipped.append((path, "traced value: abstract inside a transformation, no placement yet"))
        elif leaf.shape is None:
            skipped.append((path, f"{leaf.type_name}: not an array"))
        elif leaf.sharding is None or not hasattr(leaf.sharding, "devices_indices_map"):
            skipped.append((path, "no sharding (host value or abstract value without sharding)"))
        else:
            try:
                arrays.append(
                    layout_from_sharding(
                        leaf.sharding, leaf.shape, leaf.dtype or "float32", name=path, itemsize=leaf.itemsize
                    )
                )
                kinds.append(leaf.kind)
            except Exception as e:  # keep the rest of the tree visible
                skipped.append((path, f"{type(e).__name__}: {e}"))
    return arrays, kinds, skipped, w.source


def _compiled_tree(obj: Any) -> dict[str, Any] | None:
    if type(obj).__name__ == "Lowered":
        raise TypeError("a Lowered function has no final shardings yet: call .compile() on it first")
    if type(obj).__name__ != "Compiled" or not hasattr(obj, "input_shardings"):
        return None
    import jax

    args, kwargs = obj.args_info
    ins = jax.tree.map(
        lambda i, s: jax.ShapeDtypeStruct(i.shape, i.dtype, sharding=s),
        (args, kwargs),
        tuple(obj.input_shardings),
    )
    return {"inputs": ins[0], **({"kwargs": ins[1]} if ins[1] else {}), "outputs": obj.out_info}


def sharding(
    obj: Any = None,
    *,
    mesh: Any = None,
    spec: Any = None,
    shape: Sequence[int] | None = None,
    dtype: Any = "float32",
    dims: Sequence[int] | None = None,
    name: str | None = None,
    fn: Any = None,
    args: Sequence[Any] = (),
    kwargs: dict[str, Any] | None = None,
    specs: Sequence[Any] | None = None,
    label_file: Any = None,
) -> ShardingReport:
    """Show where every shard of ``obj`` lives on its devices; computes, never moves data.

    Args:
        obj: a ``jax.Array``; a ``NamedSharding`` (with ``shape``); a ``Mesh``,
            ``AbstractMesh`` or ``{"axis": size}`` dict (with ``shape`` and ``spec``); a
            ``PartitionSpec`` (with ``mesh`` and ``shape``); any PyTree / NNX module or
            state; or a ``Compiled`` function (its input and output shardings).
        mesh: the mesh for a spec given as ``obj`` or ``spec``.
        spec: a ``PartitionSpec`` (or text such as ``"data, None"``) to lay ``shape`` out by.
        shape: the array shape when ``obj`` describes only a placement.
        dtype: element type for byte counts when only a shape is given.
        dims: the two array dimensions drawn as the grid (others become facets).
        name: title for the report (the magic passes the expression).
        fn, args, kwargs: plan mode (instead of ``obj``): the inputs of ``fn(*args, **kwargs)``
            laid out on ``mesh`` (by ``specs``, as for ``jaxmagic.plan``, or by their own
            shardings), with the call's plan (peak memory per device, collectives) for that
            layout; ``.explore()`` re-plans on every spec edit. Compiles only, runs nothing.
        specs: plan mode: one PartitionSpec (or pytree of specs) per positional argument.
        label_file: plan mode: names a source file for the collectives' lines (the magic
            passes one that turns a notebook cell's file into ``In[5]``).

    Returns:
        A :class:`ShardingReport`; ``.explore()`` gives the interactive widget.

    Raises:
        SpecError: the spec names an unknown or repeated axis, is longer than the rank, or
            does not divide a dimension.
        NotTraceableError: plan mode, and the call does not trace.

    Example:
        >>> jaxmagic.sharding(shape=(1024, 4096), mesh={"data": 64, "model": 8}, spec=P("data", "model"))
        >>> jaxmagic.sharding(fn=step, args=(params, x), mesh=mesh, specs=(None, P("data"))).explore()
    """
    import jax
    from jax.sharding import PartitionSpec

    d = _check_dims(dims)
    title = name or ""
    if fn is not None:
        if obj is not None or spec is not None or shape is not None:
            raise ValueError("plan mode takes fn=, args=, mesh= and specs=; not obj, spec= or shape=")
        from jaxmagic.shardings.planned import planned_call

        call, layouts = planned_call(fn, args, kwargs, mesh=mesh, specs=specs, label_file=label_file)
        report = ShardingReport(
            title or call.label, "call inputs", tuple(layouts), ("input",) * len(layouts), dims=d, call=call
        )
        return report.with_layouts(report.arrays, ())
    if specs is not None or args or kwargs:
        raise ValueError("args=, kwargs= and specs= are for plan mode: pass fn= as well")
    is_mesh = isinstance(obj, (jax.sharding.Mesh, jax.sharding.AbstractMesh, dict)) and (
        not isinstance(obj, dict) or (obj and all(isinstance(v, int) for v in obj.values()))
    )
    if isinstance(obj, PartitionSpec) or (obj is None and spec is not None):
        spec = obj if isinstance(obj, PartitionSpec) else spec
        if mesh is None or shape is None:
            raise ValueError("a PartitionSpec needs mesh= and shape= to describe a layout")
        lay = layout_from_spec(shape, dtype, mesh, spec, name=title or "array")
        return ShardingReport(title or "array", "PartitionSpec", (lay,), ("",), dims=d)
    if is_mesh and shape is not None:
        lay = layout_from_spec(shape, dtype, obj, spec, name=title or "array")
        return ShardingReport(title or "array", "Mesh", (lay,), ("",), dims=d)
    if isinstance(obj, jax.sharding.Sharding):
        if shape is None:
            raise ValueError(f"a {type(obj).__name__} needs shape= to describe a layout")
        lay = layout_from_sharding(obj, shape, dtype, name=title or "array")
        return ShardingReport(title or "array", type(obj).__name__, (lay,), ("",), dims=d)
    if spec is not None or shape is not None or mesh is not None:
        raise ValueError("mesh=, spec= and shape= apply only to a Mesh, a sharding or a PartitionSpec")
    if is_mesh and not isinstance(obj, dict):
        raise ValueError("a Mesh alone has no arrays: pass shape= and spec= to lay an array out on it")
    if isinstance(obj, jax.Array) and not isinstance(obj, jax.core.Tracer):
        if obj.is_deleted():
            raise ValueError(
                f"{title or 'the array'} was deleted (donated to a jitted call or freed); "
                "it has no shards left to show"
            )
        lay = layout_from_sharding(obj.sharding, obj.shape, obj.dtype, name=title or "array")
        return ShardingReport(title or "array", "jax.Array", (lay,), ("",), dims=d)
    if isinstance(obj, jax.core.Tracer):
        raise ValueError(
            "a traced value has no placement yet; inspect the concrete array outside the transformation"
        )
    compiled = _compiled_tree(obj)
    source_override = "compiled function" if compiled is not None else None
    arrays, kinds, skipped, source = _leaf_layouts(compiled if compiled is not None else obj)
    if not arrays and not skipped:
        raise ValueError(f"{title or type(obj).__name__} holds no arrays")
    return ShardingReport(
        title or type(obj).__name__,
        source_override or source,
        tuple(arrays),
        tuple(kinds),
        tuple(skipped),
        dims=d,
    )
