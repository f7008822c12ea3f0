"""``jaxmagic.tree(obj)``: a structure summary of any tree, NNX/Linen/Optax state or checkpoint."""

from __future__ import annotations

import os
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Literal

from jaxmagic._format import fmt_bytes, fmt_count
from jaxmagic._result import Result
from jaxmagic.trees.leaves import Leaf

DEEP_AUTO_MAX_LEAVES = 256  # past this the treescope view is built only on request


@dataclass(frozen=True)
class Totals:
    """Leaf count, element count and bytes of a group of leaves (``None`` parts not counted)."""

    leaves: int = 0
    elements: int = 0
    bytes: int = 0

    def add(self, leaf: Leaf) -> Totals:
        return Totals(self.leaves + 1, self.elements + (leaf.size or 0), self.bytes + (leaf.nbytes or 0))

    def to_dict(self) -> dict[str, int]:
        return {"leaves": self.leaves, "elements": self.elements, "bytes": self.bytes}


@dataclass(frozen=True)
class Row:
    """One line of the table: a leaf, or (with ``depth``) a subtree folded into one line."""

    path: str
    kinds: tuple[str, ...]
    type_str: str
    totals: Totals
    spec: str | None = None
    num_devices: int | None = None
    status: str = ""
    sized: bool = True  # False for opaque/None leaves: no elements or bytes to show


@dataclass(frozen=True, repr=False)
class TreeSummary(Result):
    """Structure of a tree: leaves (after filters), totals per kind and per top-level entry."""

    name: str
    source: str
    leaves: tuple[Leaf, ...]
    total_leaves: int
    depth: int | None = None
    kind: str | None = None
    grep: str | None = None
    notes: tuple[str, ...] = ()
    deep: bool = False
    max_rows: int = 500
    deep_obj: Any = field(default=None, repr=False, compare=False)

    # -- aggregates -------------------------------------------------------------------
    @property
    def totals(self) -> Totals:
        t = Totals()
        for leaf in self.leaves:
            t = t.add(leaf)
        return t

    def _group(self, key) -> OrderedDict[str, Totals]:
        out: OrderedDict[str, Totals] = OrderedDict()
        for leaf in self.leaves:
            k = key(leaf)
            out[k] = out.get(k, Totals()).add(leaf)
        return out

    def by_kind(self) -> OrderedDict[str, Totals]:
        """Totals per variable kind (Param, BatchStat, RngState, OptState, ...; ``-`` for plain leaves)."""
        return self._group(lambda l: l.kind or "-")

    def by_top(self) -> OrderedDict[str, Totals]:
        """Totals per top-level entry (submodule, collection or key)."""
        return self._group(lambda l: l.path[0] if l.path else "(root)")

    def rows(self) -> list[Row]:
        """Leaves, or subtrees folded at ``depth`` path components."""
        if self.depth is None:
            return [
                Row(
                    l.path_str,
                    (l.kind,) if l.kind else (),
                    l.type_str,
                    Totals().add(l),
                    l.spec,
                    l.num_devices,
                    l.status,
                    l.shape is not None,
                )
                for l in self.leaves
            ]
        groups: OrderedDict[tuple[str, ...], list[Leaf]] = OrderedDict()
        for l in self.leaves:
            groups.setdefault(l.path[: self.depth], []).append(l)
        rows = []
        for key, ls in groups.items():
            t = Totals()
            for l in ls:
                t = t.add(l)
            kinds = tuple(OrderedDict.fromkeys(l.kind for l in ls if l.kind))
            if len(ls) == 1 and ls[0].path == key:
                l = ls[0]
                rows.append(
                    Row(
                        l.path_str, kinds, l.type_str, t, l.spec, l.num_devices, l.status, l.shape is not None
                    )
                )
            else:
                specs = {l.spec for l in ls}
                ndev = {l.num_devices for l in ls}
                rows.append(
                    Row(
                        ".".join(key) or "(root)",
                        kinds,
                        f"{len(ls)} leaves",
                        t,
                        specs.pop() if len(specs) == 1 else "(mixed)",
                        ndev.pop() if len(ndev) == 1 else None,
                    )
                )
        return rows

    # -- Result protocol --------------------------------------------------------------
    def summary(self) -> str:
        t = self.totals
        shown = (
            f"{t.leaves} of {self.total_leaves} leaves"
            if t.leaves != self.total_leaves
            else f"{t.leaves} leaves"
        )
        return f"{self.name}: {shown}, {fmt_count(t.elements)} elements, {fmt_bytes(t.bytes)}"

    def to_text(self, width: int = 100) -> str:
        from jaxmagic.render.tree import tree_text

        return tree_text(self, width=width)

    def to_html(self) -> str:
        from jaxmagic.render.tree import tree_html

        return tree_html(self)

    def deep_html(self) -> str:
        """The treescope view of the object (built now, whatever its size)."""
        from jaxmagic.render.tree import deep_view_html

        return deep_view_html(self.deep_obj)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "source": self.source,
            "filters": {"depth": self.depth, "kind": self.kind, "grep": self.grep},
            "total_leaves": self.total_leaves,
            "totals": self.totals.to_dict(),
            "by_kind": {k: v.to_dict() for k, v in self.by_kind().items()},
            "by_top": {k: v.to_dict() for k, v in self.by_top().items()},
            "leaves": [l.to_dict() for l in self.leaves],
            "notes": list(self.notes),
        }


def _deep_target(obj: Any, notes: list[str]) -> Any:
    """What treescope should draw: the object, or its NNX state when the graph has cycles."""
    if any("cyclic reference" in n for n in notes):
        from flax import nnx

        return nnx.state(obj)
    return obj


def tree(
    obj: Any,
    *,
    depth: int | None = None,
    kind: str | None = None,
    grep: str | None = None,
    step: int | None = None,
    name: str | None = None,
    deep: bool | Literal["auto"] = "auto",
    max_rows: int = 500,
) -> TreeSummary:
    """Summarise the structure of ``obj``: paths, kinds, shapes, bytes, shardings and totals.

    Args:
        obj: any PyTree, Flax NNX module / ``nnx.State`` / ``GraphDef``, Linen variables,
            Optax state, ``ShapeDtypeStruct`` tree, or the path of an Orbax checkpoint
            (read from metadata; no array is loaded).
        depth: fold the table at this many path components (``None``: every leaf).
        kind: keep only leaves of this kind (``Param``, ``BatchStat``, ``RngState``,
            ``OptState``, a Variable type name or a Linen collection; case-insensitive).
        grep: keep only leaves whose path matches this regular expression.
        step: checkpoint step to read when ``obj`` is a checkpoint manager folder.
        name: title for the report (the magic passes the expression).
        deep: include the treescope deep view in the HTML; ``"auto"`` does so for trees of
            at most 256 leaves (big models stay fast; call ``deep_html()`` on demand).
        max_rows: rows shown in text and HTML (``to_dict`` always has every leaf).

    Returns:
        A :class:`TreeSummary` (text, HTML and ``to_dict()``).

    Example:
        >>> jaxmagic.tree(model, kind="Param", depth=1)
    """
    from jaxmagic.trees.walk import walk

    if depth is not None and (not isinstance(depth, int) or depth < 0):
        raise ValueError(f"depth must be a non-negative integer, got {depth!r}")
    pattern = None
    if grep is not None:
        try:
            pattern = re.compile(grep, re.IGNORECASE)
        except re.error as e:
            raise ValueError(f"--grep {grep!r} is not a valid regular expression: {e}") from None
    notes: list[str] = []
    target = obj
    if isinstance(obj, (str, os.PathLike)):
        from jaxmagic.trees.checkpoint import read_checkpoint

        target, source, notes = read_checkpoint(obj, step=step)
        w = walk(target)
        w.source = source
    else:
        if step is not None:
            raise ValueError("step= applies only to an Orbax checkpoint path")
        w = walk(obj)
    notes = notes + w.notes
    leaves = w.leaves
    total = len(leaves)
    if kind is not None:
        kinds = list(OrderedDict.fromkeys(l.kind or "-" for l in leaves))
        keep = [l for l in leaves if kind.lower() in ((l.kind or "-").lower(), l.type_name.lower())]
        if not keep:
            raise ValueError(f"no leaves of kind {kind!r}; kinds in this tree: {', '.join(kinds) or 'none'}")
        leaves = keep
    if pattern is not None:
        leaves = [l for l in leaves if pattern.search(l.path_str)]
    deep_on = (total <= DEEP_AUTO_MAX_LEAVES) if deep == "auto" else bool(deep)
    return TreeSummary(
        name=name or getattr(type(obj), "__name__", "tree")
        if not isinstance(obj, (str, os.PathLike))
        else (name or str(obj)),
        source=w.source,
        leaves=tuple(leaves),
        total_leaves=total,
        depth=depth,
        kind=kind,
        grep=grep,
        notes=tuple(notes),
        deep=deep_on,
        max_rows=max_rows,
        deep_obj=_deep_target(target, notes),
    )
