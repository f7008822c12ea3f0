"""Text and HTML for training: ``History`` reports, the run summary table, and the static
snapshot the progress widget leaves behind. Pure functions; inline SVG, no scripts."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from jaxmagic._format import fmt_bytes, fmt_count, fmt_percent, fmt_seconds
from jaxmagic.render import html as H
from jaxmagic.render import text as T
from jaxmagic.render.flight import flight_html, flight_text, heatmap_html

_SPARK = "▁▂▃▄▅▆▇█"
_STATUS_KIND = {
    "completed": "ok",
    "stopped": "info",
    "interrupted": "warn",
    "diverged": "bad",
    "failed": "bad",
    "running": "info",
    "resumed": "info",
}
COLORS = ("#2f6fdc", "#e0730b", "#2a9d4b", "#b23fb5", "#c9302c", "#7a7a7a")


def fmt_metric(v: Any, digits: int = 4) -> str:
    """A metric value: floats to ``digits`` significant digits, non-finite or missing -> ``n/a``."""
    if v is None or (isinstance(v, (float, np.floating)) and not math.isfinite(v)):
        return "n/a"
    return f"{float(v):.{digits}g}" if isinstance(v, (float, np.floating)) else str(v)


def downsample(xs: np.ndarray, ys: np.ndarray, n: int = 300) -> tuple[np.ndarray, np.ndarray]:
    """At most ``n`` points: bucket means (keeps the curve's shape, drops NaNs)."""
    xs, ys = np.asarray(xs, np.float64), np.asarray(ys, np.float64)
    ok = np.isfinite(ys)
    xs, ys = xs[ok], ys[ok]
    if len(xs) <= n:
        return xs, ys
    edges = np.linspace(0, len(xs), n + 1).astype(int)
    return (
        np.array([xs[a:b].mean() for a, b in zip(edges[:-1], edges[1:]) if b > a]),
        np.array([ys[a:b].mean() for a, b in zip(edges[:-1], edges[1:]) if b > a]),
    )


def sparkline(ys: Sequence[float], width: int = 40) -> str:
    _, y = downsample(np.arange(len(ys)), np.asarray(ys, np.float64), width)
    if not len(y):
        return ""
    lo, hi = float(y.min()), float(y.max())
    span = hi - lo or 1.0
    return "".join(_SPARK[min(7, int((v - lo) / span * 7.999))] for v in y)


def svg_chart(
    series: Sequence[dict[str, Any]],
    *,
    width: int = 560,
    height: int = 180,
    x_max: float | None = None,
    title: str = "",
) -> str:
    """A line chart: each series ``{"name", "x", "y", "points": bool}``; shared axes, legend."""
    pad_l, pad_r, pad_t, pad_b = 48, 10, 16, 22
    data = [(s, *downsample(s["x"], s["y"])) for s in series]
    data = [d for d in data if len(d[1])]
    if not data:
        return (
            f'<svg class="jm-chart" width="{width}" height="{height}" role="img"><text x="10" y="20" '
            f'fill="currentColor" opacity=".6" font-size="11">no points yet</text></svg>'
        )
    xs = np.concatenate([d[1] for d in data])
    ys = np.concatenate([d[2] for d in data])
    # show the remaining way to the target, unless that would squash the curve to a sliver
    target = x_max if x_max and x_max <= 4 * max(float(xs.max()), 1.0) else 0
    x0, x1 = 0.0, float(max(xs.max(), target, 1))
    y0, y1 = float(ys.min()), float(ys.max())
    if y1 - y0 < 1e-12:
        y0, y1 = y0 - 0.5, y1 + 0.5
    pw, ph = width - pad_l - pad_r, height - pad_t - pad_b
    sx = lambda x: pad_l + (x - x0) / (x1 - x0) * pw  # noqa: E731
    sy = lambda y: pad_t + (1 - (y - y0) / (y1 - y0)) * ph  # noqa: E731
    parts = [
        f'<svg class="jm-chart" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'role="img" aria-label="{H.esc(title or "training curves")}" style="font-size:10px">'
    ]
    for frac in (0, 0.5, 1):
        yv = y0 + frac * (y1 - y0)
        yy = sy(yv)
        parts.append(
            f'<line x1="{pad_l}" x2="{width - pad_r}" y1="{yy:.1f}" y2="{yy:.1f}" '
            f'stroke="currentColor" stroke-opacity=".15"/>'
        )
        parts.append(
            f'<text x="{pad_l - 4}" y="{yy + 3:.1f}" text-anchor="end" fill="currentColor" '
            f'opacity=".7">{H.esc(fmt_metric(yv, 3))}</text>'
        )
    parts.append(f'<text x="{pad_l}" y="{height - 6}" fill="currentColor" opacity=".7">0</text>')
    parts.append(
        f'<text x="{width - pad_r}" y="{height - 6}" text-anchor="end" fill="currentColor" '
        f'opacity=".7">step {int(x1)}</text>'
    )
    legend_x = pad_l + 8
    for i, (s, x, y) in enumerate(data):
        color = s.get("color") or COLORS[i % len(COLORS)]
        pts = " ".join(f"{sx(a):.1f},{sy(b):.1f}" for a, b in zip(x, y))
        cls = H.esc(f"jm-series jm-series-{s['name']}")
        if s.get("points"):
            parts.append(
                f'<polyline class="{cls}" points="{pts}" fill="none" stroke="{color}" '
                f'stroke-width="1.2" stroke-dasharray="3 2"/>'
            )
            parts.extend(
                f'<circle cx="{sx(a):.1f}" cy="{sy(b):.1f}" r="2.6" fill="{color}"/>' for a, b in zip(x, y)
            )
        else:
            parts.append(
                f'<polyline class="{cls}" points="{pts}" fill="none" stroke="{color}" stroke-width="1.5"/>'
            )
        parts.append(
            f'<rect x="{legend_x}" y="4" width="10" height="3" fill="{color}"/>'
            f'<text x="{legend_x + 13}" y="9" fill="currentColor">{H.esc(s["name"])}</text>'
        )
        legend_x += 20 + 6 * len(s["name"])
    parts.append("</svg>")
    return "".join(parts)


def _series(history: Any) -> list[dict[str, Any]]:
    out = []
    steps = history.steps
    metrics = history.metrics
    if "loss" in metrics:
        out.append({"name": "loss", "x": steps, "y": metrics["loss"]})
    if history.evals and any("eval_loss" in e for e in history.evals):
        out.append(
            {
                "name": "eval_loss",
                "x": [e["step"] for e in history.evals],
                "y": [e.get("eval_loss", math.nan) for e in history.evals],
                "points": True,
            }
        )
    return out


def _table_rows(history: Any) -> tuple[list[str], list[list[Any]]]:
    """Epoch rows when there are epochs, else evaluation rows."""
    rows_src = history.epochs or history.evals
    if not rows_src:
        return [], []
    keys: list[str] = []
    for r in rows_src:
        for k in r:
            if k not in ("epoch", "step") and k not in keys and k != "lr":
                keys.append(k)
    first = "epoch" if history.epochs else "eval"
    headers = [first, "step", *keys]
    rows = []
    for i, r in enumerate(rows_src):
        rows.append(
            [r.get("epoch", i + 1) if history.epochs else i + 1, r["step"], *(r.get(k) for k in keys)]
        )
    return headers, rows


def run_summary_text(history: Any, width: int = 100) -> str:
    """The table printed when a run ends: per epoch (or per evaluation) metrics, then totals."""
    lines = []
    headers, rows = _table_rows(history)
    if rows:
        lines.append(
            T.table(
                headers,
                [[fmt_metric(v) if isinstance(v, float) else v for v in r] for r in rows[-20:]],
                numeric=range(len(headers)),
            )
        )
        if len(rows) > 20:
            lines.append(f"({len(rows) - 20} earlier rows not shown)")
    t = history._totals()
    lines.append(
        f"{history.last_step} steps · {fmt_count(t['steps_per_second'])} steps/s · "
        f"{fmt_count(t['examples_per_second'])} examples/s · train {fmt_seconds(t['train_seconds'])} · "
        f"compile {fmt_seconds(t['compile_seconds'])}"
        + (f" · MFU {fmt_percent(t['mfu'])}" if math.isfinite(t["mfu"]) else "")
        + (
            f" · data-wait {fmt_percent(t['data_wait_fraction'])}"
            if math.isfinite(t["data_wait_fraction"])
            else ""
        )
    )
    if history.checkpoints:
        c = history.checkpoints[-1]
        lines.append(f"checkpoints: {len(history.checkpoints)} saved, last at step {c['step']}: {c['path']}")
    return "\n".join(lines)


def history_text(history: Any, width: int = 100) -> str:
    lines = [f"History: {history.summary()}"]
    if history.message:
        lines.append(T.wrap(history.message, width=width, indent="  ", first="  "))
    metrics = history.metrics
    for name in ("loss", *[k for k in metrics if k != "loss"]):
        if name not in metrics:
            continue
        ys = metrics[name]
        ok = ys[np.isfinite(ys)]
        if not len(ok):
            continue
        lines.append(
            f"  {name:<12} {fmt_metric(float(ok[0])):>9} → {fmt_metric(float(ok[-1])):<9} {sparkline(ys, 40)}"
        )
    if history.divergence:
        from jaxmagic.train.divergence import summary_line

        lines.append(T.wrap(summary_line(history.divergence), width=width, indent="  ", first="  "))
    lines.append("")
    lines.append(run_summary_text(history, width))
    if history.flight.steps:
        lines.append(flight_text(history.flight, width=width))
    if history.compiles:
        comp = ", ".join(f"{c['what']} {fmt_seconds(c['seconds'])}" for c in history.compiles[:6])
        lines.append(T.wrap(f"compiled: {comp}", width=width))
    return "\n".join(lines)


def stats_html(items: Sequence[tuple[str, str]]) -> str:
    return (
        '<div class="jm-totals">'
        + "".join(f'<span class="jm-stat">{H.esc(k)} <b>{H.esc(v)}</b></span>' for k, v in items)
        + "</div>"
    )


def metrics_table_html(history: Any) -> str:
    headers, rows = _table_rows(history)
    if not rows:
        return ""
    cells = [[H.esc(fmt_metric(v)) if isinstance(v, float) else H.esc(v) for v in r] for r in rows]
    return H.table(headers, cells, numeric=range(len(headers)), cls="jm-metrics")


def checkpoints_html(history: Any) -> str:
    if not history.checkpoints:
        return ""
    rows = [
        [H.esc(c["step"]), H.esc(c.get("reason", "")), f"<code>{H.esc(c['path'])}</code>"]
        for c in history.checkpoints[-10:]
    ]
    return H.details(
        f"Checkpoints ({len(history.checkpoints)})",
        H.table(["step", "reason", "path"], rows, numeric=[0]),
        open=False,
    )


def progress_bar_html(fraction: float, label: str) -> str:
    pct = 0.0 if not math.isfinite(fraction) else max(0.0, min(1.0, fraction)) * 100
    return (
        f'<div class="jm-progress" role="progressbar" aria-valuenow="{pct:.0f}" aria-valuemin="0" '
        f'aria-valuemax="100"><div class="jm-progress-fill" style="width:{pct:.1f}%"></div></div>'
        f'<div class="jm-muted">{H.esc(label)}</div>'
    )


def history_html(history: Any, progress: Any = None) -> str:
    """The History report (also the static snapshot a finished progress widget leaves)."""
    t = history._totals()
    status = history.status
    head = f"<h3>Training {H.badge(status, _STATUS_KIND.get(status, ''))}</h3>"
    body = [head]
    if progress is not None:
        label = f"step {progress.step}" + (f" / {progress.target}" if progress.target else "")
        frac = progress.fraction if progress.target else 1.0
        body.append(progress_bar_html(frac, label))
    if history.message:
        body.append(f'<div class="jm-message">{H.esc(history.message)}</div>')
    stats = [
        ("steps", str(history.last_step)),
        ("steps/s", fmt_count(t["steps_per_second"])),
        ("examples/s", fmt_count(t["examples_per_second"])),
        ("train time", fmt_seconds(t["train_seconds"])),
        ("compile", fmt_seconds(t["compile_seconds"])),
    ]
    if math.isfinite(t["mfu"]):
        stats.append(("MFU", fmt_percent(t["mfu"])))
    if math.isfinite(t["data_wait_fraction"]):
        stats.append(("data wait", fmt_percent(t["data_wait_fraction"])))
    if history.flight.steps:
        stats.append(("memory peak", fmt_bytes(t["memory_peak_bytes"])))
    metrics = history.metrics
    if "loss" in metrics and len(metrics["loss"]):
        stats.append(("loss", fmt_metric(float(metrics["loss"][-1]))))
    if history.evals:
        stats.append(("eval_loss", fmt_metric(history.evals[-1].get("eval_loss"))))
    body.append(stats_html(stats))
    body.append(
        svg_chart(
            _series(history), x_max=progress.target if progress is not None and progress.target else None
        )
    )
    body.append(flight_html(history.flight))
    body.append(metrics_table_html(history))
    body.append(checkpoints_html(history))
    cfg = history.config
    if cfg:
        txt = (
            f"batch {cfg.get('batch_size')} · {cfg.get('steps_per_call')} steps per call · "
            f"{cfg.get('devices')} device(s) · data {cfg.get('data')}"
            + (" (on device)" if cfg.get("data_on_device") else "")
            + (
                f" · {cfg.get('dropped_per_epoch')} examples/epoch dropped (partial batch)"
                if cfg.get("dropped_per_epoch")
                else ""
            )
        )
        body.append(f'<div class="jm-muted">{H.esc(txt)}</div>')
    return H.document("".join(body))


_LIVE = ("starting", "compiling", "training", "evaluating", "saving", "running")
LIVE_TABLE_ROWS = 12


def progress_view(progress: Any, history: Any) -> dict[str, Any]:
    """What the live progress widget draws, formatted: status, bar, stats, the SVG chart (the
    snapshot's own :func:`svg_chart`), the last rows of the metrics table, checkpoints."""
    running = progress.status in _LIVE
    frac = progress.fraction if progress.target else 0.0
    pct = 0.0 if not math.isfinite(frac) else max(0.0, min(1.0, frac)) * 100
    label = f"step {progress.step}" + (f" / {progress.target}" if progress.target else "")
    if progress.epoch is not None and progress.steps_per_epoch:
        label += f" · epoch {progress.epoch + 1}"
    stats = [
        ["steps/s", fmt_count(progress.steps_per_second)],
        ["examples/s", fmt_count(progress.examples_per_second)],
        ["ETA", fmt_seconds(progress.eta_seconds) if running else "—"],
        ["compile", fmt_seconds(progress.compile_seconds)],
    ]
    if math.isfinite(progress.mfu):
        stats.append(["MFU", fmt_percent(progress.mfu)])
    if math.isfinite(progress.data_wait_fraction):
        stats.append(["data wait", fmt_percent(progress.data_wait_fraction)])
    if history.flight.steps:
        stats.append(["memory peak", fmt_bytes(progress.memory_peak)])
    stats += [
        [k, fmt_metric(v)] for k, v in progress.last.items() if isinstance(v, float) and math.isfinite(v)
    ]
    headers, rows = _table_rows(history)
    rows = [[fmt_metric(v) for v in r] for r in rows[-LIVE_TABLE_ROWS:]]
    ckpt = ""
    if history.checkpoints:
        c = history.checkpoints[-1]
        ckpt = (
            f"checkpoints: {len(history.checkpoints)} saved, last at step {c['step']} ({c.get('reason', '')})"
        )
    return {
        "status": progress.status,
        "status_kind": _STATUS_KIND.get(progress.status, "info"),
        "running": running,
        "percent": f"{pct:.1f}%",
        "aria": f"{pct:.0f}",
        "label": label,
        "message": progress.message,
        "stats": stats,
        "chart": svg_chart(_series(history), x_max=progress.target or None),
        "heatmap": heatmap_html(history.flight),
        "table": {"headers": headers, "rows": rows},
        "checkpoints": ckpt,
    }
