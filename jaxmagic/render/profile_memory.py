"""The memory section of a ``ProfileReport`` (text and HTML): live bytes per device before and
after the block, the arrays it created that are still alive with their owner, what it freed,
and the peak per device of each compiled program."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from jaxmagic._format import fmt_bytes, plural
from jaxmagic.render import html as H
from jaxmagic.render import text as T
from jaxmagic.render.sharding import device_ranges

if TYPE_CHECKING:
    from jaxmagic.profile.report import FunctionProfile, ProfileReport

CREATED_ROWS = 10
PEAK_FORMULA = "arguments + outputs + temporaries − aliased + code"
_PEAK_HEAD = ["function", "arguments", "outputs", "temporaries", "aliased", "code", "peak"]
_CREATED_HEAD = ["bytes", "type", "where", "owner"]
_STATS = (("in use before", "stats_before", "bytes_in_use"), ("in use after", "stats_after", "bytes_in_use"))


def signed_bytes(n: int) -> str:
    """``+8.0 MiB``, ``−4.0 KiB``, ``0 B``."""
    if n == 0:
        return "0 B"
    return ("+" if n > 0 else "−") + fmt_bytes(abs(n))


def _is_shown(d: Any) -> bool:
    return bool(d.before or d.after or d.stats_before or d.stats_after)


def _shown(m: Any) -> list[Any]:
    """Devices that held arrays or report counters (an idle simulated device is noise)."""
    return [d for d in m.devices if _is_shown(d)]


def _idle(m: Any) -> str:
    idle = [d.id for d in m.devices if not _is_shown(d)]
    if not idle:
        return ""
    which = f"devices {device_ranges(idle)}" if len(idle) > 1 else f"device {idle[0]}"
    return f"{which}: no live arrays before or after"


def _has_stats(m: Any) -> bool:
    return any(d.stats_before or d.stats_after for d in m.devices)


def _device_rows(m: Any) -> list[list[str]]:
    rows = []
    for d in _shown(m):
        row = [str(d.id), fmt_bytes(d.before), fmt_bytes(d.after), signed_bytes(d.change)]
        if _has_stats(m):
            row += [fmt_bytes((getattr(d, attr) or {}).get(key)) for _, attr, key in _STATS]
            row.append(fmt_bytes((d.stats_after or {}).get("peak_bytes_in_use")))
        rows.append(row)
    return rows


def _device_head(m: Any) -> list[str]:
    head = ["device", "before", "after", "change"]
    if _has_stats(m):
        head += [label for label, _, _ in _STATS] + ["peak in use (process)"]
    return head


def _where(a: Any) -> str:
    if len(a.devices) == 1:
        return f"device {a.devices[0][0]}"
    return f"{len(a.devices)} devices {a.sharding}".rstrip()


def _created_rows(m: Any) -> list[list[str]]:
    return [[fmt_bytes(a.nbytes), a.type_str, _where(a), a.owner] for a in m.created[:CREATED_ROWS]]


def _peaks(r: ProfileReport) -> list[FunctionProfile]:
    return [f for f in r.functions if f.kind == "jit" and f.memory]


def _peak_row(f: FunctionProfile) -> list[str]:
    m = f.memory
    keys = ("argument_bytes", "output_bytes", "temp_bytes", "alias_bytes", "generated_code_bytes")
    return [f.name, *(fmt_bytes(m[k]) for k in keys), fmt_bytes(f.peak_bytes)]


def _created_line(r: ProfileReport) -> str:
    m = r.memory
    what = f"{plural(len(m.created), 'array')}, {fmt_bytes(m.created_bytes)}" if m.created else "none"
    return f"created in the {r.label}, still alive: {what}"


def _freed_line(r: ProfileReport) -> str:
    m = r.memory
    if not m.freed:
        return f"freed in the {r.label}: nothing that was alive before it"
    were = "was" if m.freed == 1 else "were"
    return (
        f"freed in the {r.label}: {plural(m.freed, 'array')} ({fmt_bytes(m.freed_bytes)}) "
        f"that {were} alive before it"
    )


def _more(m: Any) -> str:
    extra = len(m.created) - CREATED_ROWS
    return f"… {extra} more (report.memory.created has all)" if extra > 0 else ""


def memory_text(r: ProfileReport, *, width: int = 100) -> list[str]:
    """The section's lines for ``profile_text`` (empty when nothing was measured)."""
    m = r.memory
    peaks = _peaks(r)
    if m is None and not peaks:
        return []
    out = ["", "Memory (live device arrays, shared buffers counted once)"]
    if m is not None:
        if _shown(m):
            out.append(T.indent(T.table(_device_head(m), _device_rows(m), numeric=range(1, 8)), "  "))
        if _idle(m):
            out.append(f"  {_idle(m)}")
        out.append(f"  {_created_line(r)}")
        if m.created:
            out.append(T.indent(T.table(_CREATED_HEAD, _created_rows(m), numeric=(0,), max_col=60), "    "))
            if _more(m):
                out.append(f"    {_more(m)}")
        out.append(f"  {_freed_line(r)}")
        out += [T.wrap(n, width=width, first="  note: ", indent="        ") for n in m.notes]
    if peaks:
        out.append(
            T.wrap(
                f"peak per device of each compiled program = {PEAK_FORMULA}",
                width=width,
                first="  ",
                indent="    ",
            )
        )
        out.append(T.indent(T.table(_PEAK_HEAD, [_peak_row(f) for f in peaks], numeric=range(1, 7)), "    "))
    return out


def memory_html(r: ProfileReport) -> str:
    """The section as an HTML fragment for ``profile_html`` (empty when nothing was measured)."""
    m = r.memory
    peaks = _peaks(r)
    if m is None and not peaks:
        return ""
    parts = [
        "<h4>Memory <span class='jm-muted'>(live device arrays, shared buffers counted once)</span></h4>"
    ]
    if m is not None:
        stats = [
            ("before", fmt_bytes(m.before_bytes)),
            ("after", fmt_bytes(m.after_bytes)),
            ("change", signed_bytes(m.after_bytes - m.before_bytes)),
            ("created, alive", fmt_bytes(m.created_bytes)),
            ("freed", fmt_bytes(m.freed_bytes)),
        ]
        parts.append(
            '<div class="jm-totals">'
            + "".join(f'<span class="jm-stat">{H.esc(k)} <b>{H.esc(v)}</b></span>' for k, v in stats)
            + "</div>"
        )
        if _shown(m):
            head = _device_head(m)
            parts.append(
                H.table(
                    head, [[H.esc(c) for c in row] for row in _device_rows(m)], numeric=range(1, len(head))
                )
            )
        if _idle(m):
            parts.append(f"<div class='jm-muted'>{H.esc(_idle(m))}</div>")
        parts.append(f"<div>{H.esc(_created_line(r))}</div>")
        if m.created:
            rows = [
                [
                    (H.esc(row[0]), a.nbytes),
                    f"<code>{H.esc(row[1])}</code>",
                    H.esc(row[2]),
                    f"<code>{H.esc(row[3])}</code>",
                ]
                for row, a in zip(_created_rows(m), m.created)
            ]
            parts.append(H.table(_CREATED_HEAD, rows, numeric=(0,), sortable=True, cls="jm-created"))
            if _more(m):
                parts.append(f"<div class='jm-muted'>{H.esc(_more(m))}</div>")
        parts.append(f"<div>{H.esc(_freed_line(r))}</div>")
        parts += [f"<div class='jm-muted'>note: {H.esc(n)}</div>" for n in m.notes]
    if peaks:
        parts.append(f"<div>Peak per device of each compiled program = {H.esc(PEAK_FORMULA)}</div>")
        keys = ("argument_bytes", "output_bytes", "temp_bytes", "alias_bytes", "generated_code_bytes")
        rows = [
            [f"<code>{H.esc(f.name)}</code>"]
            + [(H.esc(c), v) for c, v in zip(_peak_row(f)[1:], [*(f.memory[k] for k in keys), f.peak_bytes])]
            for f in peaks
        ]
        parts.append(H.table(_PEAK_HEAD, rows, numeric=range(1, 7), sortable=True, cls="jm-peaks"))
    return "".join(parts)
