"""One status line on a text stream, for the trainer's and the tracked loops' terminal views:
redrawn in place (``\\r``) on a terminal, written as a new line elsewhere (logs, CI)."""

from __future__ import annotations

import sys
from typing import TextIO


class StatusLine:
    """Mixin of a terminal view; the view sets ``stream`` (``None``: ``sys.stdout``, looked up at
    each write, so a redirected stdout is followed), ``width`` and ``_drawn = False``."""

    stream: TextIO | None
    width: int
    _drawn: bool

    def _out(self) -> TextIO:
        return self.stream if self.stream is not None else sys.stdout

    def _tty(self) -> bool:
        try:
            return bool(self._out().isatty())
        except Exception:  # a closed or odd stream is not a terminal
            return False

    def _write_line(self, line: str) -> None:
        """Redraw ``line`` in place on a terminal; elsewhere write it as a line of its own."""
        out = self._out()
        if self._tty():
            out.write("\r" + line.ljust(self.width)[: self.width])
            self._drawn = True
        else:
            out.write(line + "\n")
        out.flush()

    def _clear_line(self) -> None:
        """Blank the line drawn in place, if any, before the final lines are written."""
        if self._drawn:
            self._out().write("\r" + " " * self.width + "\r")
