"""Text and HTML for :class:`~jaxmagic.trees.summary.TreeSummary`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from jaxmagic._format import fmt_bytes, fmt_count
from jaxmagic.render import html as H
from jaxmagic.render import text as T

if TYPE_CHECKING:
    from jaxmagic.trees.summary import Totals, TreeSummary


def _filters(s: TreeSummary) -> str:
    parts = [f"{k}={v}" for k, v in (("depth", s.depth), ("kind", s.kind), ("grep", s.grep)) if v is not None]
    return ", ".join(parts)


def _has_sharding(s: TreeSummary) -> bool:
    return any(l.spec for l in s.leaves)


def _has_status(s: TreeSummary) -> bool:
    return any(l.status for l in s.leaves)


def _totals_rows(groups: dict[str, Totals], grand: Totals) -> list[list[Any]]:
    rows = []
    for k, t in groups.items():
        share = f"{100 * t.bytes / grand.bytes:.1f}%" if grand.bytes else "-"
        rows.append([k, t.leaves, fmt_count(t.elements), fmt_bytes(t.bytes), share])
    return rows


def tree_text(s: TreeSummary, *, width: int = 100) -> str:
    t = s.totals
    out = [
        f"TreeSummary {s.summary()}",
        f"source: {s.source}" + (f"   filters: {_filters(s)}" if _filters(s) else ""),
    ]
    out += [
        "",
        "by kind:",
        T.indent(
            T.table(
                ["kind", "leaves", "elements", "bytes", "share"],
                _totals_rows(s.by_kind(), t),
                numeric=(1, 2, 3, 4),
            ),
            "  ",
        ),
    ]
    top = s.by_top()
    if len(top) > 1 or s.depth is not None:
        out += [
            "",
            "by top-level entry:",
            T.indent(
                T.table(
                    ["entry", "leaves", "elements", "bytes", "share"],
                    _totals_rows(top, t),
                    numeric=(1, 2, 3, 4),
                ),
                "  ",
            ),
        ]
    sharded, status = _has_sharding(s), _has_status(s)
    headers = ["path", "kind", "type", "elements", "bytes"]
    if sharded:
        headers += ["sharding", "devices"]
    if status:
        headers += ["status"]
    rows = s.rows()
    body = []
    for r in rows[: s.max_rows]:
        row = [
            r.path,
            "/".join(r.kinds) or "-",
            r.type_str,
            fmt_count(r.totals.elements) if r.sized else "-",
            fmt_bytes(r.totals.bytes) if r.sized else "-",
        ]
        if sharded:
            row += [r.spec or "-", r.num_devices if r.num_devices is not None else "-"]
        if status:
            row += [r.status or "-"]
        body.append(row)
    numeric = (3, 4) + ((6,) if sharded else ())
    out += ["", T.table(headers, body, numeric=numeric, max_col=max(24, width // 2))]
    if len(rows) > s.max_rows:
        out.append(f"… {len(rows) - s.max_rows} more rows (narrow with --depth, --kind or --grep)")
    if s.notes:
        out += ["", "notes:"] + [T.wrap(n, width=width, first="  - ", indent="    ") for n in s.notes]
    return "\n".join(out)


def deep_view_html(obj: Any) -> str:
    """Treescope's collapsible view of ``obj`` (or a short reason when it cannot be drawn)."""
    try:
        import treescope

        return treescope.render_to_html(obj, roundtrip_mode=False, compressed=True)
    except Exception as e:  # a deep view is a bonus: never lose the summary over it
        return H.pre(f"treescope could not draw this object: {type(e).__name__}: {e}")


def _stat(label: str, value: str) -> str:
    return f'<span class="jm-stat">{H.esc(label)} <b>{H.esc(value)}</b></span>'


def _totals_table(groups: dict[str, Totals], grand: Totals, head: str) -> str:
    rows = []
    for k, t in groups.items():
        frac = t.bytes / grand.bytes if grand.bytes else 0.0
        rows.append(
            [
                H.esc(k),
                (str(t.leaves), t.leaves),
                (H.esc(fmt_count(t.elements)), t.elements),
                (H.esc(fmt_bytes(t.bytes)), t.bytes),
                (H.bar(frac, width_px=90) + f" {100 * frac:.1f}%", frac),
            ]
        )
    return H.table([head, "leaves", "elements", "bytes", "share"], rows, numeric=(1, 2, 3), sortable=True)


def tree_html(s: TreeSummary) -> str:
    t = s.totals
    head = (
        f'<h3>{H.esc(s.name)} <span class="jm-muted">· {H.esc(s.source)}</span></h3>'
        '<div class="jm-totals">'
        + _stat("leaves", f"{t.leaves}" + (f" of {s.total_leaves}" if t.leaves != s.total_leaves else ""))
        + _stat("elements", fmt_count(t.elements))
        + _stat("bytes", fmt_bytes(t.bytes))
        + (_stat("filters", _filters(s)) if _filters(s) else "")
        + "</div>"
    )
    parts = [head, "<h4>By kind</h4>", _totals_table(s.by_kind(), t, "kind")]
    top = s.by_top()
    if len(top) > 1 or s.depth is not None:
        parts += ["<h4>By top-level entry</h4>", _totals_table(top, t, "entry")]
    sharded, status = _has_sharding(s), _has_status(s)
    headers = (
        ["path", "kind", "type", "elements", "bytes"]
        + (["sharding", "devices"] if sharded else [])
        + (["status"] if status else [])
    )
    rows_all = s.rows()
    body = []
    for r in rows_all[: s.max_rows]:
        row = [
            f"<code>{H.esc(r.path)}</code>",
            H.esc("/".join(r.kinds) or "-"),
            f"<code>{H.esc(r.type_str)}</code>",
            (H.esc(fmt_count(r.totals.elements)) if r.sized else "-", r.totals.elements),
            (H.esc(fmt_bytes(r.totals.bytes)) if r.sized else "-", r.totals.bytes),
        ]
        if sharded:
            row += [
                f"<code>{H.esc(r.spec or '-')}</code>",
                (H.esc(r.num_devices if r.num_devices is not None else "-"), r.num_devices or 0),
            ]
        if status:
            row += [
                H.badge(r.status, "warn") if r.status in ("deleted", "opaque") else H.esc(r.status or "-")
            ]
        body.append(row)
    label = "Subtrees" if s.depth is not None else "Leaves"
    more = (
        (
            f'<p class="jm-muted">… {len(rows_all) - s.max_rows} more rows (narrow with --depth, --kind or --grep;'
            " <code>to_dict()</code> has every leaf)</p>"
        )
        if len(rows_all) > s.max_rows
        else ""
    )
    parts.append(
        H.details(
            f"<b>{label}</b> ({len(rows_all)})",
            H.table(headers, body, numeric=(3, 4) + ((6,) if sharded else ()), sortable=True) + more,
            open=len(rows_all) <= 60,
        )
    )
    if s.notes:
        parts.append("<h4>Notes</h4><ul>" + "".join(f"<li>{H.esc(n)}</li>" for n in s.notes) + "</ul>")
    if s.deep:
        parts.append(
            H.details("<b>Deep view</b> (treescope)", deep_view_html(s.deep_obj), open=False, cls="jm-deep")
        )
    else:
        parts.append(
            f'<p class="jm-muted">Deep view skipped for {s.total_leaves} leaves to keep this fast: '
            "<code>%jaxtree EXPR --deep</code> or <code>summary.deep_html()</code> draws it.</p>"
        )
    return H.document("".join(parts), sortable=True)
