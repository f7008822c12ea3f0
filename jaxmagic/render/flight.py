"""Text and HTML for the flight recorder: the per-layer heatmap (layers × recorded steps), the
latest per-layer norms, and the divergence report. Pure functions; no scripts, the heatmap an
inline PNG (data URI) with HTML labels.

The heatmap's colour is ``log10`` of the value over the finite values shown (one scale for the
whole map, printed in its legend); a non-finite cell is drawn in red and says so in its tooltip.
With more records than columns, each column shows the largest value of its records (a spike
must not be averaged away).
"""

from __future__ import annotations

import base64
import math
import struct
import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from jaxmagic._format import fmt_bytes
from jaxmagic.render import html as H
from jaxmagic.render import text as T

MAX_COLUMNS = 80
MAX_ROWS = 40
_CELL_H = 12
# viridis, five stops: dark (small) to bright (large)
_RAMP = ((68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37))
_NONFINITE_RGB = (214, 39, 40)
METRICS = {"grad_norm": "gradient norm", "update_norm": "update norm", "param_norm": "parameter norm"}


def fmt_norm(v: float | None) -> str:
    """A norm to 3 significant digits; non-finite or missing -> ``n/a``."""
    if v is None or not math.isfinite(v):
        return "n/a"
    return f"{v:.3g}"


def heatmap_columns(
    steps: Sequence[int], values: np.ndarray, n: int = MAX_COLUMNS
) -> tuple[list, np.ndarray]:
    """At most ``n`` columns: ``([(first_step, last_step), ...], [layers, columns])``; a bucket of
    records shows its largest value, or NaN if any record in it is non-finite."""
    values = np.asarray(values, np.float64).reshape(len(steps), -1).T  # [layers, records]
    if len(steps) <= n:
        return [(s, s) for s in steps], values
    edges = np.linspace(0, len(steps), n + 1).astype(int)
    cols, out = [], []
    for a, b in zip(edges[:-1], edges[1:]):
        if b <= a:
            continue
        block = values[:, a:b]
        bad = ~np.isfinite(block).all(axis=1)
        out.append(np.where(bad, np.nan, np.nanmax(np.where(np.isfinite(block), block, -np.inf), axis=1)))
        cols.append((steps[a], steps[b - 1]))
    return cols, np.stack(out, axis=1)


def png_rgb(pixels: np.ndarray) -> bytes:
    """A PNG of ``pixels`` (``uint8[height, width, 3]``): the smallest self-contained way to
    send a heatmap (a 40 × 80 map is a few kB, where one SVG rect per cell is hundreds)."""
    h, w, _ = pixels.shape
    raw = b"".join(b"\x00" + pixels[r].tobytes() for r in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    head = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", head)
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )


def _rgb(t: float) -> tuple[int, int, int]:
    t = min(1.0, max(0.0, t)) * (len(_RAMP) - 1)
    i = min(int(t), len(_RAMP) - 2)
    f = t - i
    return tuple(round(a + (b - a) * f) for a, b in zip(_RAMP[i], _RAMP[i + 1]))  # type: ignore[return-value]


def _img(pixels: np.ndarray, width: int, height: int, label: str, cls: str = "") -> str:
    src = "data:image/png;base64," + base64.b64encode(png_rgb(pixels)).decode("ascii")
    return (
        f'<img class="jm-heat-img {cls}" src="{src}" width="{width}" height="{height}" alt="{H.esc(label)}" '
        f'title="{H.esc(label)}" style="image-rendering:pixelated;display:block">'
    )


def heatmap_html(flight: Any, metric: str = "grad_norm", *, width: int = 430) -> str:
    """Layers × recorded steps, coloured by ``log10`` of ``metric`` (``grad_norm``,
    ``update_norm`` or ``param_norm``), as HTML around a PNG; ``""`` when nothing was recorded."""
    rows = getattr(flight, metric)
    if not flight.steps or not rows:
        return ""
    layers = list(flight.layers)
    cols, grid = heatmap_columns(flight.steps, np.asarray(rows, np.float64))
    hidden = max(0, len(layers) - MAX_ROWS)
    layers, grid = layers[:MAX_ROWS], grid[:MAX_ROWS]
    finite = grid[np.isfinite(grid) & (grid > 0)]
    lo, hi = (float(np.log10(finite.min())), float(np.log10(finite.max()))) if finite.size else (0.0, 1.0)
    span = hi - lo or 1.0
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(grid > 0, (np.log10(grid) - lo) / span, 0.0)
    pixels = np.zeros((*grid.shape, 3), np.uint8)
    for idx in np.ndindex(grid.shape):
        pixels[idx] = _rgb(float(t[idx])) if math.isfinite(grid[idx]) else _NONFINITE_RGB
    cw = max(2, min(14, width // max(1, len(cols))))
    label = METRICS.get(metric, metric)
    names = "".join(
        f'<div title="{H.esc(n)}">{H.esc(n if len(n) <= 22 else "…" + n[-21:])}</div>' for n in layers
    )
    bar = np.array([[_rgb(i / 19) for i in range(20)]], np.uint8)
    scale = f"{label} {fmt_norm(10**lo)} … {fmt_norm(10**hi)} (log scale)"
    first, last = cols[0][0], cols[-1][1]
    per_col = "" if all(a == b for a, b in cols) else "; a column shows the largest of its records"
    return (
        f'<div class="jm-heat" style="--jm-heat-row:{_CELL_H}px">'
        f'<div class="jm-heat-names">{names}</div>'
        f"<div>{_img(pixels, cw * len(cols), _CELL_H * len(layers), f'{label} per layer, steps {first} to {last}')}"
        f'<div class="jm-heat-axis"><span>step {first}</span><span>step {last}</span></div></div></div>'
        f'<div class="jm-heat-legend">{_img(bar, 80, 8, scale, "jm-heat-bar")}<span>{H.esc(scale)}</span>'
        f'<span class="jm-heat-nan"></span><span>non-finite</span></div>'
        + (
            f'<div class="jm-muted jm-heat-note">{len(cols)} columns over {len(flight.steps)} records{H.esc(per_col)}'
            + (f"; {hidden} more layers not shown" if hidden else "")
            + "</div>"
            if per_col or hidden
            else ""
        )
    )


def _latest_rows(flight: Any) -> tuple[list[str], list[list[str]]]:
    latest = flight.latest()
    if not latest:
        return [], []
    headers = ["layer", "grad norm", "update norm", "param norm", "update/param"]
    rows = [
        [r["name"], fmt_norm(r["grad"]), fmt_norm(r["update"]), fmt_norm(r["param"]), fmt_norm(r["ratio"])]
        for r in latest["layers"]
    ]
    return headers, rows


def flight_text(flight: Any, width: int = 100, limit: int = 20) -> str:
    """The latest record per layer (with the gradient norm's trend), and the memory high-water."""
    from jaxmagic.render.training import sparkline

    if not flight.steps:
        return ""
    headers, rows = _latest_rows(flight)
    grads = np.asarray(flight.grad_norm, np.float64)
    for i, row in enumerate(rows):
        row.append(sparkline(grads[:, i], 20) if len(grads) > 1 else "")
    lines = [
        f"flight recorder: {len(flight.steps)} records, last at step {flight.steps[-1]} · "
        f"memory high-water {fmt_bytes(flight.memory_peak[-1]) if flight.memory_peak else 'n/a'}"
    ]
    lines.append(T.table([*headers, "grad trend"], rows[:limit], numeric=range(1, 5)))
    if len(rows) > limit:
        lines.append(f"({len(rows) - limit} more layers not shown)")
    return "\n".join(lines)


def flight_html(flight: Any) -> str:
    """The heatmap of gradient norms and, collapsed, the latest norms per layer."""
    if not flight.steps:
        return ""
    headers, rows = _latest_rows(flight)
    table = H.table(headers, [[H.esc(c) for c in r] for r in rows], numeric=range(1, 5), cls="jm-flight")
    mem = fmt_bytes(flight.memory_peak[-1]) if flight.memory_peak else "n/a"
    return f"<h4>Gradient norm per layer</h4>{heatmap_html(flight)}" + H.details(
        f"Per-layer norms at step {flight.steps[-1]} · memory high-water {H.esc(mem)}",
        table,
        open=False,
    )


def divergence_text(report: Any, width: int = 100) -> str:
    """The divergence (step, layers, checkpoint) and the replay's findings."""
    from jaxmagic.render.check import check_text

    d = report.divergence
    lines = [f"Divergence replay: {report.summary()}"]
    lines.append(T.wrap(f"step {d['step']} (loss {d['loss']}): {d['what']}", width=width, indent="  "))
    lines.append(
        "  the model holds the state after step "
        f"{d['last_finite_step']}"
        + (f"; last checkpoint: step {d['checkpoint_step']}" if d.get("checkpoint_step") is not None else "")
    )
    for n in report.notes:
        lines.append(T.wrap(f"note: {n}", width=width, indent="  "))
    lines.append("")
    lines.append(check_text(report.check, width=width))
    return "\n".join(lines)


def divergence_html(report: Any) -> str:
    from jaxmagic.render.check import check_body

    d = report.divergence
    f = report.finding
    head = (
        f"<h3>Divergence at step {H.esc(d['step'])} {H.badge(f.title if f else 'no NaN found', 'bad')}</h3>"
    )
    facts = [
        ("loss", str(d["loss"])),
        ("non-finite", d["what"]),
        ("model holds", f"step {d['last_finite_step']}"),
        ("last checkpoint", "none" if d.get("checkpoint_step") is None else f"step {d['checkpoint_step']}"),
    ]
    stats = (
        '<div class="jm-totals">'
        + "".join(f'<span class="jm-stat">{H.esc(k)} <b>{H.esc(v)}</b></span>' for k, v in facts)
        + "</div>"
    )
    notes = "".join(f"<div class='jm-muted'>note: {H.esc(n)}</div>" for n in report.notes)
    return H.document(head + stats + notes + check_body(report.check))
