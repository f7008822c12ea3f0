"""Building blocks for self-contained HTML reports.

Everything a report needs is inline: CSS scoped under ``.jm`` and, where useful, a few
lines of JavaScript as progressive enhancement (sorting). Reports stay readable with
scripts stripped (untrusted notebooks, nbconvert): collapsibles are ``<details>``.
Colours come from JupyterLab's theme variables with light fallbacks, and text colour is
inherited, so the same HTML reads well in light and dark themes.
"""

from __future__ import annotations

import html as _html
import itertools
import os
from typing import Iterable, Sequence

_ids = itertools.count()

CSS = """
/* .jm.jm: beat JupyterLab's :not(.jp-RenderedMarkdown).jp-RenderedHTMLCommon td (right-aligned) */
.jm{font-family:var(--jp-ui-font-family,system-ui,-apple-system,'Segoe UI',sans-serif);font-size:13px;line-height:1.45;color:inherit;max-width:100%;overflow-x:auto}
.jm h3{font-size:14px;margin:.2em 0 .4em;font-weight:600}
.jm h4{font-size:13px;margin:.8em 0 .3em;font-weight:600}
.jm .jm-muted{opacity:.7}
.jm .jm-totals{display:flex;flex-wrap:wrap;gap:6px 18px;margin:.3em 0 .6em}
.jm .jm-stat b{font-variant-numeric:tabular-nums}
.jm table{border-collapse:collapse;margin:.3em 0;font-variant-numeric:tabular-nums}
.jm table th,.jm table td{padding:3px 10px;border-bottom:1px solid var(--jp-border-color2,rgba(128,128,128,.3));text-align:left;vertical-align:top}
.jm table th{font-weight:600;border-bottom:2px solid var(--jp-border-color1,rgba(128,128,128,.5));white-space:nowrap}
.jm.jm table th,.jm.jm table td{text-align:left}.jm.jm table td.num,.jm.jm table th.num{text-align:right}
.jm table tbody tr:nth-child(odd){background:transparent}.jm table tbody tr:hover{background:rgba(128,128,128,.08)}
.jm table.jm-sortable th{cursor:pointer;user-select:none}
.jm table.jm-sortable th[data-dir=asc]::after{content:' \\25B2';font-size:9px}
.jm table.jm-sortable th[data-dir=desc]::after{content:' \\25BC';font-size:9px}
.jm details{margin:.25em 0}
.jm summary{cursor:pointer}
.jm pre{font-family:var(--jp-code-font-family,ui-monospace,SFMono-Regular,Menlo,Consolas,monospace);font-size:12px;background:rgba(128,128,128,.08);border:1px solid var(--jp-border-color2,rgba(128,128,128,.25));border-radius:4px;padding:6px 8px;margin:.3em 0;overflow:auto;max-height:420px;white-space:pre;color:inherit}
.jm code{font-family:var(--jp-code-font-family,ui-monospace,monospace);font-size:12px}
.jm .jm-badge{display:inline-block;padding:0 6px;border-radius:8px;font-size:11px;font-weight:600;background:rgba(128,128,128,.18)}
.jm .jm-warn{background:rgba(230,140,0,.22)}
.jm .jm-bad{background:rgba(220,50,50,.22)}
.jm .jm-ok{background:rgba(40,160,80,.22)}
.jm .jm-info{background:rgba(40,110,220,.2)}
.jm .jm-insight{border-left:3px solid rgba(230,140,0,.8);padding:2px 8px;margin:4px 0;background:rgba(230,140,0,.07)}
.jm .jm-insight.jm-sev-info{border-left-color:rgba(40,110,220,.8);background:rgba(40,110,220,.06)}
.jm .jm-bar{display:inline-block;height:9px;background:rgba(40,110,220,.65);vertical-align:middle;border-radius:2px}
.jm .jm-bar.jm-compile{background:rgba(230,140,0,.75)}
.jm pre.jm-ir details{display:inline}.jm pre.jm-ir summary{display:inline;list-style:none}.jm pre.jm-ir summary::before{content:'\\25B8 ';opacity:.6}.jm pre.jm-ir details[open]>summary::before{content:'\\25BE '}.jm pre.jm-ir details[open]>summary .jm-ell{display:none}.jm pre.jm-ir details[open]>summary::after{content:'\\A';white-space:pre}
.jm .hl-kw{color:#a626a4;font-weight:600}.jm .hl-ty{color:#c18401}.jm .hl-var{color:#4078f2}.jm .hl-com{opacity:.6}
[data-jp-theme-light=false] .jm .hl-kw{color:#c678dd}[data-jp-theme-light=false] .jm .hl-ty{color:#e5c07b}[data-jp-theme-light=false] .jm .hl-var{color:#61afef}
"""

_SORT_JS = """
(function(){var root=document.getElementById(%(id)r);if(!root)return;
root.querySelectorAll('table.jm-sortable').forEach(function(t){
 t.querySelectorAll('th').forEach(function(th,i){th.addEventListener('click',function(){
  var dir=th.getAttribute('data-dir')==='asc'?'desc':'asc';
  t.querySelectorAll('th').forEach(function(h){h.removeAttribute('data-dir')});th.setAttribute('data-dir',dir);
  var body=t.tBodies[0],rows=Array.prototype.slice.call(body.rows);
  function key(r){var c=r.cells[i];if(!c)return '';var k=c.getAttribute('data-sort');
   if(k!==null&&k!==''&&!isNaN(+k))return +k;return (k!==null?k:c.textContent).toLowerCase();}
  rows.sort(function(a,b){var x=key(a),y=key(b);var c=(x<y?-1:x>y?1:0);return dir==='asc'?c:-c;});
  rows.forEach(function(r){body.appendChild(r)});});});});})();
"""


def esc(value: object) -> str:
    """HTML-escape ``str(value)`` (quotes included)."""
    return _html.escape(str(value), quote=True)


def document(body: str, *, sortable: bool = False) -> str:
    """Wrap ``body`` in a themed, self-contained ``.jm`` root with inline CSS (and sort JS)."""
    root_id = f"jm-{os.getpid()}-{next(_ids)}"
    script = f"<script>{_SORT_JS % {'id': root_id}}</script>" if sortable else ""
    return f'<div class="jm" id="{root_id}"><style>{CSS}</style>{body}{script}</div>'


Cell = "str | tuple[str, object]"


def table(
    headers: Sequence[str],
    rows: Iterable[Sequence[object]],
    *,
    numeric: Sequence[int] = (),
    sortable: bool = False,
    cls: str = "",
) -> str:
    """An HTML table. Cells are pre-escaped HTML strings, or ``(html, sort_key)`` pairs.

    ``numeric`` lists right-aligned column indices; ``sortable`` lets a click on a header
    sort by ``data-sort`` (when a cell gives a key) or by its text.
    """
    classes = " ".join(c for c in (cls, "jm-sortable" if sortable else "") if c)
    head = "".join(
        f'<th class="num">{esc(h)}</th>' if i in numeric else f"<th>{esc(h)}</th>"
        for i, h in enumerate(headers)
    )
    body = []
    for row in rows:
        cells = []
        for i, cell in enumerate(row):
            attrs = ' class="num"' if i in numeric else ""
            if isinstance(cell, tuple):
                cell, key = cell
                attrs += f' data-sort="{esc(key)}"'
            cells.append(f"<td{attrs}>{cell}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    cls_attr = f' class="{classes}"' if classes else ""
    return f"<table{cls_attr}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def details(summary: str, body: str, *, open: bool = False, cls: str = "") -> str:
    """A collapsible section; ``summary`` and ``body`` are HTML."""
    attrs = (" open" if open else "") + (f' class="{cls}"' if cls else "")
    return f"<details{attrs}><summary>{summary}</summary>{body}</details>"


def pre(text: str, *, cls: str = "") -> str:
    """Preformatted, escaped text."""
    cls_attr = f' class="{cls}"' if cls else ""
    return f"<pre{cls_attr}>{esc(text)}</pre>"


def badge(text: str, kind: str = "") -> str:
    """A small pill; ``kind`` is one of ``ok``, ``warn``, ``bad``, ``info`` or empty."""
    extra = f" jm-{kind}" if kind else ""
    return f'<span class="jm-badge{extra}">{esc(text)}</span>'


def bar(fraction: float, *, width_px: int = 120, cls: str = "") -> str:
    """A horizontal bar of ``fraction`` (clamped to 0..1) of ``width_px``."""
    w = max(0.0, min(1.0, fraction)) * width_px
    extra = f" {cls}" if cls else ""
    return f'<span class="jm-bar{extra}" style="width:{w:.1f}px"></span>'
