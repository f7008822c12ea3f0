"""Text and HTML for :class:`~jaxmagic.shardings.report.ShardingReport`: mesh, N-D shard grids
(two dimensions drawn, the others as facets), per-device bytes and the table of leaves."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from jaxmagic._format import fmt_bytes, shape_str
from jaxmagic.render import html as H
from jaxmagic.render import text as T

if TYPE_CHECKING:
    from jaxmagic.shardings.layout import ArrayLayout
    from jaxmagic.shardings.report import ShardingReport

MAX_FACETS = 8
MAX_DEVICE_ROWS = 64
MAX_LEAF_ROWS = 500


def device_ranges(ids: Sequence[int]) -> str:
    """``[0, 1, 2, 3, 8]`` -> ``0-3,8``: compact labels for many replicas."""
    ids = sorted(ids)
    out, start, prev = [], None, None
    for i in ids + [None]:
        if start is None:
            start = prev = i
        elif i is not None and i == prev + 1:
            prev = i
        else:
            out.append(f"{start}" if start == prev else f"{start}-{prev}")
            start = prev = i
    return ",".join(out)


@dataclass(frozen=True)
class Grid:
    """One facet of an array drawn over two dimensions: devices in every (row, col) block."""

    row_dim: int | None
    col_dim: int | None
    row_blocks: list[tuple[int, int]]
    col_blocks: list[tuple[int, int]]
    cells: list[list[list[int]]]
    shards: list[list[int]]
    facet: dict[int, tuple[int, int]]


def _dims(layout: ArrayLayout, dims: Sequence[int]) -> tuple[int | None, int | None]:
    if len(dims) == 0:
        return None, None
    if len(dims) == 1:
        return None, dims[0]
    return dims[0], dims[1]


def facets(layout: ArrayLayout, dims: Sequence[int]) -> list[dict[int, tuple[int, int]]]:
    """Every combination of blocks along the dimensions not drawn in the grid."""
    other = [d for d in range(layout.rank) if d not in dims]
    choices = [layout.blocks(d) for d in other]
    return [dict(zip(other, combo)) for combo in itertools.product(*choices)]


def grid(layout: ArrayLayout, dims: Sequence[int], facet: dict[int, tuple[int, int]] | None = None) -> Grid:
    """Which devices hold each block of ``layout`` along ``dims`` within one ``facet``."""
    rdim, cdim = _dims(layout, dims)
    facet = facet if facet is not None else (facets(layout, dims)[0] if layout.rank else {})
    rows = layout.blocks(rdim) if rdim is not None else [(0, 1)]
    cols = layout.blocks(cdim) if cdim is not None else [(0, 1)]
    rpos = {b: i for i, b in enumerate(rows)}
    cpos = {b: i for i, b in enumerate(cols)}
    cells: list[list[list[int]]] = [[[] for _ in cols] for _ in rows]
    shards = [[-1 for _ in cols] for _ in rows]
    sid = layout.shard_ids
    for i, dev in enumerate(layout.device_ids):
        if any((int(layout.starts[i, d]), int(layout.stops[i, d])) != blk for d, blk in facet.items()):
            continue
        r = rpos[(int(layout.starts[i, rdim]), int(layout.stops[i, rdim]))] if rdim is not None else 0
        c = cpos[(int(layout.starts[i, cdim]), int(layout.stops[i, cdim]))] if cdim is not None else 0
        cells[r][c].append(int(dev))
        shards[r][c] = int(sid[i])
    return Grid(rdim, cdim, rows, cols, cells, shards, facet)


def _rng(b: tuple[int, int]) -> str:
    return f"[{b[0]}:{b[1]}]"


def _dim_label(layout: ArrayLayout, d: int | None) -> str:
    if d is None:
        return "-"
    axes = layout.spec[d] if layout.spec is not None else ()
    split = (
        f" split by {'×'.join(repr(a) for a in axes)}"
        if axes
        else (" not split" if layout.spec is not None else "")
    )
    return f"dim {d} (size {layout.shape[d]}{split})"


def _facet_label(facet: dict[int, tuple[int, int]]) -> str:
    return ", ".join(f"dim {d} {_rng(b)}" for d, b in facet.items())


def grid_text(layout: ArrayLayout, dims: Sequence[int]) -> str:
    out = []
    rdim, cdim = _dims(layout, dims)
    if layout.rank == 0:
        out.append("scalar: every device holds the value")
    else:
        out.append(f"grid: rows = {_dim_label(layout, rdim)}, cols = {_dim_label(layout, cdim)}")
    all_facets = facets(layout, dims) if layout.rank else [{}]
    for k, facet in enumerate(all_facets[:MAX_FACETS]):
        g = grid(layout, dims, facet)
        if len(all_facets) > 1 or facet:
            out.append(f"facet {k + 1}/{len(all_facets)}: {_facet_label(facet)}")
        headers = [""] + [_rng(b) if cdim is not None else "" for b in g.col_blocks]
        rows = []
        for r, rb in enumerate(g.row_blocks):
            rows.append([_rng(rb) if rdim is not None else ""] + [device_ranges(c) for c in g.cells[r]])
        out.append(T.indent(T.table(headers, rows), "  "))
    if len(all_facets) > MAX_FACETS:
        out.append(f"… {len(all_facets) - MAX_FACETS} more facets (the explorer widget shows them all)")
    return "\n".join(out)


def _layout_line(a: ArrayLayout) -> str:
    per = a.device_bytes()
    return (
        f"shard {shape_str(a.shard_shape, a.dtype)} = {fmt_bytes(int(per.max()) if len(per) else 0)} per device · "
        f"{a.num_shards} distinct shard(s) · each held by {a.replication} device(s)"
    )


def _device_bytes_text(report: ShardingReport, width: int) -> str:
    totals = report.device_bytes()
    peak = max(totals.values(), default=0)
    bar_w = max(10, min(40, width - 40))
    rows = []
    for d, b in list(totals.items())[:MAX_DEVICE_ROWS]:
        n = int(round(bar_w * b / peak)) if peak else 0
        rows.append([d, fmt_bytes(b), "█" * n])
    out = T.table(["device", "bytes", ""], rows, numeric=(0, 1), max_col=bar_w + 2)
    if len(totals) > MAX_DEVICE_ROWS:
        out += f"\n… {len(totals) - MAX_DEVICE_ROWS} more devices"
    return out


def sharding_text(report: ShardingReport, *, width: int = 100) -> str:
    out = [f"ShardingReport {report.summary()}"]
    for m in report.meshes:
        out.append(f"mesh: {m.describe()}")
    if len(report.arrays) == 1 and not report.skipped:
        a = report.arrays[0]
        out.append(f"{a.name}: {a.type_str} · {a.spec_text} · {fmt_bytes(a.nbytes)} in total")
        out.append(_layout_line(a))
        out.append(grid_text(a, report.grid_dims(a)))
        rows = []
        per = a.device_bytes()
        sid = a.shard_ids
        for i, d in enumerate(a.device_ids[:MAX_DEVICE_ROWS]):
            idx = ", ".join(_rng(x) for x in a.index_of(d))
            rows.append(
                [
                    d,
                    a.mesh.process_of(d),
                    f"[{idx}]",
                    shape_str(a.shard_shape_of(i), a.dtype),
                    fmt_bytes(int(per[i])),
                    int(sid[i]),
                ]
            )
        out += [
            "",
            T.table(["device", "process", "index", "shard", "bytes", "shard id"], rows, numeric=(0, 1, 4, 5)),
        ]
        if len(a.device_ids) > MAX_DEVICE_ROWS:
            out.append(f"… {len(a.device_ids) - MAX_DEVICE_ROWS} more devices")
        return "\n".join(out)
    out += [
        "",
        f"per-device bytes (imbalance max/mean = {report.imbalance():.2f}):",
        _device_bytes_text(report, width),
    ]
    rows = []
    for a, k in list(zip(report.arrays, report.kinds or [""] * len(report.arrays)))[:MAX_LEAF_ROWS]:
        per = a.device_bytes()
        rows.append(
            [
                a.name + (" *" if a.name in report.edited else ""),
                k or "-",
                a.type_str,
                a.spec_text,
                shape_str(a.shard_shape, a.dtype),
                fmt_bytes(int(per.max()) if len(per) else 0),
                f"×{a.replication}",
            ]
        )
    out += [
        "",
        T.table(
            ["path", "kind", "type", "spec", "shard", "per device", "replicas"],
            rows,
            numeric=(5,),
            max_col=max(24, width // 2),
        ),
    ]
    if len(report.arrays) > MAX_LEAF_ROWS:
        out.append(f"… {len(report.arrays) - MAX_LEAF_ROWS} more arrays")
    if report.edited:
        out.append("* re-laid-out with an edited spec (what-if; no data moved)")
    if report.skipped:
        out += ["", f"not placed on devices ({len(report.skipped)}):"]
        out += [f"  - {p}: {r}" for p, r in report.skipped[:20]]
        if len(report.skipped) > 20:
            out.append(f"  … {len(report.skipped) - 20} more")
    return "\n".join(out)


# -- HTML ---------------------------------------------------------------------------------
def shard_color(shard: int) -> str:
    """A translucent hue per shard: readable over light and dark backgrounds (text colour inherited)."""
    if shard < 0:
        return "transparent"
    return f"hsla({(shard * 137.508) % 360:.0f},70%,55%,.33)"


def grid_html(layout: ArrayLayout, dims: Sequence[int], *, max_facets: int = MAX_FACETS) -> str:
    rdim, cdim = _dims(layout, dims)
    all_facets = facets(layout, dims) if layout.rank else [{}]
    parts = [
        f'<div class="jm-muted">rows: {H.esc(_dim_label(layout, rdim))} · cols: {H.esc(_dim_label(layout, cdim))}</div>'
    ]
    for facet in all_facets[:max_facets]:
        g = grid(layout, dims, facet)
        head = (
            "<tr><th></th>"
            + "".join(f"<th>{H.esc(_rng(b)) if cdim is not None else ''}</th>" for b in g.col_blocks)
            + "</tr>"
        )
        body = []
        for r, rb in enumerate(g.row_blocks):
            cells = []
            for c, cb in enumerate(g.col_blocks):
                devs = g.cells[r][c]
                title = f"devices {device_ranges(devs)}; rows {_rng(rb)} cols {_rng(cb)}"
                cells.append(
                    f'<td style="background:{shard_color(g.shards[r][c])}" title="{H.esc(title)}" '
                    f'data-devices="{H.esc(",".join(map(str, devs)))}">{H.esc(device_ranges(devs))}'
                    f"<small>{'device' if len(devs) == 1 else 'replicas'}</small></td>"
                )
            body.append(f"<tr><th>{H.esc(_rng(rb)) if rdim is not None else ''}</th>{''.join(cells)}</tr>")
        cap = f'<div class="jm-muted">{H.esc(_facet_label(facet))}</div>' if facet else ""
        parts.append(f'<div class="jm-facet">{cap}<table class="jm-grid">{head}{"".join(body)}</table></div>')
    if len(all_facets) > max_facets:
        parts.append(
            f'<p class="jm-muted">… {len(all_facets) - max_facets} more facets: the explorer widget '
            "(<code>.explore()</code>) steps through them all.</p>"
        )
    return "".join(parts)


def device_bars_html(report: ShardingReport) -> str:
    totals = report.device_bytes()
    peak = max(totals.values(), default=0)
    mesh = report.mesh
    rows = []
    for d, b in totals.items():
        proc = mesh.process_of(d) if mesh and d in mesh.device_ids else "-"
        rows.append(
            [
                (str(d), d),
                (str(proc), proc if proc != "-" else -1),
                (H.esc(fmt_bytes(b)), b),
                H.bar(b / peak if peak else 0, width_px=220),
            ]
        )
    return H.table(
        ["device", "process", "bytes", ""], rows, numeric=(0, 1, 2), sortable=True, cls="jm-devbytes"
    )


def mesh_html(report: ShardingReport) -> str:
    parts = []
    for m in report.meshes:
        axes = "".join(
            f"<tr><td><code>{H.esc(n)}</code></td><td class='num'>{s}</td></tr>"
            for n, s in zip(m.axis_names, m.axis_sizes)
        )
        parts.append(
            f"<div><b>mesh</b> {H.esc(m.describe())}"
            f"<table><thead><tr><th>axis</th><th class='num'>size</th></tr></thead><tbody>{axes}</tbody></table></div>"
        )
    return "".join(parts)


def array_html(a: ArrayLayout, dims: Sequence[int]) -> str:
    per = a.device_bytes()
    sid = a.shard_ids
    rows = []
    for i, d in enumerate(a.device_ids[:MAX_DEVICE_ROWS]):
        idx = ", ".join(_rng(x) for x in a.index_of(d))
        rows.append(
            [
                (str(d), d),
                str(a.mesh.process_of(d)),
                f"<code>[{H.esc(idx)}]</code>",
                f"<code>{H.esc(shape_str(a.shard_shape_of(i), a.dtype))}</code>",
                (H.esc(fmt_bytes(int(per[i]))), int(per[i])),
                (str(int(sid[i])), int(sid[i])),
            ]
        )
    more = (
        f'<p class="jm-muted">… {len(a.device_ids) - MAX_DEVICE_ROWS} more devices</p>'
        if len(a.device_ids) > MAX_DEVICE_ROWS
        else ""
    )
    return (
        f"<div><code>{H.esc(a.name)}</code> <code>{H.esc(a.type_str)}</code> · <code>{H.esc(a.spec_text)}</code> · "
        f"{H.esc(fmt_bytes(a.nbytes))} in total</div><div>{H.esc(_layout_line(a))}</div>"
        + grid_html(a, dims)
        + H.details(
            f"<b>Shards per device</b> ({len(a.device_ids)})",
            H.table(
                ["device", "process", "index", "shard", "bytes", "shard id"],
                rows,
                numeric=(0, 1, 4, 5),
                sortable=True,
            )
            + more,
            open=len(a.device_ids) <= 16,
        )
    )


def sharding_html(report: ShardingReport) -> str:
    parts = [
        f"<h3>{H.esc(report.name)} <span class='jm-muted'>· {H.esc(report.source)}</span></h3>",
        mesh_html(report),
    ]
    if len(report.arrays) == 1 and not report.skipped:
        a = report.arrays[0]
        parts.append(array_html(a, report.grid_dims(a)))
        return H.document("".join(parts), sortable=True)
    parts.append(
        '<div class="jm-totals">'
        f'<span class="jm-stat">arrays <b>{len(report.arrays)}</b></span>'
        f'<span class="jm-stat">logical bytes <b>{H.esc(fmt_bytes(report.logical_bytes))}</b></span>'
        f'<span class="jm-stat">max per device <b>{H.esc(fmt_bytes(max(report.device_bytes().values(), default=0)))}</b></span>'
        f'<span class="jm-stat">imbalance max/mean <b>{report.imbalance():.2f}</b></span></div>'
    )
    parts += ["<h4>Bytes per device</h4>", device_bars_html(report)]
    rows = []
    for a, k in list(zip(report.arrays, report.kinds or [""] * len(report.arrays)))[:MAX_LEAF_ROWS]:
        per = a.device_bytes()
        mx = int(per.max()) if len(per) else 0
        rows.append(
            [
                f"<code>{H.esc(a.name)}</code>"
                + (" " + H.badge("edited", "info") if a.name in report.edited else ""),
                H.esc(k or "-"),
                f"<code>{H.esc(a.type_str)}</code>",
                f"<code>{H.esc(a.spec_text)}</code>",
                f"<code>{H.esc(shape_str(a.shard_shape, a.dtype))}</code>",
                (H.esc(fmt_bytes(mx)), mx),
                (f"×{a.replication}", a.replication),
            ]
        )
    more = (
        f'<p class="jm-muted">… {len(report.arrays) - MAX_LEAF_ROWS} more arrays (<code>to_dict()</code> has all)</p>'
        if len(report.arrays) > MAX_LEAF_ROWS
        else ""
    )
    parts.append(
        H.details(
            f"<b>Arrays</b> ({len(report.arrays)})",
            H.table(
                ["path", "kind", "type", "spec", "shard", "per device", "replicas"],
                rows,
                numeric=(5, 6),
                sortable=True,
            )
            + more,
            open=len(report.arrays) <= 60,
        )
    )
    biggest = sorted(report.arrays, key=lambda a: -a.nbytes)[:3]
    if biggest:
        parts.append(
            H.details(
                "<b>Largest arrays on the mesh</b>",
                "".join(array_html(a, report.grid_dims(a)) for a in biggest),
            )
        )
    if report.skipped:
        items = "".join(f"<li><code>{H.esc(p)}</code>: {H.esc(r)}</li>" for p, r in report.skipped[:50])
        parts.append(f"<h4>Not placed on devices ({len(report.skipped)})</h4><ul>{items}</ul>")
    return H.document("".join(parts), sortable=True)
