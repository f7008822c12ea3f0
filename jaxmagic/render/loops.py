"""Text, HTML and the live widget's view for tracked loops (:class:`ProgressReport`).

The widget is the trainer's (``widgets/progress.js``): :func:`loop_view` fills the same
keys as :func:`~jaxmagic.render.training.progress_view`, formatted here, so the browser
only draws. Pure functions; inline SVG, no scripts.
"""

from __future__ import annotations

import math
from typing import Any

from jaxmagic._format import fmt_count, fmt_seconds
from jaxmagic.render import html as H
from jaxmagic.render import text as T
from jaxmagic.render.training import fmt_metric, progress_bar_html, sparkline, stats_html, svg_chart

_KIND = {"completed": "ok", "stopped": "warn", "running": "info"}
_KIND_TITLE = {"python": "", "scan": "scan", "fori_loop": "fori_loop", "tick": "loop"}


def _title(r: Any) -> str:
    kind = _KIND_TITLE.get(r.kind, r.kind)
    return f"{kind} {r.name}" if kind and kind != r.name else r.name


def _count(r: Any) -> str:
    return f"{r.unit} {r.done}" + (f" / {r.total}" if r.total is not None else "")


def _rate(r: Any) -> str:
    return fmt_count(r.steps_per_second) if math.isfinite(r.steps_per_second) else "n/a"


def _values(last: dict[str, float]) -> list[tuple[str, str]]:
    return [(k, fmt_metric(v)) for k, v in last.items()]


def loop_stats(r: Any) -> list[tuple[str, str]]:
    """``(label, value)`` pairs shown under the bar, formatted."""
    stats = [(f"{r.unit}s/s", _rate(r))]
    if r.status == "running":
        stats.append(("ETA", fmt_seconds(r.eta_seconds) if math.isfinite(r.eta_seconds) else "n/a"))
    stats.append(("elapsed", fmt_seconds(r.elapsed_seconds)))
    if r.first_step_seconds is not None:
        stats.append((f"first {r.unit}", fmt_seconds(r.first_step_seconds)))
    if r.compile_seconds is not None:
        stats.append(("compile", fmt_seconds(r.compile_seconds)))
    if r.every:
        stats.append(("reported every", f"{r.every} {r.unit}s"))
    if r.lanes > 1:
        stats.append(("vmapped lanes", str(r.lanes)))
    return stats + _values(r.last)


def loop_summary(r: Any) -> str:
    """The one-line ``repr`` body: ``loop: step 100 / 100, completed, 1.52k steps/s``."""
    return f"{_title(r)}: {_count(r)}, {r.status}, {_rate(r)} {r.unit}s/s"


def loop_line(r: Any, width: int = 100) -> str:
    """The terminal line: ``loop · step 37/100 [#######.............] 37% · 512 steps/s · ETA ...``."""
    bar_w = 20
    if r.total:
        filled = int(round(r.fraction * bar_w))
        head = (
            f"{r.unit} {r.done}/{r.total} [{'#' * filled}{'.' * (bar_w - filled)}] {r.fraction * 100:3.0f}%"
        )
    else:
        head = f"{r.unit} {r.done}"
    parts = [_title(r), head]
    if math.isfinite(r.steps_per_second):
        parts.append(f"{_rate(r)} {r.unit}s/s")
    if r.status == "running" and math.isfinite(r.eta_seconds):
        parts.append(f"ETA {fmt_seconds(r.eta_seconds)}")
    elif r.status != "running":
        parts.append(f"{r.status} in {fmt_seconds(r.elapsed_seconds)}")
    parts += [f"{k} {v}" for k, v in _values(r.last)]
    for c in r.children:
        parts.append(f"{c.name} {c.done}/{c.total}" if c.total is not None else f"{c.name} {c.done}")
    line = " · ".join(parts)
    return line if len(line) <= width else line[: width - 1] + "…"


def _child_row(c: Any) -> list[str]:
    return [
        c.name,
        f"{c.done}" + (f" / {c.total}" if c.total is not None else ""),
        str(c.passes),
        ", ".join(f"{k} {v}" for k, v in _values(c.last)) or "—",
    ]


_CHILD_HEADERS = ["nested loop", "step", "passes", "last values"]


def loop_text(r: Any, width: int = 100) -> str:
    """The full plain-text report: the line, the stats, one sparkline per logged value, the
    nested loops."""
    lines = [loop_line(r, width)]
    lines.append("  " + " · ".join(f"{k} {v}" for k, v in loop_stats(r)))
    if r.message:
        lines.append(T.wrap(r.message, width=width, indent="  ", first="  "))
    for name, (_, ys) in r.series.items():
        ok = [y for y in ys if math.isfinite(y)]
        if ok:
            lines.append(f"  {name:<12} {fmt_metric(ok[0]):>9} → {fmt_metric(ok[-1]):<9} {sparkline(ys, 40)}")
    if r.children:
        lines.append(T.indent(T.table(_CHILD_HEADERS, [_child_row(c) for c in r.children]), "  "))
    return "\n".join(lines)


def _chart(r: Any) -> str:
    series = [{"name": k, "x": list(s), "y": list(v)} for k, (s, v) in r.series.items()]
    return svg_chart(series, x_max=r.total, title=f"{r.name} values") if series else ""


def loop_html(r: Any) -> str:
    """The HTML report (also the static snapshot the live widget leaves when the loop ends)."""
    body = [f"<h3>{H.esc(_title(r))} {H.badge(r.status, _KIND.get(r.status, ''))}</h3>"]
    frac = r.fraction if r.total else (1.0 if r.status == "completed" else 0.0)
    body.append(progress_bar_html(frac, _count(r)))
    if r.message:
        body.append(f'<div class="jm-message">{H.esc(r.message)}</div>')
    body.append(stats_html(loop_stats(r)))
    body.append(_chart(r))
    if r.children:
        rows = [[H.esc(v) for v in _child_row(c)] for c in r.children]
        body.append(H.table(_CHILD_HEADERS, rows, numeric=[1, 2], cls="jm-metrics"))
    return H.document("".join(body))


def loop_view(r: Any, *, stoppable: bool = False) -> dict[str, Any]:
    """What the live widget draws, in the keys ``progress.js`` reads."""
    frac = r.fraction if r.total else 0.0
    pct = 0.0 if not math.isfinite(frac) else max(0.0, min(1.0, frac)) * 100
    return {
        "title": _title(r),
        "status": r.status,
        "status_kind": _KIND.get(r.status, "info"),
        "running": r.status == "running",
        "stoppable": stoppable,
        "percent": f"{pct:.1f}%",
        "aria": f"{pct:.0f}",
        "label": _count(r),
        "message": r.message,
        "stats": [list(s) for s in loop_stats(r)],
        "chart": _chart(r),
        "table": {"headers": _CHILD_HEADERS, "rows": [_child_row(c) for c in r.children]}
        if r.children
        else {"headers": [], "rows": []},
        "checkpoints": "",
    }
