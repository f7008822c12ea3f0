"""Progress views: a shared progress state, the terminal line, and the ``progress=`` resolver.

Views are callbacks. They read :class:`Progress` (kept by the trainer from host-side
numbers only, so a view never forces a device sync) and throttle themselves to at most
``max_rate`` redraws per second. The notebook widget lives in ``jaxmagic.widgets.progress``
and is imported only when a notebook kernel is detected — detected through ``sys.modules``,
so this module never imports IPython.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, TextIO

import numpy as np

from jaxmagic._format import fmt_count, fmt_percent, fmt_seconds
from jaxmagic._kernel import choose_view
from jaxmagic._terminal import StatusLine
from jaxmagic.train.callbacks import Callback


@dataclasses.dataclass
class Progress:
    """Where a ``fit`` stands. Times exclude compilation; rates are over steps already read back."""

    step: int = 0
    start_step: int = 0
    target: int | None = None
    epoch: int | None = None
    steps_per_epoch: int | None = None
    batch_size: int = 0
    compile_seconds: float = 0.0
    train_seconds: float = 0.0
    data_wait_seconds: float = 0.0  # of train_seconds, the loop waited for the next call's input
    flops_per_step: float | None = None  # compiled train call's cost analysis (per device)
    peak_flops: float | None = None  # of one device
    memory_peak: int | None = None  # device memory high-water, bytes (None: not reported, e.g. CPU)
    wall_start: float = dataclasses.field(default_factory=time.perf_counter)
    status: str = "starting"  # starting | compiling | training | evaluating | saving | <final status>
    message: str = ""
    last: dict[str, float] = dataclasses.field(default_factory=dict)

    @property
    def done_steps(self) -> int:
        return self.step - self.start_step

    @property
    def steps_per_second(self) -> float:
        return (
            self.done_steps / self.train_seconds if self.train_seconds > 0 and self.done_steps else math.nan
        )

    @property
    def examples_per_second(self) -> float:
        return self.steps_per_second * self.batch_size

    @property
    def data_wait_fraction(self) -> float:
        """Share of the training time spent waiting for input (input-bound when high)."""
        return self.data_wait_seconds / self.train_seconds if self.train_seconds > 0 else math.nan

    @property
    def flops_per_second(self) -> float:
        return self.flops_per_step * self.steps_per_second if self.flops_per_step else math.nan

    @property
    def mfu(self) -> float:
        """Model FLOPs utilisation: achieved FLOP/s over the device's peak (0..1)."""
        return self.flops_per_second / self.peak_flops if self.peak_flops else math.nan

    @property
    def eta_seconds(self) -> float:
        """Remaining steps at the measured rate (compile time excluded); NaN when unknown."""
        if self.target is None or not math.isfinite(self.steps_per_second):
            return math.nan
        return max(0, self.target - self.step) / self.steps_per_second

    @property
    def fraction(self) -> float:
        if not self.target:
            return math.nan
        return min(1.0, self.step / self.target)

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in dataclasses.asdict(self).items() if k != "wall_start"}
        d.update(
            steps_per_second=self.steps_per_second,
            examples_per_second=self.examples_per_second,
            eta_seconds=self.eta_seconds,
            fraction=self.fraction,
            data_wait_fraction=self.data_wait_fraction,
            flops_per_second=self.flops_per_second,
            mfu=self.mfu,
            wall_seconds=time.perf_counter() - self.wall_start,
        )
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}


def progress_line(p: Progress, width: int = 120) -> str:
    """One line: ``step 120/500 [#####.....] 24% · 1.52k steps/s · ETA 0.25 s · MFU 12% ·
    data-wait 0.5% · loss 0.31``."""
    bar_w = 20
    if p.target:
        filled = int(round(p.fraction * bar_w))
        head = f"step {p.step}/{p.target} [{'#' * filled}{'.' * (bar_w - filled)}] {p.fraction * 100:3.0f}%"
    else:
        head = f"step {p.step}"
    if p.epoch is not None and p.steps_per_epoch:
        head += f" · epoch {p.epoch + 1}"
    parts = [head]
    if math.isfinite(p.steps_per_second):
        parts.append(f"{fmt_count(p.steps_per_second)} steps/s")
    if math.isfinite(p.eta_seconds) and p.status == "training":
        parts.append(f"ETA {fmt_seconds(p.eta_seconds)}")
    if math.isfinite(p.mfu):
        parts.append(f"MFU {fmt_percent(p.mfu)}")
    if math.isfinite(p.data_wait_fraction):
        parts.append(f"data-wait {fmt_percent(p.data_wait_fraction)}")
    if p.status in ("compiling", "evaluating", "saving"):
        parts.append(p.status + "…")
    for k in ("loss", "eval_loss"):
        if k in p.last and math.isfinite(p.last[k]):
            parts.append(f"{k} {p.last[k]:.4g}")
    line = " · ".join(parts)
    return line if len(line) <= width else line[: width - 1] + "…"


class TerminalProgress(StatusLine, Callback):
    """A single updating line while training, then the run's summary table.

    On a terminal the line is redrawn in place (``\\r``) at most ``max_rate`` times per second;
    when the stream is not a terminal (logs, CI), a line is printed every ``log_every`` seconds.

    Args:
      stream: where to write (default ``sys.stdout``).
      max_rate: redraws per second on a terminal.
      log_every: seconds between lines on a non-terminal stream.
      summary: print the summary table when training ends.

    Example:
      >>> trainer.fit(data, steps=1000, progress=TerminalProgress(max_rate=4))
    """

    def __init__(
        self,
        stream: TextIO | None = None,
        *,
        max_rate: float = 10.0,
        log_every: float = 5.0,
        summary: bool = True,
        width: int = 120,
    ):
        self.stream, self.max_rate, self.log_every = stream, float(max_rate), float(log_every)
        self.summary, self.width = summary, width
        self._last = 0.0
        self._drawn = False

    def _draw(self, trainer: Any, force: bool = False) -> None:
        now = time.perf_counter()
        gap = 1.0 / self.max_rate if self._tty() else self.log_every
        if not force and now - self._last < gap:
            return
        self._last = now
        self._write_line(progress_line(trainer.progress, self.width))

    def on_train_begin(self, trainer: Any, info: dict[str, Any]) -> None:
        self._last, self._drawn = 0.0, False

    def on_steps(self, trainer: Any, steps: np.ndarray, logs: dict[str, np.ndarray]) -> None:
        self._draw(trainer)

    def on_eval(self, trainer: Any, step: int, logs: dict[str, float]) -> None:
        self._draw(trainer)

    def on_train_end(self, trainer: Any, history: Any) -> None:
        self._clear_line()
        out = self._out()
        p = trainer.progress
        out.write(progress_line(p, self.width) + "\n")
        if p.message:
            out.write(p.message + "\n")
        if self.summary:
            from jaxmagic.render.training import run_summary_text

            out.write(run_summary_text(history, width=self.width) + "\n")
        out.flush()


def resolve_progress(progress: Any) -> Callback | None:
    """``progress=`` -> a view: ``"auto"`` (widget in a notebook kernel, else the terminal line),
    ``"widget"``, ``"text"``, ``None``/``False`` (silent) or a ``Callback`` instance."""

    def widget() -> Callback:
        from jaxmagic.widgets.progress import WidgetProgress  # lazy: widget code stays out of train/

        return WidgetProgress()

    return choose_view(progress, Callback, widget, TerminalProgress)
