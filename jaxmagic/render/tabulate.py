"""Text and HTML for the per-layer cost table (``%jaxtabulate``)."""

from __future__ import annotations

from typing import Any

from jaxmagic._format import fmt_count, fmt_seconds
from jaxmagic.layercost.report import fmt_row_numbers
from jaxmagic.render import html as H
from jaxmagic.render import text as T

_HEAD = [
    "path",
    "module",
    "inputs",
    "outputs",
    "params",
    "param bytes",
    "FLOPs",
    "self FLOPs",
    "bytes accessed",
    "output bytes",
]
_TIME_HEAD = ["device time", "self time"]
_NOTE = (
    "FLOPs and bytes accessed: XLA's cost analysis of each call compiled alone, including the "
    "calls inside it; self FLOPs: the part outside them. The first row is the whole call."
)


def _head(report: Any) -> list[str]:
    return _HEAD + (_TIME_HEAD if report.timed else [])


def _numeric(report: Any) -> range:
    return range(4, len(_head(report)))


def _notes(report: Any) -> list[str]:
    return [_NOTE] + ([report.timing[0].upper() + report.timing[1:] + "."] if report.timing else [])


def _cells(report: Any, i: int) -> list[str]:
    r = report.rows[i]
    nums = fmt_row_numbers(r)
    timed = [fmt_seconds(r.device_s), fmt_seconds(report.self_device_s(i))] if report.timed else []
    return [
        "  " * r.depth + r.path,
        r.module,
        r.inputs,
        r.outputs,
        nums[0],
        nums[1],
        nums[2],
        fmt_count(report.self_flops(i)),
        nums[3],
        nums[4],
        *timed,
    ]


def tabulate_text(report: Any, *, width: int = 100) -> str:
    """The table as plain text."""
    rows = [_cells(report, i) for i in range(len(report.rows))]
    return "\n".join(
        [
            f"Per-layer cost · {report.summary()}",
            "",
            T.table(_head(report), rows, numeric=_numeric(report), max_col=40),
            "",
            *(T.wrap(n, width=width) for n in _notes(report)),
        ]
    )


def tabulate_html(report: Any) -> str:
    """The table as self-contained HTML."""
    rows = []
    for i, r in enumerate(report.rows):
        c = _cells(report, i)
        rows.append(
            [
                f"<code>{'&nbsp;&nbsp;' * r.depth}{H.esc(r.path)}</code>",
                H.esc(c[1]),
                f"<code>{H.esc(c[2])}</code>",
                f"<code>{H.esc(c[3])}</code>",
                (H.esc(c[4]), r.params),
                (H.esc(c[5]), r.param_bytes),
                (H.esc(c[6]), r.flops or 0),
                (H.esc(c[7]), report.self_flops(i) or 0),
                (H.esc(c[8]), r.bytes_accessed or 0),
                (H.esc(c[9]), r.output_bytes),
            ]
            + (
                [(H.esc(c[10]), r.device_s or 0), (H.esc(c[11]), report.self_device_s(i) or 0)]
                if report.timed
                else []
            )
        )
    body = (
        f"<h3>Per-layer cost <span class='jm-muted'>· {H.esc(report.summary())}</span></h3>"
        + H.table(_head(report), rows, numeric=_numeric(report), sortable=True)
        + "".join(f"<div class='jm-muted'>{H.esc(n)}</div>" for n in _notes(report))
    )
    return H.document(body, sortable=True)
