"""Text and HTML faces of a ``ProfileReport``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from jaxmagic._format import fmt_bytes, fmt_count, fmt_percent, fmt_seconds, plural
from jaxmagic.render import html as H
from jaxmagic.render import profile_memory
from jaxmagic.render import text as T
from jaxmagic.render.ir import foldable, highlight

if TYPE_CHECKING:
    from jaxmagic.profile.report import FunctionProfile, ProfileReport

JAXPR_TEXT_LINES = 40
HLO_TEXT_LINES = 40
UNKNOWN = "n/a"


def _calls(f: FunctionProfile) -> str:
    if f.calls is None:
        return UNKNOWN
    return f"≥{f.calls}" if f.calls_lower_bound else str(f.calls)


def _compiles(f: FunctionProfile) -> str:
    """Compiles, and traces that built no program (eval_shape, make_jaxpr) when there were any."""
    return f"{len(f.compiles)} (+{f.traced_only} traced)" if f.traced_only else str(len(f.compiles))


def _where(f: FunctionProfile) -> str:
    if f.sites:
        return ", ".join(f.sites)
    return "compiled before" if not f.compiles else "?"


def _eager_total(r: ProfileReport) -> str:
    """The eager-op count, or ``n/a`` when it was not measured (never a false 0)."""
    return UNKNOWN if "eager ops" in r.unavailable else str(sum(r.eager_ops.values()))


def _trimmed(text: str, limit: int, what: str) -> str:
    lines = text.splitlines()
    more = len(lines) - limit
    body = "\n".join(lines[:limit])
    return body + (f"\n… {more} more lines ({what} has all)" if more > 0 else "")


def _other_threads(r: ProfileReport) -> str | None:
    if not r.other_threads:
        return None
    words = {"compiles": "compile", "eager_ops": "eager op", "transfers": "device→host copy"}
    parts = [plural(n, words.get(k, k)) for k, n in r.other_threads.items()]
    return (
        "Other threads (a data loader, a prefetch thread) did "
        + ", ".join(parts)
        + " while this ran; not counted above."
    )


def _intensity(f: FunctionProfile) -> str:
    return "n/a" if f.intensity is None else f"{f.intensity:.2f}"


def _mem(f: FunctionProfile, key: str) -> str:
    return fmt_bytes(f.memory.get(key)) if f.memory else "n/a"


_THROUGHPUT_HEAD = ["function", "executions", "device time", "FLOPs/exec", "FLOP/s", "bytes/s", "of peak"]


def _rate(x: float | None, unit: str) -> str:
    """``2.04 GFLOP/s`` (the SI prefix joins the unit)."""
    if x is None:
        return UNKNOWN
    count = fmt_count(x)
    return f"{count[:-1]} {count[-1]}{unit}" if count[-1] in "kMGT" else f"{count} {unit}"


def _bytes_rate(x: float | None) -> str:
    return UNKNOWN if x is None else f"{fmt_bytes(x)}/s"


def _share(x: float | None) -> str:
    return UNKNOWN if x is None else fmt_percent(x)


def _traced(r: ProfileReport) -> list[FunctionProfile]:
    return [f for f in r.functions if f.kind == "jit" and f.throughput is not None]


def _peak_line(r: ProfileReport) -> str:
    """What utilisation is measured against: one device's peak and where it comes from."""
    if r.peak_flops is None:
        rated = any(f.throughput and f.throughput.flops_per_s for f in r.functions)
        return "Achieved throughput (--trace)" + ("; the device's peak FLOP/s is not known" if rated else "")
    return (
        f"Achieved throughput (--trace), against a peak of {_rate(r.peak_flops, 'FLOP/s')} per device "
        f"({r.peak_source})"
    )


def _throughput_cells(f: FunctionProfile) -> list[str]:
    t = f.throughput
    assert t is not None
    devices = f" ({t.devices} devices)" if t.devices > 1 else ""
    return [
        f.name,
        UNKNOWN if t.executions is None else str(t.executions),
        fmt_seconds(f.device_s) + devices,
        fmt_count(t.flops),
        _rate(t.flops_per_s, "FLOP/s"),
        _bytes_rate(t.bytes_per_s),
        _share(t.utilization),
    ]


def _headline(r: ProfileReport) -> str:
    user = [f for f in r.functions if f.kind == "jit"]
    state = "" if r.complete else " · INCOMPLETE (the code raised)"
    return (
        f"JAX profile of {r.label}: {fmt_seconds(r.wall_s)} wall · "
        f"{plural(len(user), 'function')} · {plural(r.n_compiles, 'compile')}{state}"
    )


def _time_split(r: ProfileReport) -> str:
    return (
        f"compile {fmt_seconds(r.compile_total_s)} (trace {fmt_seconds(r.trace_s)}, lower "
        f"{fmt_seconds(r.lower_s)}, backend {fmt_seconds(r.backend_compile_s)}) · "
        f"run {fmt_seconds(r.run_s)} (incl. {fmt_seconds(r.sync_s)} waiting for the device "
        f"at the end)"
    )


# -- text --------------------------------------------------------------------


def profile_text(r: ProfileReport, *, width: int = 100) -> str:
    """The full plain-text report (terminal IPython)."""
    out = [_headline(r), T.wrap(_time_split(r), width=width, indent="  ", first="  ")]
    if r.error:
        out.append(f"  raised {r.error}; the report covers what ran before it")
    jit = [f for f in r.functions if f.kind == "jit"]
    eager = [f for f in r.functions if f.kind == "eager"]
    if jit:
        out += ["", "Functions"]
        device = bool(r.trace_dir)
        out.append(
            T.table(
                [
                    "function",
                    "called at",
                    "compiles",
                    "trace",
                    "lower",
                    "compile",
                    "calls",
                    "flops",
                    "bytes",
                    "flops/byte",
                    "temp mem",
                ]
                + (["device time"] if device else []),
                [
                    [
                        f.name,
                        _where(f),
                        _compiles(f),
                        fmt_seconds(f.trace_s),
                        fmt_seconds(f.lower_s),
                        fmt_seconds(f.backend_compile_s),
                        _calls(f),
                        fmt_count(f.flops),
                        fmt_bytes(f.bytes_accessed),
                        _intensity(f),
                        _mem(f, "temp_bytes"),
                    ]
                    + ([UNKNOWN if f.device_s is None else fmt_seconds(f.device_s)] if device else [])
                    for f in jit
                ],
                numeric=range(2, 12 if device else 11),
            )
        )
        misses = [
            (f, c) for f in jit for c in f.compiles if c.reasons and c.kinds not in (("first",), ("derived",))
        ]
        if misses:
            out += ["", "Cache misses"]
            for f, c in misses:
                where = f" ({c.site})" if c.site else ""
                out.append(
                    T.wrap("; ".join(c.reasons), width=width, indent="    ", first=f"  {f.name}{where}: ")
                )
    if traced := _traced(r):
        out += ["", T.wrap(_peak_line(r), width=width)]
        out.append(T.table(_THROUGHPUT_HEAD, [_throughput_cells(f) for f in traced], numeric=range(1, 7)))
        for f in traced:
            if f.throughput.note:
                out.append(T.wrap(f.throughput.note, width=width, indent="    ", first=f"  {f.name}: "))
    if eager or r.eager_ops:
        total = _eager_total(r)
        out += [
            "",
            f"Eager ops (dispatched one by one outside jit): {total} counted, "
            f"{plural(sum(len(f.compiles) for f in eager), 'compile')}",
        ]
        rows = [
            [f.name, _where(f), len(f.compiles), fmt_seconds(f.compile_total_s), _calls(f)] for f in eager
        ]
        if rows:
            out.append(
                T.indent(
                    T.table(["op", "first at", "compiles", "compile time", "calls"], rows, numeric=(2, 3, 4)),
                    "  ",
                )
            )
    if r.transfers:
        out += ["", "Device→host transfers: " + ", ".join(f"{k} ×{v}" for k, v in r.transfers.items())]
    if others := _other_threads(r):
        out += ["", T.wrap(others, width=width)]
    out += profile_memory.memory_text(r, width=width)
    if r.insights:
        out += ["", "Insights"]
        for i in r.insights:
            mark = "!" if i.severity == "warn" else "i"
            out.append(T.wrap(i.message, width=width, indent="      ", first=f"  {mark} [{i.kind}] "))
            out.append(T.wrap(i.fix, width=width, indent="      ", first="    → fix: "))
    for f in jit:
        if f.jaxpr:
            lines = f.jaxpr.splitlines()
            more = len(lines) - JAXPR_TEXT_LINES
            body = "\n".join(lines[:JAXPR_TEXT_LINES])
            if more > 0:
                body += f"\n… {more} more lines (report.function({f.name!r}).jaxpr has all)"
            out += ["", f"jaxpr of {f.name}", T.indent(body, "  ")]
        if f.hlo:
            body = _trimmed(f.hlo, HLO_TEXT_LINES, f"report.function({f.name!r}).hlo")
            out += ["", f"optimized HLO of {f.name}", T.indent(body, "  ")]
    if r.trace_dir:
        out += ["", f"Trace written to {r.trace_dir} (open with XProf/TensorBoard or ui.perfetto.dev)"]
    if r.notes:
        out.append("")
    for note in r.notes:
        out.append(T.wrap(note, width=width, indent="      ", first="note: "))
    return "\n".join(out)


# -- html --------------------------------------------------------------------


def _stat(label: str, value: str) -> str:
    return f'<span class="jm-stat">{H.esc(label)} <b>{H.esc(value)}</b></span>'


def _function_details(f: FunctionProfile) -> str:
    rows = []
    for n, c in enumerate(f.compiles, 1):
        rows.append(
            [
                str(n),
                H.esc(c.site or "?"),
                H.esc(c.signature or "n/a"),
                (H.esc(fmt_seconds(c.compile_total_s)), c.compile_total_s),
                H.esc("; ".join(c.reasons) or "—"),
            ]
        )
    parts = [H.table(["#", "called at", "input types", "compile", "cache miss reason"], rows, numeric=(0, 3))]
    cost = [
        ("FLOPs", fmt_count(f.flops)),
        ("transcendentals", fmt_count(f.transcendentals)),
        ("bytes accessed", fmt_bytes(f.bytes_accessed)),
        ("FLOPs/byte", _intensity(f)),
    ]
    parts.append('<div class="jm-totals">' + "".join(_stat(k, v) for k, v in cost) + "</div>")
    if f.memory:
        mem = [
            ("arguments", "argument_bytes"),
            ("outputs", "output_bytes"),
            ("aliased (donated)", "alias_bytes"),
            ("temporaries", "temp_bytes"),
            ("code", "generated_code_bytes"),
        ]
        parts.append(
            '<div class="jm-totals">'
            + "".join(_stat(k, fmt_bytes(f.memory[key])) for k, key in mem)
            + "</div>"
        )
    if f.jaxpr:
        parts.append(
            H.details(
                f"jaxpr <span class='jm-muted'>({len(f.jaxpr.splitlines())} lines)</span>",
                foldable(f.jaxpr),
                cls="jm-jaxpr",
            )
        )
    if f.hlo:
        parts.append(
            H.details(
                f"optimized HLO <span class='jm-muted'>({len(f.hlo.splitlines())} lines)</span>",
                f'<pre class="jm-ir">{highlight(f.hlo)}</pre>',
                cls="jm-hlo",
            )
        )
    summary = (
        f"<code>{H.esc(f.name)}</code> <span class='jm-muted'>defined at {H.esc(f.defined_at or '?')}</span>"
    )
    return H.details(summary, "".join(parts), cls="jm-fn")


def profile_html(r: ProfileReport) -> str:
    """The full self-contained HTML report (JupyterLab, nbconvert)."""
    jit = [f for f in r.functions if f.kind == "jit"]
    eager = [f for f in r.functions if f.kind == "eager"]
    badge = "" if r.complete else " " + H.badge("incomplete: the code raised", "bad")
    parts = [f"<h3>JAX profile · {H.esc(r.label)}{badge}</h3>"]
    stats = [
        ("wall", fmt_seconds(r.wall_s)),
        ("compile", fmt_seconds(r.compile_total_s)),
        ("trace", fmt_seconds(r.trace_s)),
        ("lower", fmt_seconds(r.lower_s)),
        ("backend compile", fmt_seconds(r.backend_compile_s)),
        ("run", fmt_seconds(r.run_s)),
        ("compiles", str(r.n_compiles)),
        ("eager ops", _eager_total(r)),
    ]
    parts.append('<div class="jm-totals">' + "".join(_stat(k, v) for k, v in stats) + "</div>")
    if r.wall_s > 0:
        share = min(1.0, r.compile_total_s / r.wall_s)
        parts.append(
            f'<div title="compile vs run">{H.bar(share, width_px=int(300 * share) or 1, cls="jm-compile")}'
            f"{H.bar(1 - share, width_px=int(300 * (1 - share)) or 1)} "
            f'<span class="jm-muted">{share:.0%} compiling</span></div>'
        )
    if r.error:
        parts.append(
            f"<p>The code raised <code>{H.esc(r.error)}</code>; this report covers what ran before it.</p>"
        )
    if r.insights:
        parts.append("<h4>Insights</h4>")
        for i in r.insights:
            sev = "" if i.severity == "warn" else " jm-sev-info"
            parts.append(
                f'<div class="jm-insight{sev}" data-kind="{H.esc(i.kind)}">'
                f"{H.badge(i.kind, 'warn' if i.severity == 'warn' else 'info')} {H.esc(i.message)}"
                f'<br><span class="jm-muted">Fix:</span> {H.esc(i.fix)}</div>'
            )
    if jit:
        parts.append("<h4>Functions</h4>")
        rows = [
            [
                f"<code>{H.esc(f.name)}</code>",
                H.esc(_where(f)),
                (_compiles(f), len(f.compiles)),
                (fmt_seconds(f.trace_s), f.trace_s),
                (fmt_seconds(f.lower_s), f.lower_s),
                (fmt_seconds(f.backend_compile_s), f.backend_compile_s),
                (_calls(f), -1 if f.calls is None else f.calls),
                (fmt_count(f.flops), -1 if f.flops is None else f.flops),
                (fmt_bytes(f.bytes_accessed), -1 if f.bytes_accessed is None else f.bytes_accessed),
                (_intensity(f), -1 if f.intensity is None else f.intensity),
                (_mem(f, "temp_bytes"), -1 if not f.memory else f.memory["temp_bytes"]),
            ]
            + ([(fmt_seconds(f.device_s), f.device_s or 0)] if r.trace_dir else [])
            for f in jit
        ]
        headers = [
            "function",
            "called at",
            "compiles",
            "trace",
            "lower",
            "compile",
            "calls",
            "FLOPs",
            "bytes",
            "FLOPs/byte",
            "temp mem",
        ] + (["device time"] if r.trace_dir else [])
        parts.append(
            H.table(headers, rows, numeric=range(2, len(headers)), sortable=True, cls="jm-functions")
        )
        if traced := _traced(r):
            parts.append(_throughput_html(r, traced))
        parts.extend(_function_details(f) for f in jit)
    parts.append(profile_memory.memory_html(r))
    if eager or r.eager_ops:
        total = _eager_total(r)
        rows = [
            [
                f"<code>{H.esc(f.name)}</code>",
                H.esc(_where(f)),
                (str(len(f.compiles)), len(f.compiles)),
                (fmt_seconds(f.compile_total_s), f.compile_total_s),
                (_calls(f), -1 if f.calls is None else f.calls),
            ]
            for f in eager
        ]
        body = (
            H.table(
                ["op", "first at", "compiles", "compile time", "calls"],
                rows,
                numeric=(2, 3, 4),
                sortable=True,
            )
            if rows
            else ""
        )
        if r.eager_sites:
            body += (
                "<p>Lines dispatching eager ops: "
                + ", ".join(f"{H.esc(k)} ×{v}" for k, v in r.eager_sites.items())
                + "</p>"
            )
        parts.append(
            H.details(
                f"Eager ops outside jit: {total} counted, "
                f"{plural(sum(len(f.compiles) for f in eager), 'compile')}",
                body,
                cls="jm-eager",
            )
        )
    if r.transfers:
        parts.append(
            "<p>Device→host transfers: "
            + ", ".join(f"{H.esc(k)} ×{v}" for k, v in r.transfers.items())
            + "</p>"
        )
    if others := _other_threads(r):
        parts.append(f"<p class='jm-muted'>{H.esc(others)}</p>")
    if r.timeline:
        parts.append(_timeline_html(r))
    if r.trace_dir:
        parts.append(
            f"<p class='jm-muted'>Trace written to <code>{H.esc(r.trace_dir)}</code> "
            f"(open with XProf/TensorBoard or ui.perfetto.dev).</p>"
        )
    for note in r.notes:
        parts.append(f"<p class='jm-muted'><b>Note:</b> {H.esc(note)}</p>")
    return H.document("".join(parts), sortable=True)


def _throughput_html(r: ProfileReport, traced: list[FunctionProfile]) -> str:
    rows = []
    for f in traced:
        t, c = f.throughput, _throughput_cells(f)
        rows.append(
            [f"<code>{H.esc(c[0])}</code>"]
            + [
                (H.esc(text), -1 if key is None else key)
                for text, key in zip(
                    c[1:], (t.executions, f.device_s, t.flops, t.flops_per_s, t.bytes_per_s, t.utilization)
                )
            ]
            + [H.esc(t.note or "")]
        )
    return f"<h4>{H.esc(_peak_line(r))}</h4>" + H.table(
        [*_THROUGHPUT_HEAD, "note"], rows, numeric=range(1, 7), sortable=True, cls="jm-throughput"
    )


def _timeline_html(r: ProfileReport) -> str:
    """A small inline SVG timeline of device executions from ``--trace``."""
    events = list(r.timeline)
    if not events:
        return ""
    t_end = max(e["start_s"] + e["dur_s"] for e in events) or 1e-9
    names = sorted({e["name"] for e in events})
    row_h, width, label_w = 16, 640, 140
    rects = []
    for e in events:
        y = names.index(e["name"]) * row_h
        x = label_w + e["start_s"] / t_end * (width - label_w)
        w = max(1.0, e["dur_s"] / t_end * (width - label_w))
        rects.append(
            f'<rect x="{x:.1f}" y="{y + 2}" width="{w:.1f}" height="{row_h - 4}" '
            f'fill="rgba(40,110,220,.7)"><title>{H.esc(e["name"])} {fmt_seconds(e["dur_s"])}</title></rect>'
        )
    labels = "".join(
        f'<text x="0" y="{i * row_h + 12}" font-size="11" fill="currentColor">{H.esc(n[:22])}</text>'
        for i, n in enumerate(names)
    )
    svg = (
        f'<svg width="{width}" height="{len(names) * row_h}" role="img" '
        f'aria-label="device timeline">{labels}{"".join(rects)}</svg>'
    )
    return f"<h4>Device timeline <span class='jm-muted'>({fmt_seconds(t_end)})</span></h4>{svg}"
