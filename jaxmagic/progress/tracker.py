"""``jaxmagic.track``: live progress for a Python loop, without adding a device sync.

The loop's own clock is the only thing read per iteration. Values given to ``bar.log`` that
are JAX arrays are copied to the host asynchronously and read one step behind (or as soon
as they are ready), so the loop keeps dispatching while the device works; the only wait is
at the end of the loop, for the last logged values.
"""

from __future__ import annotations

import math
import numbers
import sys
import time
from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any, Generic, TypeVar

import numpy as np

from jaxmagic.progress.state import LoopRun, ProgressReport
from jaxmagic.progress.views import check_progress, resolve_view

T = TypeVar("T")

_COMPILE_EVENTS = (
    "/jax/core/compile/jaxpr_trace_duration",
    "/jax/core/compile/jaxpr_to_mlir_module_duration",
    "/jax/core/compile/backend_compile_duration",
)


def _length(obj: Any) -> int | None:
    try:
        n = len(obj)
    except (TypeError, NotImplementedError):
        return None
    return n if isinstance(n, int) and n >= 0 else None


def _check_total(total: Any, length: int | None) -> int | None:
    if total is None:
        return length
    if isinstance(total, bool) or not isinstance(total, numbers.Integral):
        raise TypeError(f"total must be a whole number of iterations or None, got {type(total).__name__}")
    total = int(total)
    if total < 0:
        raise ValueError(f"total must be >= 0, got {total}")
    if length is not None and total != length:
        raise ValueError(
            f"total={total} disagrees with len(iterable)={length}: the loop would run {length} times; "
            "pass total= only for iterables without a length (generators, data loaders), or drop it"
        )
    return total


def _jax_array_type() -> type | None:
    jax = sys.modules.get("jax")
    return getattr(jax, "Array", None) if jax is not None else None


class Tracker(Generic[T]):
    """A Python loop with live progress; made by :func:`track`. Iterate it once.

    Attributes:
      total: iterations expected (``None`` when unknown). n: iterations completed so far.
    """

    def __init__(
        self,
        iterable: Iterable[T],
        total: int | None = None,
        *,
        name: str = "loop",
        progress: Any = "auto",
        max_rate: float = 10.0,
        unit: str = "step",
    ):
        try:
            it = iter(iterable)
        except TypeError:
            hint = f"; did you mean range({iterable})?" if isinstance(iterable, numbers.Integral) else ""
            raise TypeError(
                f"jaxmagic.track() needs an iterable (a range, list, generator, data loader), "
                f"got {type(iterable).__name__}{hint}"
            ) from None
        self.total = _check_total(total, _length(iterable))
        check_progress(progress)
        if not (isinstance(max_rate, (int, float)) and max_rate > 0):
            raise ValueError(f"max_rate must be a positive number of redraws per second, got {max_rate!r}")
        self.name, self.unit = str(name), str(unit)
        self._it, self._progress, self._max_rate = it, progress, float(max_rate)
        self._run: LoopRun | None = None
        self._used = False
        self._in_with = False
        self._pending: deque[tuple[int, dict[str, Any]]] = deque()
        self._ended_early: str | None = None

    @property
    def n(self) -> int:
        return self._run.done if self._run is not None else 0

    def __len__(self) -> int:
        if self.total is None:
            raise TypeError("this tracker has no total (its iterable has no len); pass total=")
        return self.total

    def __repr__(self) -> str:
        of = f"/{self.total}" if self.total is not None else ""
        return f"Tracker({self.name!r}, {self.n}{of})"

    def __iter__(self) -> Iterator[T]:
        if self._used:
            raise RuntimeError("this tracker was already iterated: make a new one with jaxmagic.track(...)")
        self._used = True
        return self._loop()

    def __enter__(self) -> Tracker[T]:
        self._in_with = True
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self._in_with = False
        run = self._run
        if run is None or run.finished:
            return
        if exc_type is not None:
            self._finish(
                "stopped", f"ended at {run.unit} {run.done} by {exc_type.__name__}: {exc}".rstrip(": ")
            )
        else:
            self._finish("stopped", self._ended_early or "")

    # --- values --------------------------------------------------------------------------

    def log(self, **values: Any) -> None:
        """Record scalars for the current iteration (curves and the latest values in the view).

        Python numbers and NumPy scalars are taken as they are. A JAX array is copied to the
        host asynchronously and read one step behind, so logging never waits for the step
        that produced it.

        Example:
          >>> bar = jaxmagic.track(range(1000))
          >>> for step in bar:
          ...     state, loss = train_step(state, batch)
          ...     bar.log(loss=loss)        # no float(loss): no device sync
        """
        if self._run is None:
            raise RuntimeError("bar.log() is for inside the loop: `for step in bar: ... bar.log(loss=loss)`")
        arrays: dict[str, Any] = {}
        now: dict[str, float] = {}
        jax_array = _jax_array_type()
        for k, v in values.items():
            if jax_array is not None and isinstance(v, jax_array):
                if v.size != 1:
                    raise ValueError(
                        f"bar.log({k}=...) takes a scalar, got an array of shape {tuple(v.shape)}"
                    )
                v.copy_to_host_async()
                arrays[k] = v
            else:
                now[k] = _scalar(k, v)
        step = self._run.done + 1  # the iteration in progress
        if now:
            self._run.record(now, step)
        if arrays:
            self._pending.append((step, arrays))
            self._drain(lag=1)

    def _drain(self, lag: int) -> None:
        """Read logged arrays that are ready, and any more than ``lag`` steps old (waiting)."""
        while self._pending:
            step, arrays = self._pending[0]
            if len(self._pending) <= lag and not all(a.is_ready() for a in arrays.values()):
                return
            self._pending.popleft()
            self._run.record({k: _scalar(k, np.asarray(a)) for k, a in arrays.items()}, step)

    # --- the loop ------------------------------------------------------------------------

    def _loop(self) -> Iterator[T]:
        run = self._run = LoopRun(
            self.name,
            "python",
            self.total,
            view=resolve_view(self._progress),
            max_rate=self._max_rate,
            unit=self.unit,
        )
        undo = _watch_compiles(run)
        status, message = "completed", ""
        try:
            run.push(force=True)
            run.t_start = time.perf_counter()  # the first view's drawing is not the first step's time
            while True:
                if run.stop_requested:
                    status, message = "stopped", f"stopped from the widget at {run.unit} {run.done}"
                    break
                try:
                    item = next(self._it)
                except StopIteration:
                    break
                yield item
                now = time.perf_counter()
                run.advance(run.done + 1, now=now)
                if run.done == 1:
                    run.first_step_seconds = now - run.t_start
                if self._pending:
                    self._drain(lag=1)
                run.push()
            if status == "completed" and self.total is not None and run.done != self.total:
                message = f"the iterable ended after {run.done} of total={self.total}"
        except GeneratorExit:  # break, return or an exception in the loop body
            of = f" of {self.total}" if self.total is not None else ""
            status = "stopped"
            message = f"ended early after {run.done}{of} {run.unit}s (break, return or an exception in the loop body)"
            raise
        finally:
            undo()
            if self._in_with and status == "stopped" and not run.stop_requested:
                self._ended_early = message  # __exit__ finishes, naming the exception if any
            else:
                self._finish(status, message)

    def _finish(self, status: str, message: str) -> None:
        run = self._run
        assert run is not None
        self._drain(lag=0)  # the last logged values: the loop is over, waiting is fine now
        run.finish(status, message)

    def report(self) -> ProgressReport:
        """The loop's state now (final once the loop has ended)."""
        if self._run is None:
            return ProgressReport(
                name=self.name, kind="python", status="running", done=0, total=self.total,
                elapsed_seconds=0.0, steps_per_second=math.nan, unit=self.unit,
            )  # fmt: skip
        return self._run.report()


def _scalar(name: str, v: Any) -> float:
    arr = np.asarray(v)
    if arr.size != 1 or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        what = f"shape {arr.shape}" if arr.size != 1 else f"a {type(v).__name__}"
        raise ValueError(f"log({name}=...) takes a real scalar, got {what}")
    return float(arr.reshape(()).real)


def _watch_compiles(run: LoopRun) -> Any:
    """Sum JAX's trace, lower and compile times into ``run.compile_seconds`` while the loop runs
    (only if JAX is already imported: a loop that never imported it compiles nothing)."""
    jax = sys.modules.get("jax")
    monitoring = getattr(jax, "monitoring", None)
    if monitoring is None:
        return lambda: None
    run.compile_seconds = 0.0

    def on_duration(event: str, duration: float, **_: Any) -> None:
        if event in _COMPILE_EVENTS:
            run.compile_seconds = (run.compile_seconds or 0.0) + duration

    monitoring.register_event_duration_secs_listener(on_duration)
    return lambda: monitoring.unregister_event_duration_listener(on_duration)


def track(
    iterable: Iterable[T],
    total: int | None = None,
    *,
    name: str = "loop",
    progress: Any = "auto",
    max_rate: float = 10.0,
    unit: str = "step",
) -> Tracker[T]:
    """Live progress for a Python loop: count, rate, ETA (the first iteration, which usually
    compiles, is timed apart), the compile time JAX reports, and curves of what you ``log``.

    In a notebook kernel it is the trainer's widget (with a Stop button that ends the loop at
    the next iteration), leaving a static HTML snapshot; elsewhere one updating text line.
    Nothing here forces a device sync. The loop may ``break`` or raise: the bar shows where
    it stopped and the exception is unchanged.

    Args:
      iterable: anything iterable (range, list, generator, data loader).
      total: iterations expected, for iterables without ``len`` (must equal ``len`` if both).
      name: the title shown. progress: ``"auto"``, ``"widget"``, ``"text"``, ``None`` or a
        :class:`~jaxmagic.progress.views.LoopView`. max_rate: redraws per second at most.
      unit: what one iteration is called (``"step"``, ``"batch"``, ...).

    Returns:
      A :class:`Tracker`: iterate it; ``bar.log(loss=...)`` inside; ``bar.report()`` after.

    Example:
      >>> bar = jaxmagic.track(range(1000))
      >>> for step in bar:
      ...     state, loss = train_step(state, batches[step])
      ...     bar.log(loss=loss)
    """
    return Tracker(iterable, total, name=name, progress=progress, max_rate=max_rate, unit=unit)
