"""Plain-text building blocks: aligned tables and wrapped paragraphs at a fixed width."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

DEFAULT_WIDTH = 100


def table(
    headers: Sequence[str],
    rows: Sequence[Sequence[object]],
    *,
    numeric: Sequence[int] = (),
    max_col: int = 48,
) -> str:
    """Columns padded to their widest cell; ``numeric`` columns right-aligned.

    Cells longer than ``max_col`` are cut with an ellipsis so one long name cannot push
    the whole table off screen.
    """

    def clip(v: object) -> str:
        s = str(v)
        return s if len(s) <= max_col else s[: max_col - 1] + "…"

    cells = [[clip(h) for h in headers]] + [[clip(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(r: Sequence[str]) -> str:
        parts = [c.rjust(w) if i in numeric else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))]
        return "  ".join(parts).rstrip()

    rule = "  ".join("─" * w for w in widths)
    return "\n".join([line(cells[0]), rule, *(line(r) for r in cells[1:])])


def wrap(text: str, *, width: int = DEFAULT_WIDTH, indent: str = "", first: str | None = None) -> str:
    """Wrap a paragraph; ``first`` prefixes the first line (e.g. a bullet), ``indent`` the rest."""
    return textwrap.fill(
        text,
        width=width,
        initial_indent=indent if first is None else first,
        subsequent_indent=indent,
        break_long_words=False,
        break_on_hyphens=False,
    )


def indent(text: str, prefix: str = "    ") -> str:
    """Indent every line of ``text`` (blank lines too, so blocks stay aligned)."""
    return "\n".join(prefix + line for line in text.splitlines())
