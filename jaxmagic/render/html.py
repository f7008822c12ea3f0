"""Building blocks for self-contained HTML reports.

Everything a report needs is inline: the stylesheet ``jaxmagic.css`` (scoped under ``.jm``,
shared with the widgets) and, where useful, a few lines of JavaScript as progressive
enhancement (sorting). Reports stay readable with scripts stripped (untrusted notebooks,
nbconvert): collapsibles are ``<details>``. Colours come from JupyterLab's theme variables
with fallbacks, and text colour is inherited, so the same HTML reads in light and dark themes.
"""

from __future__ import annotations

import html as _html
import itertools
import os
import pathlib
import re
from collections.abc import Iterable, Sequence

_ids = itertools.count()

CSS_PATH = pathlib.Path(__file__).with_name("jaxmagic.css")
#: The one stylesheet of every report and both widgets (their ``_css``), read once; inlined
#: without comments and line breaks, since every report carries a copy.
CSS = re.sub(r"/\*.*?\*/|\n", "", CSS_PATH.read_text(encoding="utf-8"), flags=re.S)

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
