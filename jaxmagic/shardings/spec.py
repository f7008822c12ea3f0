"""PartitionSpec parsing and validation against a mesh and an array shape (no JAX import).

A spec is normalised to one tuple of mesh-axis names per array dimension: ``()`` means the
dimension is not split, ``("data",)`` split over one axis, ``("data", "model")`` over two
(the first axis is the major one, as in JAX). Every way a spec can be wrong raises
:class:`SpecError` with a message that names the dimension and the reason.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

Spec = tuple[tuple[str, ...], ...]


class SpecError(ValueError):
    """A PartitionSpec that cannot describe a layout for this mesh and shape."""


def _entry(item: Any, dim: int) -> tuple[str, ...]:
    if item is None:
        return ()
    if isinstance(item, str):
        name = item.strip().strip("'\"")
        if name in ("", "None", "_", "-"):
            return ()
        return (name,)
    if isinstance(item, (tuple, list)):
        out: list[str] = []
        for sub in item:
            out.extend(_entry(sub, dim))
        return tuple(out)
    if type(item).__name__ == "UnconstrainedSingleton":
        raise SpecError(f"dimension {dim}: P.UNCONSTRAINED does not describe a concrete layout")
    raise SpecError(
        f"dimension {dim}: {item!r} is not a mesh axis name (use a string, a tuple of strings or None)"
    )


def _split_top(text: str) -> list[str]:
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
            if depth < 0:
                raise SpecError(f"unbalanced parentheses in spec {text!r}")
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if depth != 0:
        raise SpecError(f"unbalanced parentheses in spec {text!r}")
    parts.append("".join(cur))
    return parts


_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*$")


def _parse_text_entry(text: str, dim: int) -> tuple[str, ...]:
    t = text.strip()
    if t.startswith(("(", "[")) and t.endswith((")", "]")):
        t = t[1:-1]
    names = [n.strip().strip("'\"") for n in re.split(r"[,+\s]+", t) if n.strip()]
    names = [n for n in names if n not in ("None", "_", "-")]
    for n in names:
        if not _NAME.match(n):
            raise SpecError(f"dimension {dim}: {n!r} is not a valid mesh axis name")
    return tuple(names)


def parse_spec_text(text: str) -> Spec:
    """Parse ``"P('data', None)"``, ``"data, None"`` or ``"(data, model), None"`` into a spec.

    Example:
        >>> parse_spec_text("P(('data', 'model'), None)")
        (('data', 'model'), ())
    """
    t = text.strip()
    m = re.match(r"^(?:P|PartitionSpec|jax\.sharding\.PartitionSpec)\s*\((.*)\)$", t, re.S)
    if m:
        t = m.group(1)
    if not t.strip():
        return ()
    parts = _split_top(t)
    if parts and not parts[-1].strip() and len(parts) > 1:  # trailing comma: P('a',)
        parts = parts[:-1]
    return tuple(_parse_text_entry(p, i) for i, p in enumerate(parts))


def parse_spec_entries(texts: Sequence[str]) -> Spec:
    """One text per dimension, as typed in the explorer's spec editor, into a spec: each names
    the mesh axes splitting that dimension (``"data"``, ``"data, model"``; empty or ``None``:
    not split).

    Example:
        >>> parse_spec_entries(["data, model", ""])
        (('data', 'model'), ())
    """
    if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
        raise SpecError(f"expected one text per dimension, got {texts!r}")
    return tuple(_parse_text_entry(t, i) for i, t in enumerate(texts))


def normalize_spec(spec: Any) -> Spec:
    """Any spec form (PartitionSpec, tuple/list of entries, text) -> tuple of axis-name tuples."""
    if spec is None:
        return ()
    if isinstance(spec, str):
        return parse_spec_text(spec)
    for attr in ("unreduced", "reduced"):
        if getattr(spec, attr, None):
            raise SpecError(f"specs with {attr} axes ({sorted(getattr(spec, attr))}) are not supported")
    try:
        items = list(spec)
    except TypeError:
        raise SpecError(f"{spec!r} is not a PartitionSpec") from None
    return tuple(_entry(item, i) for i, item in enumerate(items))


def validate_spec(spec: Any, axis_sizes: Mapping[str, int], shape: Sequence[int]) -> Spec:
    """Normalise ``spec`` and check it against the mesh axes and the array shape.

    Returns one entry per dimension (padded with ``()``, as JAX pads a short spec).
    Raises :class:`SpecError` for an unknown or repeated axis, a spec longer than the
    array's rank, or a dimension that the axes do not divide evenly.

    Example:
        >>> validate_spec(P("data", None), {"data": 2, "model": 4}, (8, 16))
        (('data',), ())
    """
    norm = normalize_spec(spec)
    rank = len(shape)
    if len(norm) > rank:
        raise SpecError(
            f"spec has {len(norm)} entries but the array has rank {rank} "
            f"(shape {tuple(int(d) for d in shape)})"
        )
    seen: dict[str, int] = {}
    for dim, axes in enumerate(norm):
        for ax in axes:
            if ax not in axis_sizes:
                valid = ", ".join(repr(a) for a in axis_sizes) or "none"
                raise SpecError(f"dimension {dim}: unknown mesh axis {ax!r}; the mesh has axes {valid}")
            if ax in seen:
                where = "twice in" if seen[ax] == dim else f"in dimensions {seen[ax]} and"
                raise SpecError(
                    f"mesh axis {ax!r} is used {where} dimension {dim}; "
                    "each axis may split at most one dimension once"
                )
            seen[ax] = dim
    for dim, axes in enumerate(norm):
        parts = math.prod(axis_sizes[a] for a in axes)
        if parts > 1 and int(shape[dim]) % parts:
            label = " × ".join(f"{a}={axis_sizes[a]}" for a in axes)
            raise SpecError(f"dimension {dim} has size {int(shape[dim])}, not divisible by {parts} ({label})")
    return norm + ((),) * (rank - len(norm))


def spec_str(spec: Spec | None) -> str:
    """``(('data',), ())`` -> ``P('data', None)``; ``None`` -> ``—`` (no named spec)."""
    if spec is None:
        return "—"
    items = []
    for axes in spec:
        if not axes:
            items.append("None")
        elif len(axes) == 1:
            items.append(repr(axes[0]))
        else:
            items.append("(" + ", ".join(repr(a) for a in axes) + ")")
    return f"P({', '.join(items)})"
