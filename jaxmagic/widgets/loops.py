"""The notebook view of a tracked loop (``jaxmagic.track``, ``jaxmagic.progress.scan``): the
trainer's progress widget, fed :func:`~jaxmagic.render.loops.loop_view`, replaced by the
report's static HTML when the loop ends (so a saved notebook shows where it got)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from jaxmagic._internals import route_comm_to_subshell
from jaxmagic.progress.state import LoopRun, ProgressReport
from jaxmagic.progress.views import LoopView
from jaxmagic.render.loops import loop_view
from jaxmagic.widgets.progress import TrainingProgressWidget


class LoopWidgetView(LoopView):
    """The widget ``progress="auto"`` picks inside a Jupyter kernel.

    A Python loop (``track``) gets a Stop button: the loop ends before its next iteration,
    as if the iterable were exhausted. Jitted loops cannot be stopped from the host, so
    theirs is hidden.

    Example:
      >>> for step in jaxmagic.track(range(100), progress=LoopWidgetView()): ...
    """

    def __init__(self) -> None:
        self.widget: TrainingProgressWidget | None = None
        self._handle: Any = None
        self._unroute: Callable[[], None] | None = None
        self._run: LoopRun | None = None

    def start(self, run: LoopRun, report: ProgressReport) -> None:
        from IPython.display import display

        self._run = run
        self.widget = TrainingProgressWidget()
        self.widget.view = loop_view(report, stoppable=self._stoppable)
        if self._stoppable:
            self.widget.observe(self._on_stop, names="stop_requested")
            # Stop must arrive while the cell is busy: a kernel subshell (ipykernel >= 7)
            self._unroute = route_comm_to_subshell(getattr(self.widget, "comm", None))
        self._handle = display(self.widget, display_id=True)

    @property
    def _stoppable(self) -> bool:
        return self._run is not None and self._run.kind == "python"

    def _on_stop(self, change: dict[str, Any]) -> None:
        if change["new"] and self._run is not None:
            self._run.stop_requested = True

    def update(self, report: ProgressReport) -> None:
        if self.widget is not None:
            self.widget.view = loop_view(report, stoppable=self._stoppable)

    def finish(self, report: ProgressReport) -> None:
        if self._unroute is not None:
            self._unroute()
            self._unroute = None
        if self._handle is not None:
            self._handle.update({"text/html": report.to_html(), "text/plain": report.to_text()}, raw=True)
        if self.widget is not None:
            self.widget.close()
        self._run = None
