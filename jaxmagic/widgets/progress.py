"""The notebook progress view for ``Trainer.fit``: an anywidget that updates live and leaves a
static HTML snapshot when training ends (so a saved notebook shows the final state).

Updates are throttled (at most ``max_rate`` per second) and built from host-side numbers the
trainer already has, so the widget never forces a device sync. The Stop button works while
the cell is busy: the widget's messages are routed to a kernel subshell (ipykernel ≥ 7),
whose thread sets the trainer's stop flag; training ends at the next step-call boundary.
"""

from __future__ import annotations

import pathlib
import time
import warnings
from collections.abc import Callable
from typing import Any

import anywidget
import numpy as np
import traitlets

from jaxmagic._internals import InternalsChanged, route_comm_to_subshell
from jaxmagic.render.html import CSS_PATH
from jaxmagic.render.training import history_html, progress_view, run_summary_text
from jaxmagic.train.callbacks import Callback


class TrainingProgressWidget(anywidget.AnyWidget):
    """Progress bar, throughput, ETA, live curves, metrics table, checkpoints and a Stop button.

    Python computes, the browser draws: ``view`` holds formatted strings and the chart as the
    SVG :func:`~jaxmagic.render.training.svg_chart` makes (see
    :func:`~jaxmagic.render.training.progress_view`); the browser reports only Stop.
    """

    _esm = pathlib.Path(__file__).with_name("progress.js")
    _css = CSS_PATH
    view = traitlets.Dict().tag(sync=True)
    stop_requested = traitlets.Bool(False).tag(sync=True)


class WidgetProgress(Callback):
    """The notebook view ``progress="auto"`` picks inside a Jupyter kernel.

    Args:
      max_rate: widget updates per second at most.

    Example:
      >>> trainer.fit(data, steps=500, progress=WidgetProgress(max_rate=4))
    """

    def __init__(self, max_rate: float = 10.0):
        self.max_rate = float(max_rate)
        self.widget: TrainingProgressWidget | None = None
        self._handle: Any = None
        self._unroute: Callable[[], None] | None = None
        self._last = 0.0
        self._trainer: Any = None

    def on_train_begin(self, trainer: Any, info: dict[str, Any]) -> None:
        from IPython.display import display

        self._trainer = trainer
        self.widget = TrainingProgressWidget()
        self.widget.observe(self._on_stop, names="stop_requested")
        self._handle = display(self.widget, display_id=True)
        # Stop must arrive while this cell is busy: route the widget's messages to a subshell
        # (ipykernel >= 7); without one, Stop takes effect between cells.
        try:
            self._unroute = route_comm_to_subshell(getattr(self.widget, "comm", None))
        except InternalsChanged as e:
            warnings.warn(f"the Stop button takes effect only when this cell ends: {e}", stacklevel=2)
        self._push(trainer, force=True)

    def _on_stop(self, change: dict[str, Any]) -> None:
        if change["new"] and self._trainer is not None:
            self._trainer.request_stop("stopped from the widget")

    def _push(self, trainer: Any, force: bool = False) -> None:
        now = time.perf_counter()
        if self.widget is None or (not force and now - self._last < 1.0 / self.max_rate):
            return
        self._last = now
        self.widget.view = progress_view(trainer.progress, trainer.history)

    def on_steps(self, trainer: Any, steps: np.ndarray, logs: dict[str, np.ndarray]) -> None:
        self._push(trainer)

    def on_eval(self, trainer: Any, step: int, logs: dict[str, float]) -> None:
        self._push(trainer)

    def on_checkpoint(self, trainer: Any, step: int, path: str) -> None:
        self._push(trainer)

    def on_train_end(self, trainer: Any, history: Any) -> None:
        if self._unroute is not None:
            self._unroute()
            self._unroute = None
        self._push(trainer, force=True)
        if self._handle is not None:
            snapshot = history_html(history, trainer.progress)
            text = f"{trainer.progress.message}\n{run_summary_text(history)}"
            self._handle.update({"text/html": snapshot, "text/plain": text}, raw=True)
        if self.widget is not None:
            self.widget.close()
        self._trainer = None
