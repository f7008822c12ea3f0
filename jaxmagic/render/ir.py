"""Rendering of IR text (jaxpr, StableHLO, HLO): highlighting and foldable nested blocks."""

from __future__ import annotations

import re

from jaxmagic.render.html import esc

_TYPE = re.compile(r"\b((?:bf|f|i|u|c)\d+|bool|pred|tensor|key&lt;\w+&gt;)(\[[\d,]*\]|&lt;[^&]*&gt;)")
_KW = re.compile(
    r"(?<![\w.])(lambda|let|in|func\.func|return|module|stablehlo\.\w+|ENTRY|ROOT|HloModule)(?![\w])"
)


def highlight(text: str) -> str:
    """Escape IR text and wrap types and keywords in highlight spans."""
    out = esc(text)
    out = _TYPE.sub(r'<span class="hl-ty">\1\2</span>', out)
    out = _KW.sub(r'<span class="hl-kw">\1</span>', out)
    return out


def foldable(text: str) -> str:
    """Jaxpr text as HTML in which every multi-line equation (``pjit[``, ``scan[``, ``cond[``
    ... with its nested sub-jaxpr) is a collapsible block, collapsed by default.

    Only ``<details>`` is used, so folding works without JavaScript (saved notebooks).
    """
    out = ['<pre class="jm-ir">']
    open_indents: list[int] = []
    for line in text.splitlines():
        stripped = line.lstrip()
        indent = len(line) - len(stripped)
        if open_indents and stripped.startswith("]") and indent == open_indents[-1]:
            out.append(highlight(line) + "\n</details>")
            open_indents.pop()
        elif line.rstrip().endswith("["):
            out.append(
                f'<details class="jm-fold"><summary>{highlight(line)}<span class="jm-ell"> … ]</span></summary>'
            )
            open_indents.append(indent)
        else:
            out.append(highlight(line) + "\n")
    out.extend("</details>" for _ in open_indents)
    out.append("</pre>")
    return "".join(out)


def _cost_line(report) -> str:
    from jaxmagic._format import fmt_bytes, fmt_count

    c, m = report.cost, report.memory
    flops, nbytes = c.get("flops"), c.get("bytes_accessed")
    intensity = f"{flops / nbytes:.2f}" if flops is not None and nbytes else "n/a"
    parts = [
        f"FLOPs {fmt_count(flops)}",
        f"transcendentals {fmt_count(c.get('transcendentals'))}",
        f"bytes accessed {fmt_bytes(nbytes)}",
        f"FLOPs/byte {intensity}",
    ]
    if m:
        parts += [
            f"arguments {fmt_bytes(m['argument_bytes'])}",
            f"outputs {fmt_bytes(m['output_bytes'])}",
            f"aliased {fmt_bytes(m['alias_bytes'])}",
            f"temporaries {fmt_bytes(m['temp_bytes'])}",
        ]
    return " · ".join(parts)


_TITLES = {"jaxpr": "jaxpr", "stablehlo": "StableHLO", "hlo": "optimized HLO"}


def ir_text(report, *, width: int = 100) -> str:
    """Plain text: header with types, the leading IR, cost line when compiled."""
    head = f"{_TITLES[report.stage]} of {report.name}({report.signature}) -> {report.out_signature}"
    out = [head] + [f"note: {n}" for n in report.notes] + [report.main_text()]
    if report.stage != "jaxpr":
        out.append(_cost_line(report))
    return "\n".join(out)


def ir_html(report) -> str:
    """HTML: the leading IR (jaxpr with foldable sub-jaxprs), the other stages collapsed."""
    from jaxmagic.render import html as H

    head = (
        f"<h3>{_TITLES[report.stage]} of <code>{H.esc(report.name)}</code></h3>"
        f"<div class='jm-muted'><code>({H.esc(report.signature)}) → {H.esc(report.out_signature)}</code></div>"
    )
    parts = [head] + [f"<div class='jm-muted'>note: {H.esc(n)}</div>" for n in report.notes]
    if report.stage != "jaxpr":
        parts.append(f"<div class='jm-totals'>{H.esc(_cost_line(report))}</div>")
    main = (
        foldable(report.jaxpr)
        if report.stage == "jaxpr"
        else f'<pre class="jm-ir">{highlight(report.main_text())}</pre>'
    )
    parts.append(main)
    for stage in ("jaxpr", "stablehlo", "hlo"):
        text = getattr(report, stage)
        if stage != report.stage and text:
            body = foldable(text) if stage == "jaxpr" else f'<pre class="jm-ir">{highlight(text)}</pre>'
            parts.append(H.details(_TITLES[stage], body, cls=f"jm-{stage}"))
    return H.document("".join(parts))
