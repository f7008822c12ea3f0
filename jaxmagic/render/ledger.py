"""Text and HTML for the session compile ledger (``%jaxcompiles``)."""

from __future__ import annotations

from typing import Any

from jaxmagic._format import fmt_seconds
from jaxmagic.render import html as H
from jaxmagic.render import text as T

_HEAD = ["site", "function", "compiles", "total", "trace", "lower", "compile", "persistent cache"]
_NUMERIC = (2, 3, 4, 5, 6)
TEXT_ROWS = 40  # function rows in text; HTML shows more, to_dict() all
HTML_ROWS = 200


def _cache_cell(outcomes: dict[str, int]) -> str:
    return ", ".join(f"{n} {o}" for o, n in sorted(outcomes.items(), key=lambda kv: -kv[1]))


def _rows(report: Any, limit: int) -> tuple[list[tuple[Any, Any, bool]], int]:
    """``(site, function row, first of its site)`` for the costliest rows, and how many were cut."""
    rows, total = [], sum(len(s.functions) for s in report.sites)
    for site in report.sites:
        for i, f in enumerate(site.functions):
            if len(rows) >= limit:
                return rows, total - len(rows)
            rows.append((site, f, i == 0))
    return rows, 0


def _head_lines(report: Any) -> list[str]:
    return [
        f"Compile ledger · {report.summary()}",
        f"trace {fmt_seconds(report.trace_s)} · lower {fmt_seconds(report.lower_s)} · "
        f"backend compile {fmt_seconds(report.backend_s)} · saved by the persistent cache "
        f"{fmt_seconds(report.saved_s)}",
    ]


def ledger_text(report: Any, *, width: int = 100) -> str:
    """The ledger as plain text at ``width`` columns."""
    lines = _head_lines(report)
    if not report.count:
        lines.append("no compiles recorded" + (f" since In[{report.since}]" if report.since else ""))
        return "\n".join(lines + [f"note: {n}" for n in report.notes])
    rows, cut = _rows(report, TEXT_ROWS)
    body = [
        [
            site.site if first else "",
            f.name,
            str(f.count),
            fmt_seconds(f.total_s),
            fmt_seconds(f.trace_s),
            fmt_seconds(f.lower_s),
            fmt_seconds(f.backend_s),
            _cache_cell(f.outcomes),
        ]
        for site, f, first in rows
    ]
    lines += ["", T.table(_HEAD, body, numeric=_NUMERIC, max_col=36)]
    if cut:
        lines.append(f"… {cut} more rows (to_dict() has them all)")
    if report.fixes:
        lines += ["", "Fixes (largest saving first)"]
        for fix in report.fixes:
            lines.append(
                T.wrap(
                    f"{fix.action} — saves {fmt_seconds(fix.saves_s)}",
                    width=width,
                    first="  • ",
                    indent="    ",
                )
            )
            lines.append(T.wrap(fix.why, width=width, indent="    "))
    lines += [T.wrap(f"note: {n}", width=width) for n in report.notes]
    return "\n".join(lines)


def ledger_html(report: Any) -> str:
    """The ledger as self-contained HTML (sortable table, fixes, notes)."""
    head = _head_lines(report)
    parts = [f"<h3>{H.esc(head[0])}</h3>", f"<div class='jm-muted'>{H.esc(head[1])}</div>"]
    if not report.count:
        parts.append("<div>no compiles recorded</div>")
    else:
        rows, cut = _rows(report, HTML_ROWS)
        total = report.total_s or 1.0
        body = [
            [
                (f"<code>{H.esc(site.site)}</code>", site.total_s),
                f"<code>{H.esc(f.name)}</code>",
                (H.esc(f.count), f.count),
                (H.bar(f.total_s / total, width_px=60) + " " + H.esc(fmt_seconds(f.total_s)), f.total_s),
                (H.esc(fmt_seconds(f.trace_s)), f.trace_s),
                (H.esc(fmt_seconds(f.lower_s)), f.lower_s),
                (H.esc(fmt_seconds(f.backend_s)), f.backend_s),
                H.badge(_cache_cell(f.outcomes), "ok" if "hit" in f.outcomes else ""),
            ]
            for site, f, _ in rows
        ]
        parts.append(H.table(_HEAD, body, numeric=_NUMERIC, sortable=True))
        if cut:
            parts.append(f"<div class='jm-muted'>… {cut} more rows (to_dict() has them all)</div>")
    if report.fixes:
        parts.append("<h4>Fixes (largest saving first)</h4>")
        parts += [
            f"<div class='jm-insight jm-sev-info'><code>{H.esc(f.action)}</code> saves "
            f"<b>{H.esc(fmt_seconds(f.saves_s))}</b> <span class='jm-muted'>· {H.esc(f.why)}</span></div>"
            for f in report.fixes
        ]
    parts += [f"<div class='jm-muted'>note: {H.esc(n)}</div>" for n in report.notes]
    return H.document("".join(parts), sortable=True)
