"""Where a tracked loop stands: the live, host-side :class:`LoopRun` and the frozen
:class:`ProgressReport` it leaves (text, HTML, ``to_dict``).

Times come from the host clock when an update arrives; nothing here touches a device. The
rate leaves out the first counted update (a Python loop's first iteration, which usually
compiles; a jitted loop's first chunk), so the ETA is not inflated by compilation.
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from collections import deque
from typing import Any

from jaxmagic._result import Result

#: Points kept per logged series; beyond it every other point is dropped (evenly thinned).
MAX_POINTS = 10_000
_FINISHED: deque[ProgressReport] = deque(maxlen=16)
_FINISHED_LOCK = threading.Lock()


class _Series:
    """Logged values of one name, bounded: past ``MAX_POINTS`` it keeps every other point."""

    __slots__ = ("steps", "values", "stride", "seen")

    def __init__(self) -> None:
        self.steps: list[int] = []
        self.values: list[float] = []
        self.stride, self.seen = 1, 0

    def add(self, step: int, value: float) -> None:
        self.seen += 1
        if (self.seen - 1) % self.stride:
            return
        self.steps.append(step)
        self.values.append(value)
        if len(self.steps) > MAX_POINTS:
            del self.steps[1::2], self.values[1::2]
            self.stride *= 2


@dataclasses.dataclass(frozen=True, repr=False)
class ProgressReport(Result):
    """The state of one tracked loop: how far it got, how fast, and the values it logged.

    Returned by ``bar.report()`` (a Python loop under :func:`jaxmagic.track`) and by
    :func:`jaxmagic.progress.last` (the last loop that ended, jitted or not).

    Attributes:
      name: the loop's name (``name=``, or the scan body's function name).
      kind: ``"python"`` (``track``), ``"scan"``, ``"fori_loop"`` or ``"tick"``.
      status: ``"running"``, ``"completed"``, ``"stopped"`` (ended early: break, an exception,
        or Stop in the widget).
      done: iterations completed. total: iterations expected (``None`` when unknown).
      steps_per_second: over the updates after the first one (compilation excluded).
      first_step_seconds: a Python loop's first iteration, counted apart (``None`` for jitted).
      compile_seconds: JAX trace + lower + compile time seen while a Python loop ran.
      every: a jitted loop's reporting cadence, in iterations.
      lanes: vmapped lanes whose logged values were averaged (1 when not vmapped).
      passes: for a nested loop, how many times it ran inside its outer loop.
      series: ``{name: (steps, values)}`` of the logged scalars; last: the latest of each.
      children: nested loops (one report each).

    Example:
      >>> bar = jaxmagic.track(range(100), progress=None)
      >>> for step in bar:
      ...     bar.log(loss=1.0 / (step + 1))
      >>> bar.report().to_dict()["done"]
      100
    """

    name: str
    kind: str
    status: str
    done: int
    total: int | None
    elapsed_seconds: float
    steps_per_second: float
    first_step_seconds: float | None = None
    compile_seconds: float | None = None
    every: int | None = None
    lanes: int = 1
    passes: int = 0
    message: str = ""
    unit: str = "step"
    series: dict[str, tuple[tuple[int, ...], tuple[float, ...]]] = dataclasses.field(default_factory=dict)
    last: dict[str, float] = dataclasses.field(default_factory=dict)
    children: tuple[ProgressReport, ...] = ()

    @property
    def fraction(self) -> float:
        """Share done (0..1), NaN when the total is unknown or zero."""
        return min(1.0, self.done / self.total) if self.total else math.nan

    @property
    def eta_seconds(self) -> float:
        """Remaining iterations at the measured rate; 0 when done, NaN when unknown."""
        if self.total is None:
            return math.nan
        if self.done >= self.total:
            return 0.0
        rate = self.steps_per_second
        return (self.total - self.done) / rate if math.isfinite(rate) and rate > 0 else math.nan

    def summary(self) -> str:
        from jaxmagic.render.loops import loop_summary

        return loop_summary(self)

    def to_text(self, width: int = 100) -> str:
        from jaxmagic.render.loops import loop_text

        return loop_text(self, width=width)

    def to_html(self) -> str:
        from jaxmagic.render.loops import loop_html

        return loop_html(self)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON: every field above, plus ``fraction`` and ``eta_seconds`` (``None`` where
        unknown); ``series`` as ``{name: {"steps": [...], "values": [...]}}``."""

        def num(v: float | None) -> float | None:
            return None if v is None or not math.isfinite(v) else float(v)

        return {
            "name": self.name,
            "kind": self.kind,
            "status": self.status,
            "message": self.message,
            "unit": self.unit,
            "done": self.done,
            "total": self.total,
            "fraction": num(self.fraction),
            "elapsed_seconds": num(self.elapsed_seconds),
            "steps_per_second": num(self.steps_per_second),
            "eta_seconds": num(self.eta_seconds),
            "first_step_seconds": num(self.first_step_seconds),
            "compile_seconds": num(self.compile_seconds),
            "every": self.every,
            "lanes": self.lanes,
            "passes": self.passes,
            "series": {
                k: {"steps": list(s), "values": [num(v) for v in vs]} for k, (s, vs) in self.series.items()
            },
            "last": {k: num(v) for k, v in self.last.items()},
            "children": [c.to_dict() for c in self.children],
        }


class LoopRun:
    """One live run of a tracked loop. Updates come from the loop (``track``) or from host
    callbacks of a jitted loop (any thread: a lock guards the state); the view is redrawn at
    most ``max_rate`` times per second, and once more, forced, when the run ends."""

    def __init__(
        self,
        name: str,
        kind: str,
        total: int | None,
        *,
        view: Any = None,
        max_rate: float = 10.0,
        every: int | None = None,
        unit: str = "step",
        parent: LoopRun | None = None,
    ):
        self.name, self.kind, self.total, self.every, self.unit = name, kind, total, every, unit
        self.view, self.max_rate, self.parent = view, float(max_rate), parent
        self.lock = threading.RLock() if parent is None else parent.lock
        self.done = 0
        self.status, self.message = "running", ""
        self.t_start = time.perf_counter()
        self.t_end: float | None = None
        self.t_first: float | None = None  # the first counted update; the rate starts here
        self.done_first = 0
        self.t_last: float | None = None
        self.first_step_seconds: float | None = None
        self.compile_seconds: float | None = None
        self.lanes, self.passes = 1, 0
        self.series: dict[str, _Series] = {}
        self.last: dict[str, float] = {}
        self.children: dict[Any, LoopRun] = {}
        self.stop_requested = False
        self._pushed = -math.inf
        self._started_view = False

    @property
    def finished(self) -> bool:
        return self.status != "running"

    def advance(self, done: int, *, now: float | None = None) -> None:
        """``done`` iterations are complete (updates may repeat or arrive late: keep the max)."""
        now = time.perf_counter() if now is None else now
        with self.lock:
            if done <= self.done and self.t_first is not None:
                return
            self.done = max(self.done, done)
            if self.t_first is None:
                self.t_first, self.done_first = now, self.done
            self.t_last = now

    def record(self, values: dict[str, float], step: int | None = None) -> None:
        """Logged scalars for ``step`` (default: the iterations done so far)."""
        with self.lock:
            step = self.done if step is None else step
            for k, v in values.items():
                v = float(v)
                self.series.setdefault(k, _Series()).add(step, v)
                self.last[k] = v

    def child(self, key: Any, name: str, kind: str, total: int | None, every: int | None) -> LoopRun:
        with self.lock:
            run = self.children.get(key)
            if run is None:
                run = self.children[key] = LoopRun(name, kind, total, every=every, parent=self)
            return run

    def restart_pass(self, now: float | None = None) -> None:
        """A nested loop starts over inside its outer loop (its series keep accumulating)."""
        with self.lock:
            self.passes += 1
            self.done, self.status = 0, "running"
            self.t_first, self.t_last = None, None
            self.t_start = time.perf_counter() if now is None else now

    @property
    def steps_per_second(self) -> float:
        if self.t_first is None or self.t_last is None or self.done <= self.done_first:
            return math.nan
        span = self.t_last - self.t_first
        return (self.done - self.done_first) / span if span > 0 else math.nan

    def report(self) -> ProgressReport:
        with self.lock:
            end = self.t_end if self.t_end is not None else time.perf_counter()
            return ProgressReport(
                name=self.name,
                kind=self.kind,
                status=self.status,
                done=self.done,
                total=self.total,
                elapsed_seconds=end - self.t_start,
                steps_per_second=self.steps_per_second,
                first_step_seconds=self.first_step_seconds,
                compile_seconds=self.compile_seconds,
                every=self.every,
                lanes=self.lanes,
                passes=self.passes,
                message=self.message,
                unit=self.unit,
                series={k: (tuple(s.steps), tuple(s.values)) for k, s in self.series.items()},
                last=dict(self.last),
                children=tuple(c.report() for c in self.children.values()),
            )

    # --- the view ------------------------------------------------------------------------

    def push(self, force: bool = False) -> None:
        """Redraw the view (of the outermost run), at most ``max_rate`` times per second."""
        if self.parent is not None:
            self.parent.push(force)
            return
        if self.view is None:
            return
        now = time.perf_counter()
        with self.lock:
            if not force and now - self._pushed < 1.0 / self.max_rate:
                return
            self._pushed = now
            report = self.report()
            if not self._started_view:
                self._started_view = True
                self.view.start(self, report)
            self.view.update(report)

    def finish(self, status: str, message: str = "") -> ProgressReport:
        """End the run: the final redraw, the view's snapshot, and :func:`last` updated."""
        with self.lock:
            if self.finished:
                return self.report()
            self.status, self.message = status, message or self.message
            self.t_end = time.perf_counter()
            for c in self.children.values():
                if c.status == "running" and c.done >= (c.total or 0):
                    c.status = "completed"
            report = self.report()
            if self.parent is None and self.view is not None:
                self.push(force=True)
                self.view.finish(report)
        if self.parent is None:
            with _FINISHED_LOCK:
                _FINISHED.append(report)
        return report


def last() -> ProgressReport | None:
    """The report of the most recent tracked loop that ended (Python or jitted), else ``None``.

    Example:
      >>> ys = jaxmagic.progress.scan(step, 0.0, xs)[1]
      >>> jaxmagic.progress.last().done == len(xs)
      True
    """
    with _FINISHED_LOCK:
        return _FINISHED[-1] if _FINISHED else None
