"""The notebook progress view for ``Trainer.fit``: an anywidget that updates live and leaves a
static HTML snapshot when training ends (so a saved notebook shows the final state).

Updates are throttled (at most ``max_rate`` per second) and built from host-side numbers the
trainer already has, so the widget never forces a device sync. The Stop button works while
the cell is busy: the widget's messages are routed to a kernel subshell (ipykernel ≥ 7),
whose thread sets the trainer's stop flag; training ends at the next step-call boundary.
"""

from __future__ import annotations

import math
import pathlib
import threading
import time
from typing import Any

import anywidget
import numpy as np
import traitlets

from jaxmagic.train.callbacks import Callback


class TrainingProgressWidget(anywidget.AnyWidget):
    """Progress bar, throughput, ETA, live curves, metrics table, checkpoints and a Stop button."""

    _esm = pathlib.Path(__file__).with_name("progress.js")
    state = traitlets.Dict().tag(sync=True)
    curves = traitlets.Dict().tag(sync=True)
    table = traitlets.Dict().tag(sync=True)
    checkpoints = traitlets.List().tag(sync=True)
    stop_requested = traitlets.Bool(False).tag(sync=True)


def _route_to_subshell(widget: Any) -> Any:
    """Deliver this widget's frontend messages on a kernel subshell thread, so they arrive while
    the main thread runs ``fit``. Returns a token for :func:`_drop_route`, or None if unsupported."""
    try:
        from ipykernel.kernelbase import Kernel

        if not Kernel.initialized():
            return None
        channel = getattr(Kernel.instance(), "shell_channel_thread", None)
        comm = getattr(widget, "comm", None)
        if channel is None or comm is None or not hasattr(comm, "_reply_subshell_for"):
            return None
        manager = channel.manager
        done, box = threading.Event(), {}

        def create() -> None:
            try:
                box["id"] = manager._create_subshell()
            finally:
                done.set()

        manager._shell_channel_io_loop.add_callback(create)
        if not done.wait(5) or "id" not in box:
            return None
        sid = box["id"]
        comm._reply_subshell_for = lambda data, default: sid
        return manager, sid
    except Exception:  # private ipykernel API: degrade to "Stop works between cells" silently
        return None


def _drop_route(route: Any) -> None:
    if route is None:
        return
    manager, sid = route
    try:
        manager._shell_channel_io_loop.add_callback(lambda: manager._delete_subshell(sid))
    except Exception:
        pass


def _points(xs: np.ndarray, ys: np.ndarray, n: int = 300) -> list[list[float]]:
    from jaxmagic.render.training import downsample

    x, y = downsample(xs, ys, n)
    return [[float(a), float(b)] for a, b in zip(x, y)]


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
        self._route: Any = None
        self._last = 0.0
        self._trainer: Any = None

    def on_train_begin(self, trainer: Any, info: dict[str, Any]) -> None:
        from IPython.display import display

        self._trainer = trainer
        self.widget = TrainingProgressWidget()
        self.widget.observe(self._on_stop, names="stop_requested")
        self._handle = display(self.widget, display_id=True)
        self._route = _route_to_subshell(self.widget)
        self._push(trainer, force=True)

    def _on_stop(self, change: dict[str, Any]) -> None:
        if change["new"] and self._trainer is not None:
            self._trainer.request_stop("stopped from the widget")

    def _push(self, trainer: Any, force: bool = False) -> None:
        now = time.perf_counter()
        if self.widget is None or (not force and now - self._last < 1.0 / self.max_rate):
            return
        self._last = now
        h = trainer.history
        p = trainer.progress.to_dict()
        p["last"] = {k: v for k, v in (p.get("last") or {}).items() if isinstance(v, float) and math.isfinite(v)}
        curves = {}
        metrics = h.metrics
        if "loss" in metrics:
            curves["loss"] = _points(h.steps, metrics["loss"])
        if h.evals:
            curves["eval_loss"] = [[float(e["step"]), float(e["eval_loss"])] for e in h.evals
                                   if e.get("eval_loss") is not None and math.isfinite(e["eval_loss"])]
        from jaxmagic.render.training import _table_rows

        headers, rows = _table_rows(h)
        with self.widget.hold_sync():
            self.widget.state = p
            self.widget.curves = curves
            self.widget.table = {"headers": headers,
                                 "rows": [[v if not isinstance(v, float) or math.isfinite(v) else None for v in r]
                                          for r in rows]}
            self.widget.checkpoints = [{"step": c["step"], "reason": c.get("reason", "")} for c in h.checkpoints]

    def on_steps(self, trainer: Any, steps: np.ndarray, logs: dict[str, np.ndarray]) -> None:
        self._push(trainer)

    def on_eval(self, trainer: Any, step: int, logs: dict[str, float]) -> None:
        self._push(trainer)

    def on_checkpoint(self, trainer: Any, step: int, path: str) -> None:
        self._push(trainer)

    def on_train_end(self, trainer: Any, history: Any) -> None:
        from jaxmagic.render.training import history_html, run_summary_text

        _drop_route(self._route)
        self._route = None
        self._push(trainer, force=True)
        if self._handle is not None:
            snapshot = history_html(history, trainer.progress)
            text = f"{trainer.progress.message}\n{run_summary_text(history)}"
            self._handle.update({"text/html": snapshot, "text/plain": text}, raw=True)
        if self.widget is not None:
            self.widget.close()
        self._trainer = None
