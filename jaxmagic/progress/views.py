"""Views of a tracked loop: the terminal line here, the notebook widget in
``jaxmagic.widgets.loops`` (imported only inside a notebook kernel, so this never imports
IPython). A view gets ``start`` once, ``update`` at most ``max_rate`` times per second, and
``finish`` with the final report."""

from __future__ import annotations

import time
from typing import Any, TextIO

from jaxmagic._kernel import choose_view
from jaxmagic._terminal import StatusLine
from jaxmagic.progress.state import LoopRun, ProgressReport


class LoopView:
    """Base class of a loop's view; every hook's default does nothing."""

    def start(self, run: LoopRun, report: ProgressReport) -> None:
        """The loop's first update (``run.stop_requested = True`` ends a Python loop early)."""

    def update(self, report: ProgressReport) -> None:
        """A redraw (throttled by the run)."""

    def finish(self, report: ProgressReport) -> None:
        """The loop ended; ``report`` is final."""


class TerminalLoopView(StatusLine, LoopView):
    """One line redrawn in place on a terminal; on a stream that is not one (logs, CI), a line
    every ``log_every`` seconds; the full text report when the loop ends.

    Args:
      stream: where to write (default ``sys.stdout``).
      log_every: seconds between lines on a non-terminal stream.
      width: characters per line.
      summary: end with the full report (with sparklines) instead of the last line only.

    Example:
      >>> for step in jaxmagic.track(range(10), progress=TerminalLoopView(sys.stderr)): ...
    """

    def __init__(
        self, stream: TextIO | None = None, *, log_every: float = 5.0, width: int = 100, summary: bool = True
    ):
        self.stream, self.log_every, self.width, self.summary = stream, float(log_every), width, summary
        self._logged = -float("inf")
        self._drawn = False

    def update(self, report: ProgressReport) -> None:
        from jaxmagic.render.loops import loop_line

        if not self._tty():  # a log gets a line every log_every seconds
            if time.perf_counter() - self._logged < self.log_every:
                return
            self._logged = time.perf_counter()
        self._write_line(loop_line(report, self.width))

    def finish(self, report: ProgressReport) -> None:
        from jaxmagic.render.loops import loop_line

        self._clear_line()
        out = self._out()
        out.write((report.to_text(self.width) if self.summary else loop_line(report, self.width)) + "\n")
        out.flush()


def resolve_view(progress: Any) -> LoopView | None:
    """``progress=`` -> a view: ``"auto"`` (the widget in a notebook kernel, else the terminal
    line), ``"widget"``, ``"text"``, ``None``/``False`` (silent) or a :class:`LoopView`."""

    def widget() -> LoopView:
        from jaxmagic.widgets.loops import LoopWidgetView  # lazy: widget code stays out of capture

        return LoopWidgetView()

    return choose_view(progress, LoopView, widget, TerminalLoopView)


def check_progress(progress: Any) -> None:
    """Reject a bad ``progress=`` at the call, before any loop runs or anything is traced."""
    if not (progress is None or progress is False or isinstance(progress, LoopView)) and progress not in (
        "auto",
        "widget",
        "text",
        "terminal",
    ):
        raise ValueError(f"progress must be 'auto', 'widget', 'text', None or a LoopView, got {progress!r}")
