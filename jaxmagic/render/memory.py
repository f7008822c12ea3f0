"""Text and HTML for the memory reports: live arrays and owners, OOM explanations, plans."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from jaxmagic._format import fmt_bytes, plural
from jaxmagic.render import html as H
from jaxmagic.render import text as T

CPU_STATS = "not reported by the CPU backend"


def _stats_note(report: Any) -> str:
    if any(d.stats for d in report.devices):
        return ""
    return f"backend memory stats: {CPU_STATS if report.backend == 'cpu' else 'not reported by this backend'}"


def _stat(stats: dict | None, key: str) -> str:
    return fmt_bytes(stats.get(key)) if stats and key in stats else "n/a"


def _owner_rows(report: Any) -> list[list[str]]:
    total = report.total_bytes or 1
    return [
        [o.root, o.kind, str(o.arrays), fmt_bytes(o.nbytes), f"{100 * o.nbytes / total:.0f}%"]
        for o in report.owners
    ]


def _shown_devices(report: Any) -> list[Any]:
    """Devices holding arrays or reporting counters (an idle simulated device is noise)."""
    return [d for d in report.devices if d.arrays or d.stats]


def _idle_note(report: Any) -> str:
    idle = [str(d.id) for d in report.devices if not (d.arrays or d.stats)]
    return (
        f"devices {', '.join(idle)} hold no live arrays"
        if len(idle) > 1
        else f"device {idle[0]} holds no live arrays"
        if idle
        else ""
    )


def _device_rows(report: Any) -> list[list[str]]:
    rows = []
    for d in _shown_devices(report):
        top = ", ".join(f"{name} {fmt_bytes(b)}" for name, b in d.by_owner[:3])
        rows.append(
            [
                str(d.id),
                str(d.arrays),
                fmt_bytes(d.array_bytes),
                _stat(d.stats, "bytes_in_use"),
                _stat(d.stats, "peak_bytes_in_use"),
                _stat(d.stats, "bytes_limit"),
                top,
            ]
        )
    return rows


def _array_rows(report: Any) -> list[list[str]]:
    rows = []
    for a in report.arrays[: report.top]:
        also = ", ".join(a.other_paths)
        if a.shares_buffer_with:
            also = (also + "; " if also else "") + f"buffer shared with {a.shares_buffer_with}"
        where = (f"device {a.devices[0][0]}" if len(a.devices) == 1 else f"{len(a.devices)} devices") + (
            f" {a.sharding}" if len(a.devices) > 1 else ""
        )
        rows.append([fmt_bytes(a.nbytes), a.type_str, where, a.owner, also])
    return rows


def _action_lines(rows: list[tuple[str, str, str]], width: int, longest: int) -> list[str]:
    """``  action  frees 8.0 MiB  why`` per ``(action, amount, why)``, aligned on the actions of
    at most ``longest`` characters; a line too wide puts ``why`` on its own lines."""
    w = max((len(action) for action, _, _ in rows if len(action) <= longest), default=0)
    out = []
    for action, amount, why in rows:
        head = f"  {action.ljust(w)}  {amount}"
        if len(head) + 2 + len(why) <= width:
            out.append(f"{head}  {why}")
        else:
            out += [head, T.wrap(why, width=width, indent="      ")]
    return out


_OWNER_HEAD = ["owner", "held as", "arrays", "bytes", "share"]
_DEVICE_HEAD = ["device", "arrays", "array bytes", "in use", "peak", "limit", "largest owners"]
_ARRAY_HEAD = ["bytes", "type", "where", "owner", "also held as"]


def memory_text(report: Any, *, width: int = 100) -> str:
    """The live-memory report as plain text."""
    out = [f"jaxmemory: {report.summary()} (shared buffers counted once)"]
    note = _stats_note(report)
    if note:
        out.append(note)
    if report.arrays:
        out += ["", "by owner", T.table(_OWNER_HEAD, _owner_rows(report), numeric=(2, 3, 4))]
        out += [
            "",
            "per device",
            T.table(_DEVICE_HEAD, _device_rows(report), numeric=(0, 1, 2, 3, 4, 5), max_col=60),
        ]
        if _idle_note(report):
            out.append(_idle_note(report))
        shown = min(report.top, len(report.arrays))
        out += [
            "",
            f"largest arrays ({shown} of {len(report.arrays)})",
            T.table(_ARRAY_HEAD, _array_rows(report), numeric=(0,), max_col=60),
        ]
    if report.suggestions:
        out += ["", "to free memory (up to; arrays something outside the namespace holds stay alive)"]
        rows = [(x.action, f"frees {fmt_bytes(x.frees):>10}", x.why) for x in report.suggestions]
        out += _action_lines(rows, width, longest=40)
    if report.deleted:
        out += [
            "",
            T.wrap(
                "still bound to deleted (e.g. donated) arrays, which raise if used: "
                + ", ".join(report.deleted),
                width=width,
            ),
        ]
    for n in report.notes:
        out.append(T.wrap(n, width=width, first="note: ", indent="      "))
    return "\n".join(out)


def memory_html(report: Any) -> str:
    """The live-memory report as self-contained HTML."""
    parts = [
        f"<h3>Device memory <span class='jm-muted'>· {H.esc(report.summary())} "
        "(shared buffers counted once)</span></h3>"
    ]
    note = _stats_note(report)
    if note:
        parts.append(f"<div class='jm-muted'>{H.esc(note)}</div>")
    if report.arrays:
        total = report.total_bytes or 1
        owner_rows = [
            [
                H.esc(o.root) if o.kind != "variable" else f"<code>{H.esc(o.root)}</code>",
                H.badge(o.kind, "warn" if o.kind == "history" else "bad" if o.kind == "unowned" else ""),
                (H.esc(o.arrays), o.arrays),
                (H.esc(fmt_bytes(o.nbytes)), o.nbytes),
                (H.bar(o.nbytes / total) + " " + H.esc(f"{100 * o.nbytes / total:.0f}%"), o.nbytes),
            ]
            for o in report.owners
        ]
        parts += ["<h4>By owner</h4>", H.table(_OWNER_HEAD, owner_rows, numeric=(2, 3), sortable=True)]
        parts += [
            "<h4>Per device</h4>",
            H.table(
                _DEVICE_HEAD,
                [[H.esc(c) for c in r] for r in _device_rows(report)],
                numeric=(0, 1, 2, 3, 4, 5),
                sortable=True,
            ),
        ]
        if _idle_note(report):
            parts.append(f"<div class='jm-muted'>{H.esc(_idle_note(report))}</div>")
        rows = [
            [
                (H.esc(r[0]), a.nbytes),
                f"<code>{H.esc(r[1])}</code>",
                H.esc(r[2]),
                f"<code>{H.esc(r[3])}</code>",
                H.esc(r[4]),
            ]
            for r, a in zip(_array_rows(report), report.arrays)
        ]
        parts += [
            f"<h4>Largest arrays ({min(report.top, len(report.arrays))} of {len(report.arrays)})</h4>",
            H.table(_ARRAY_HEAD, rows, numeric=(0,), sortable=True),
        ]
    if report.suggestions:
        items = "".join(
            f"<div class='jm-insight jm-sev-info'><code>{H.esc(s.action)}</code> frees up to "
            f"<b>{H.esc(fmt_bytes(s.frees))}</b> <span class='jm-muted'>· {H.esc(s.why)}</span></div>"
            for s in report.suggestions
        )
        parts += ["<h4>To free memory</h4>", items]
    if report.deleted:
        parts.append(
            f"<div class='jm-insight'>Still bound to deleted (e.g. donated) arrays, which raise if "
            f"used: {', '.join(f'<code>{H.esc(d)}</code>' for d in report.deleted)}</div>"
        )
    parts += [f"<div class='jm-muted'>note: {H.esc(n)}</div>" for n in report.notes]
    return H.document("".join(parts), sortable=True)


def count_line(n: int, nbytes: int, what: str = "array") -> str:
    return f"{plural(n, what)}, {fmt_bytes(nbytes)}"


def oom_text(report: Any, *, width: int = 100) -> str:
    """An OOM explanation as plain text (printed under the traceback)."""
    out = [f"jaxmagic: {report.summary()}", f"  error: {report.error}"]
    if report.where:
        out.append(f"  at {report.where}" + (f": {report.source}" if report.source else ""))
    if report.requested is not None:
        out.append(
            f"  requested {fmt_bytes(report.requested)} ({report.requested:,} bytes)"
            + (f"; device limit {fmt_bytes(report.limit)}" if report.limit else "")
        )
    if report.program is not None and report.program.memory:
        pm = report.program.memory
        out.append(
            f"  {report.program.name}'s program (traced and compiled again, not run): peak {fmt_bytes(pm['peak_bytes'])}"
            f" per device = arguments {fmt_bytes(pm['argument_bytes'])} + outputs "
            f"{fmt_bytes(pm['output_bytes'])} + temporaries {fmt_bytes(pm['temp_bytes'])}"
            f" − aliased {fmt_bytes(pm['alias_bytes'])} + code {fmt_bytes(pm['generated_code_bytes'])}"
        )
    m = report.memory
    note = _stats_note(m)
    out.append(f"  alive: {m.summary()}" + (f" ({note})" if note else ""))
    if m.owners:
        out.append(
            "  held by: "
            + ", ".join(f"{o.root} {fmt_bytes(o.nbytes)}" for o in m.owners[:6])
            + (" …" if len(m.owners) > 6 else "")
        )
    out += [T.wrap(f, width=width, first="  - ", indent="    ") for f in report.findings]
    if report.remedies:
        out.append("fixes, most bytes saved per device first (? = cannot be computed here):")
        rows = [(r.action, f"saves {_saves(r):>9}", r.why) for r in report.remedies]
        out += _action_lines(rows, width, longest=48)
    return "\n".join(out)


def _saves(r: Any) -> str:
    return "?" if r.saves is None else fmt_bytes(r.saves)


def oom_html(report: Any) -> str:
    """An OOM explanation as self-contained HTML."""
    m = report.memory
    parts = [
        f"<h3>{H.badge('out of memory', 'bad')} {H.esc(report.summary())}</h3>",
        f"<div><code>{H.esc(report.error)}</code></div>",
    ]
    if report.where:
        parts.append(
            f"<div class='jm-muted'>at {H.esc(report.where)}"
            + (f": <code>{H.esc(report.source)}</code>" if report.source else "")
            + "</div>"
        )
    stats = [
        ("requested", fmt_bytes(report.requested)),
        ("alive", fmt_bytes(m.total_bytes)),
        *(
            [("program peak", fmt_bytes(report.program.memory["peak_bytes"]))]
            if report.program is not None and report.program.memory
            else []
        ),
        ("device limit", fmt_bytes(report.limit) if report.limit else "not reported"),
    ]
    parts.append(
        "<div class='jm-totals'>"
        + "".join(f"<span class='jm-stat'>{H.esc(k)} <b>{H.esc(v)}</b></span>" for k, v in stats)
        + "</div>"
    )
    if m.owners:
        total = m.total_bytes or 1
        rows = [
            [
                f"<code>{H.esc(o.root)}</code>",
                H.esc(o.kind),
                (H.esc(fmt_bytes(o.nbytes)), o.nbytes),
                H.bar(o.nbytes / total),
            ]
            for o in m.owners[:10]
        ]
        parts += ["<h4>Alive, by owner</h4>", H.table(["owner", "held as", "bytes", ""], rows, numeric=(2,))]
    if report.findings:
        parts.append("<ul>" + "".join(f"<li>{H.esc(f)}</li>" for f in report.findings) + "</ul>")
    if report.remedies:
        rows = [
            [
                f"<code>{H.esc(r.action)}</code>",
                (H.esc(_saves(r)), -1 if r.saves is None else r.saves),
                H.esc(r.why),
            ]
            for r in report.remedies
        ]
        parts += [
            "<h4>Fixes, most bytes saved per device first</h4>",
            H.table(["fix", "saves", "how we know"], rows, numeric=(1,), cls="jm-remedies"),
            "<div class='jm-muted'>? = cannot be computed here</div>",
        ]
    return H.document("".join(parts))


_MEM_ROWS = (
    ("arguments", "argument_bytes"),
    ("outputs", "output_bytes"),
    ("temporaries", "temp_bytes"),
    ("aliased (donated, reused)", "alias_bytes"),
    ("generated code", "generated_code_bytes"),
    ("peak = arguments + outputs + temporaries − aliased + code", "peak_bytes"),
)


def _plan_head(report: Any) -> list[str]:
    from jaxmagic._format import fmt_count

    c = report.cost
    intensity = f"{report.intensity:.2f}" if report.intensity is not None else "n/a"
    where = report.mesh or plural(report.devices, "device")
    lines = [
        f"jaxplan: {report.name}({report.signature}) on {where}, compiled only (nothing ran)",
        f"FLOPs {fmt_count(c.get('flops'))}/device · bytes accessed {fmt_bytes(c.get('bytes_accessed'))}/device"
        f" · FLOPs/byte {intensity}",
    ]
    if report.capacity is not None and report.peak is not None:
        name, cap = report.capacity
        verdict = "fits" if report.fits else "does NOT fit"
        lines.append(
            f"{verdict} {name} ({fmt_bytes(cap)}): headroom {fmt_bytes(report.headroom) if report.fits else '-' + fmt_bytes(-report.headroom)}"
            f" ({100 * report.peak / cap:.1f}% used)"
        )
    return lines


def _collective_rows(report: Any) -> list[list[str]]:
    return [
        [
            c.kind,
            ",".join(c.axes) if c.axes else (c.groups[:40] or "—"),
            str(c.group_size) if c.group_size else "",
            c.out_type,
            fmt_bytes(c.nbytes),
            c.source or c.op_name or "",
        ]
        for c in report.collectives
    ]


_COLL_HEAD = ["collective", "over", "group", "result", "bytes/call", "from"]
_ESTIMATE = (
    "estimates by this backend's compiler ({backend}); on GPU/TPU the same call is compiled by "
    "theirs, which fuses and schedules differently"
)


def plan_text(report: Any, *, width: int = 100) -> str:
    """A plan as plain text."""
    out = _plan_head(report)
    if report.memory:
        out += ["", "memory per device"]
        out += [f"  {label:<58} {fmt_bytes(report.memory[key]):>10}" for label, key in _MEM_ROWS]
        if _donation_line(report):
            out.append(T.wrap(_donation_line(report), width=width, first="  ", indent="  "))
    else:
        out.append("memory analysis: not reported by this backend")
    if report.collectives:
        out += [
            "",
            f"collectives XLA inserted ({len(report.collectives)}, "
            f"{fmt_bytes(report.communication_bytes())} per device per call)",
            T.table(_COLL_HEAD, _collective_rows(report), numeric=(2, 4), max_col=60),
        ]
    else:
        out += ["", "no collectives: every device computes alone"]
    if report.sweep:
        out += ["", _sweep_line(report)]
        out += [
            f"  batch {b:>8}  peak {fmt_bytes(p):>10}  {'fits' if p <= report.capacity[1] else 'too big'}"
            for b, p in report.sweep
        ]
    out.append(T.wrap("note: " + _ESTIMATE.format(backend=report.backend), width=width))
    return "\n".join(out)


def _donation_line(report: Any) -> str:
    if not report.donatable:
        return ""
    return (
        f"donating the arguments you replace (donate_argnums) would let outputs reuse "
        f"{fmt_bytes(report.donatable)} per device: arguments of an output's exact type, not donated yet"
    )


def _sweep_line(report: Any) -> str:
    name = report.capacity[0]
    if report.max_batch is None:
        return f"batch sweep: no batch size tried fits {name}"
    return f"batch sweep: the largest batch that fits {name} is {report.max_batch} ({len(report.sweep)} compiles)"


def plan_html(report: Any, *, notes: Sequence[str] = ()) -> str:
    """A plan as self-contained HTML (``notes`` go under the title)."""
    head = _plan_head(report)
    parts = [f"<h3>{H.esc(head[0])}</h3>", f"<div class='jm-totals'>{H.esc(head[1])}</div>"]
    parts += [f"<div class='jm-muted'>note: {H.esc(n)}</div>" for n in notes]
    if len(head) > 2:
        parts.append(
            f"<div>{H.badge('fits' if report.fits else 'does not fit', 'ok' if report.fits else 'bad')} "
            f"{H.esc(head[2])}</div>"
        )
    if report.memory:
        peak = report.memory["peak_bytes"] or 1
        rows = [
            [
                H.esc(label),
                (H.esc(fmt_bytes(report.memory[key])), report.memory[key]),
                H.bar(report.memory[key] / peak),
            ]
            for label, key in _MEM_ROWS
        ]
        parts += ["<h4>Memory per device</h4>", H.table(["", "bytes", ""], rows, numeric=(1,))]
        if _donation_line(report):
            parts.append(f"<div class='jm-muted'>{H.esc(_donation_line(report))}</div>")
    if report.collectives:
        parts += [
            f"<h4>Collectives XLA inserted ({len(report.collectives)}, "
            f"{H.esc(fmt_bytes(report.communication_bytes()))} per device per call)</h4>",
            H.table(
                _COLL_HEAD,
                [[H.esc(c) for c in r] for r in _collective_rows(report)],
                numeric=(2, 4),
                sortable=True,
            ),
        ]
    else:
        parts.append("<p>No collectives: every device computes alone.</p>")
    if report.sweep:
        cap = report.capacity[1]
        rows = [
            [
                (H.esc(b), b),
                (H.esc(fmt_bytes(p)), p),
                H.badge("fits", "ok") if p <= cap else H.badge("too big", "bad"),
            ]
            for b, p in report.sweep
        ]
        parts += [
            f"<h4>{H.esc(_sweep_line(report))}</h4>",
            H.table(["batch", "peak", ""], rows, numeric=(0, 1)),
        ]
    parts.append(f"<div class='jm-muted'>{H.esc(_ESTIMATE.format(backend=report.backend))}</div>")
    return H.document("".join(parts), sortable=True)
