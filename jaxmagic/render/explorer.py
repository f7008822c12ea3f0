"""What the sharding explorer widget draws, computed and formatted here so the browser only draws.

Two plain-JSON views over a :class:`~jaxmagic.shardings.report.ShardingReport`:
:func:`report_view` (title, bytes per device, the table of arrays) changes only when a spec is
edited; :func:`array_view` (the selected array's grid, facet sliders, dimension pickers and spec
editor) changes on every selection, so it is cheap to rebuild. Every string is formatted by the
same helpers as the text and HTML faces (``jaxmagic._format``, ``render.sharding``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from jaxmagic._format import fmt_bytes, shape_str
from jaxmagic.render.sharding import _dim_label, _rng, device_ranges, grid, shard_color

if TYPE_CHECKING:
    from jaxmagic.shardings.layout import ArrayLayout
    from jaxmagic.shardings.report import ShardingReport


def _per_device(a: ArrayLayout) -> int:
    per = a.device_bytes()
    return int(per.max()) if len(per) else 0


def _array_row(a: ArrayLayout, kind: str, edited: bool) -> dict[str, Any]:
    return {
        "name": a.name,
        "label": a.name + (" *" if edited else ""),
        "edited": edited,
        "shape": list(a.shape),
        "kind": kind or "-",
        "type": a.type_str,
        "spec_text": a.spec_text,
        "shard": shape_str(a.shard_shape, a.dtype),
        "per_device": fmt_bytes(_per_device(a)),
    }


def report_view(report: ShardingReport, rows: dict[Any, Any] | None = None) -> dict[str, Any]:
    """Title, per-device bytes (raw and drawn) and one formatted row per array.

    ``rows`` (optional, owned by the caller) caches rows per layout object, so after a spec
    edit only the edited array's row is formatted again.
    """
    totals = report.device_bytes()
    peak = max(totals.values(), default=0)
    mesh = report.mesh
    kinds = report.kinds or ("",) * len(report.arrays)
    edited = set(report.edited)
    rows = {} if rows is None else rows
    table = []
    for a, k in zip(report.arrays, kinds):
        key = (id(a), k, a.name in edited)
        if key not in rows or rows[key][0] is not a:  # the layout is kept, so its id is not reused
            rows[key] = (a, _array_row(a, k, a.name in edited))
        table.append(rows[key][1])
    skipped = len(report.skipped)
    return {
        "title": report.name,
        "subtitle": f"· {report.source} · mesh {mesh.describe() if mesh else '-'}",
        "device_bytes": [[d, b] for d, b in totals.items()],
        "devices": [
            {
                "device": d,
                "label": f"device {d}",
                "bytes": fmt_bytes(b),
                "bar": f"{100 * b / peak if peak else 0:.1f}%",
            }
            for d, b in totals.items()
        ],
        "devices_note": f"imbalance max/mean {report.imbalance():.2f} · hover or click a device",
        "arrays": table,
        "skipped_note": f"{skipped} leaves not placed on devices (see the text view)" if skipped else "",
    }


def default_dims(report: ShardingReport, a: ArrayLayout) -> list[int]:
    """The dimensions drawn first: the report's choice (split dimensions first) as a list."""
    return list(report.grid_dims(a))


def fix_dims(a: ArrayLayout, new: Sequence[int], old: Sequence[int], default: Sequence[int]) -> list[int]:
    """Dimensions a picker asked for, made valid: picking the dimension the other picker shows
    swaps the two (as the old pair had them); anything out of range falls back to ``default``."""
    new, old = list(new), list(old)
    if len(new) == 2 and new[0] == new[1] and len(old) == 2:
        changed = 0 if new[0] != old[0] else 1
        new[1 - changed] = old[changed]
    valid = len(new) == min(2, a.rank) and all(0 <= d < a.rank for d in new) and len(set(new)) == len(new)
    return new if valid else list(default)


def _facet_blocks(
    a: ArrayLayout, dims: Sequence[int], picks: Sequence[int]
) -> list[tuple[int, list[tuple[int, int]], int]]:
    """Per dimension not drawn: its blocks and the picked one (clamped)."""
    other = [d for d in range(a.rank) if d not in dims]
    out = []
    for k, d in enumerate(other):
        blocks = a.blocks(d)
        pick = picks[k] if k < len(picks) else 0
        out.append((d, blocks, max(0, min(int(pick), len(blocks) - 1))))
    return out


def _grid_view(a: ArrayLayout, dims: Sequence[int], facet: dict[int, tuple[int, int]]) -> dict[str, Any]:
    g = grid(a, dims, facet)
    rdim, cdim = g.row_dim, g.col_dim
    per = a.device_bytes()
    pos = {d: i for i, d in enumerate(a.device_ids)}
    rows = []
    for r, rb in enumerate(g.row_blocks):
        cells = []
        for c in range(len(g.col_blocks)):
            devs = g.cells[r][c]
            nbytes = fmt_bytes(int(per[pos[devs[0]]])) if devs else ""
            label = device_ranges(devs)
            cells.append(
                {
                    "devices": devs,
                    "label": label,
                    "bytes": nbytes,
                    "color": shard_color(g.shards[r][c]),
                    "title": f"devices {label} · {nbytes} each",
                }
            )
        rows.append({"head": _rng(rb) if rdim is not None else "", "cells": cells})
    return {
        "col_heads": [_rng(b) if cdim is not None else "" for b in g.col_blocks],
        "rows": rows,
        "caption": f"rows: {_dim_label(a, rdim)} · cols: {_dim_label(a, cdim)}",
    }


def holds_column(report: ShardingReport, device: int) -> list[dict[str, Any]]:
    """Per array, the index range and bytes ``device`` holds (``held`` False: ``—``, nothing)."""
    out = []
    for a in report.arrays:
        try:
            i = a.device_ids.index(device)
        except ValueError:
            out.append({"text": "—", "held": False})
            continue
        idx = ", ".join(f"{s}:{e}" for s, e in zip(a.starts[i].tolist(), a.stops[i].tolist()))
        out.append({"text": f"[{idx}] {fmt_bytes(int(a.device_bytes()[i]))}", "held": True})
    return out


def array_view(
    report: ShardingReport,
    index: int,
    dims: Sequence[int],
    facet: Sequence[int] = (),
    pinned: int | None = None,
    draft: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The selected array as drawn: grid of one facet, pickers, sliders, spec editor values.

    ``dims`` must already be valid (see :func:`fix_dims`); ``facet`` picks one block per
    dimension not drawn; ``pinned`` adds the "device k holds" column; ``draft`` is what the
    user last typed into the spec editor (kept after an invalid spec).
    """
    a = report.arrays[index]
    sliders = _facet_blocks(a, dims, facet)
    chosen = {d: blocks[k] for d, blocks, k in sliders}
    spec = a.spec or ((),) * a.rank
    return {
        "index": index,
        "name": a.name,
        "type": a.type_str,
        "spec_text": a.spec_text,
        "note": f" · shard [{','.join(map(str, a.shard_shape))}] · {a.num_shards} distinct shards · "
        f"×{a.replication} replicas",
        "dims": list(dims),
        "dim_options": [f"dim {d} ({n})" for d, n in enumerate(a.shape)] if a.rank >= 2 else [],
        "facets": [
            {
                "dim": d,
                "index": k,
                "count": len(blocks),
                "label": f" dim {d} {_rng(blocks[k])} ({k + 1}/{len(blocks)})",
            }
            for d, blocks, k in sliders
        ],
        "facet": [k for _, _, k in sliders],
        "grid": _grid_view(a, dims, chosen),
        "mesh_axes": "mesh axes: "
        + ", ".join(f"{n}={s}" for n, s in zip(a.mesh.axis_names, a.mesh.axis_sizes)),
        "spec_inputs": list(draft) if draft is not None else [",".join(axes) for axes in spec],
        "pinned": pinned,
        "holds_head": f"device {pinned} holds" if pinned is not None else "",
        "holds": holds_column(report, pinned) if pinned is not None else [],
    }


def plan_view(report: ShardingReport) -> dict[str, Any]:
    """Plan mode: the call's plan for the layout shown, formatted as ``%jaxplan`` formats it
    (peak per device, the memory rows, the collectives table); ``{}`` outside plan mode."""
    from jaxmagic.render.memory import _COLL_HEAD, _ESTIMATE, _MEM_ROWS, _collective_rows, _donation_line

    p = report.plan
    if p is None:
        return {}
    coll = p.collectives
    return {
        "title": f"Plan of {report.call.label} for this layout",
        "subtitle": f"compiled only, nothing ran · {p.mesh or p.devices}",
        "peak": fmt_bytes(p.peak) if p.peak is not None else "n/a",
        "memory": [[label, fmt_bytes(p.memory[key])] for label, key in _MEM_ROWS] if p.memory else [],
        "donation": _donation_line(p),
        "collectives_title": (
            f"Collectives XLA inserted ({len(coll)}, {fmt_bytes(p.communication_bytes())} per device per call)"
            if coll
            else "No collectives: every device computes alone"
        ),
        "collectives_head": list(_COLL_HEAD),
        "collectives": _collective_rows(p),
        "collectives_numeric": [2, 4],  # group size, bytes: right-aligned
        "notes": list(report.call.notes) + [_ESTIMATE.format(backend=p.backend)],
    }
