"""Text and HTML for comparing two profile reports (``jaxmagic.compare``, ``%jaxdiff``)."""

from __future__ import annotations

from typing import Any

from jaxmagic._format import fmt_bytes, fmt_count, fmt_seconds
from jaxmagic.render import html as H
from jaxmagic.render import text as T

_HEAD = ["function", "status", "compiles", "compile time", "device time", "FLOPs", "temp memory"]
TEXT_ROWS = 40


def _pair(pair: tuple[Any, Any], fmt: Any, status: str = "changed") -> str:
    a, b = pair
    if a is None and b is None:
        return "n/a"
    left = "—" if status == "appeared" else fmt(a)
    right = "—" if status == "vanished" else fmt(b)
    if status != "changed":
        return f"{left} → {right}"
    text = f"{left} → {right}"
    if a and b is not None and a != b:
        text += f" ×{b / a:.2f}"
    return text


def _cells(c: Any) -> list[str]:
    return [
        c.name + (" (op)" if c.kind == "eager" else ""),
        c.status,
        f"{c.compiles[0]} → {c.compiles[1]}",
        _pair(c.compile_s, fmt_seconds, c.status),
        _pair(c.device_s, fmt_seconds, c.status),
        _pair(c.flops, fmt_count, c.status),
        _pair(c.temp_bytes, fmt_bytes, c.status),
    ]


def _head(report: Any) -> list[str]:
    a, b = report.labels
    return [
        f"Profile comparison · {report.summary()}",
        f"wall {_pair(report.wall_s, fmt_seconds)} · compile {_pair(report.compile_s, fmt_seconds)} · "
        f"compiles {report.compiles[0]} → {report.compiles[1]} ({a} → {b})",
    ]


def _counts(rows: list[tuple[str, int, int]], limit: int = 8) -> str:
    if not rows:
        return "unchanged"
    text = ", ".join(f"{k} {a} → {b}" for k, a, b in rows[:limit])
    return text + (f", … {len(rows) - limit} more" if len(rows) > limit else "")


def _hlo_rows(report: Any) -> list[tuple[str, list[str]]]:
    """Per function with HLO on either side: (name, [fusions, instructions, ops, collectives])."""
    out = []
    a_label, b_label = report.labels
    for c in report.changes:
        h = c.hlo_changes
        if h is None:
            if c.hlo[0] is not None or c.hlo[1] is not None:
                side = a_label if c.hlo[0] is not None else b_label
                out.append((c.name, [f"HLO only in {side}", "", "", ""]))
            continue
        coll = _counts(h["collectives"])
        if h["collective_bytes"][0] != h["collective_bytes"][1]:
            coll += (
                f" ({fmt_bytes(h['collective_bytes'][0])} → {fmt_bytes(h['collective_bytes'][1])} per device)"
            )
        out.append(
            (
                c.name,
                [
                    "{} → {}".format(*h["fusions"]),
                    "{} → {}".format(*h["instructions"]),
                    _counts(h["ops"]),
                    coll if h["collectives"] or any(h["collective_bytes"]) else "none",
                ],
            )
        )
    return out


_HLO_HEAD = ["function", "fusions", "instructions", "ops changed (A → B)", "collectives"]


def _reasons(report: Any) -> list[tuple[str, str]]:
    return [(c.name, r) for c in report.changes for r in c.new_reasons]


def diff_text(report: Any, *, width: int = 100) -> str:
    """The comparison as plain text, largest impact first."""
    lines = _head(report)
    lines += [T.wrap(f"note: {n}", width=width) for n in report.notes]
    rows = [_cells(c) for c in report.changes[:TEXT_ROWS]]
    if rows:
        lines += ["", T.table(_HEAD, rows, max_col=40)]
    if len(report.changes) > TEXT_ROWS:
        lines.append(f"… {len(report.changes) - TEXT_ROWS} more functions (to_dict() has them all)")
    if hlo := _hlo_rows(report):
        lines += ["", "Optimized HLO (--hlo reports; instructions by kind, fused ones included)"]
        for name, (fusions, count, ops, coll) in hlo:
            if not count:
                lines.append(f"  {name}: {fusions}")
                continue
            lines.append(f"  {name}: fusions {fusions} · instructions {count} · collectives {coll}")
            lines.append(T.wrap(f"ops: {ops}", width=width, first="    ", indent="      "))
    reasons = _reasons(report)
    if reasons:
        lines += ["", f"New cache-miss reasons in {report.labels[1]}"]
        lines += [T.wrap(f"{name}: {r}", width=width, first="  • ", indent="    ") for name, r in reasons]
    return "\n".join(lines)


def diff_html(report: Any) -> str:
    """The comparison as self-contained HTML (sortable by impact)."""
    head = _head(report)
    parts = [f"<h3>{H.esc(head[0])}</h3>", f"<div class='jm-muted'>{H.esc(head[1])}</div>"]
    parts += [f"<div class='jm-insight jm-sev-info'>{H.esc(n)}</div>" for n in report.notes]
    kind = {"appeared": "warn", "vanished": "info", "changed": ""}
    rows = []
    for c in report.changes:
        cells = _cells(c)
        rows.append(
            [
                (f"<code>{H.esc(cells[0])}</code>", c.impact),
                H.badge(c.status, kind[c.status]),
                H.esc(cells[2]),
                H.esc(cells[3]),
                H.esc(cells[4]),
                H.esc(cells[5]),
                H.esc(cells[6]),
            ]
        )
    if rows:
        parts.append(H.table(_HEAD, rows, sortable=True))
    if hlo := _hlo_rows(report):
        parts.append("<h4>Optimized HLO <span class='jm-muted'>(--hlo reports)</span></h4>")
        parts.append(
            H.table(
                _HLO_HEAD,
                [[f"<code>{H.esc(name)}</code>", *(H.esc(c) for c in cells)] for name, cells in hlo],
                cls="jm-hlo-diff",
            )
        )
    reasons = _reasons(report)
    if reasons:
        parts.append(f"<h4>New cache-miss reasons in {H.esc(report.labels[1])}</h4>")
        parts += [f"<div class='jm-insight'><code>{H.esc(n)}</code>: {H.esc(r)}</div>" for n, r in reasons]
    return H.document("".join(parts), sortable=True)
