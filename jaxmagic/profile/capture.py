"""Capture what JAX does while a block of code runs: traces, lowerings, compiles, cache
misses, eager dispatches, host transfers and JAX warnings. No IPython, no rendering.

Everything is installed on ``__enter__`` and removed on ``__exit__`` (also on exceptions
and KeyboardInterrupt), so profiling leaves no listener, log filter, patched method or
config flag behind. The hot path of a jitted call (JAX's C++ dispatch) is untouched; the
hooks run only on compiles, Python-level eager dispatch and device->host transfers.
"""

from __future__ import annotations

import logging
import threading
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

import jax
from jax._src import core as _core
from jax._src.array import ArrayImpl
from jax._src.interpreters import pxla as _pxla

from jaxmagic._frames import is_library_file, user_site  # noqa: F401 (re-exported)

_STAGE_OF_EVENT = {
    "/jax/core/compile/jaxpr_trace_duration": "trace",
    "/jax/core/compile/jaxpr_to_mlir_module_duration": "lower",
    "/jax/core/compile/backend_compile_duration": "compile",
}
# Loggers that emit cache-miss explanations when ``jax_explain_cache_misses`` is on.
_MISS_LOGGERS = ("jax._src.interpreters.partial_eval", "jax._src.pjit", "jax._src.util")

@dataclass
class StageEvent:
    """One trace/lower/compile step reported by ``jax.monitoring``."""

    seq: int
    stage: str          # "trace" | "lower" | "compile"
    name: str           # function name without the "jit(...)" wrapper
    seconds: float
    site: tuple[str, int] | None


@dataclass
class Lowering:
    """A computation lowered during the block (holds JAX objects until the report is built)."""

    seq: int
    name: str
    closed_jaxpr: Any
    computation: Any
    donated: tuple[bool, ...]
    site: tuple[str, int] | None


@dataclass
class CacheMiss:
    seq: int
    message: str


@dataclass
class Capture:
    """Raw observations of one profiled block; turned into a ``ProfileReport`` by ``report``."""

    events: list[StageEvent] = field(default_factory=list)
    lowerings: list[Lowering] = field(default_factory=list)
    misses: list[CacheMiss] = field(default_factory=list)
    eager_ops: Counter = field(default_factory=Counter)          # op name -> count
    eager_total: int = 0
    eager_sites: Counter = field(default_factory=Counter)       # (file, line) -> count (sampled)
    transfers: Counter = field(default_factory=Counter)         # (file, line) -> device->host copies
    syncs: Counter = field(default_factory=Counter)             # (file, line) -> block_until_ready
    warnings: list[tuple[str, str, tuple[str, int] | None]] = field(default_factory=list)
    wall_s: float = 0.0
    sync_s: float = 0.0
    exception: BaseException | None = None
    seq: int = 0

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq


# Eager ops are attributed to a line for the first N only: counting stays exact and the
# stack walk cost stays bounded in long eager loops.
_EAGER_SITE_SAMPLES = 2000

# ArrayImpl operators that dispatch one op each when used outside jit.
_ARRAY_OPERATORS = (
    "__add__", "__radd__", "__sub__", "__rsub__", "__mul__", "__rmul__", "__truediv__",
    "__rtruediv__", "__floordiv__", "__pow__", "__rpow__", "__matmul__", "__rmatmul__",
    "__neg__", "__abs__", "__lt__", "__le__", "__gt__", "__ge__", "__eq__", "__ne__",
    "__getitem__", "__and__", "__or__", "__mod__",
)


class _Hooks:
    """Installs and removes every hook; one instance per profiled block."""

    def __init__(self, cap: Capture, explain_misses: bool):
        self.cap = cap
        self.explain_misses = explain_misses
        self._undo: list[Callable[[], None]] = []
        self._thread = threading.get_ident()

    # -- install -------------------------------------------------------------
    def install(self) -> None:
        try:
            self._listen_stage_events()
            if self.explain_misses:
                self._capture_cache_misses()
            self._wrap_lowering()
            self._count_eager_dispatch()
            self._count_transfers()
            self._record_warnings()
        except BaseException:
            self.remove()
            raise

    def remove(self) -> None:
        while self._undo:
            undo = self._undo.pop()
            try:
                undo()
            except Exception:  # never let cleanup hide the user's exception
                pass

    def _patch(self, owner: Any, name: str, value: Any) -> None:
        had = name in vars(owner)
        old = vars(owner).get(name)
        setattr(owner, name, value)

        def undo() -> None:
            if had:
                setattr(owner, name, old)
            else:
                delattr(owner, name)
        self._undo.append(undo)

    def _listen_stage_events(self) -> None:
        cap = self.cap

        def on_duration(event: str, seconds: float, **kw: Any) -> None:
            stage = _STAGE_OF_EVENT.get(event)
            if stage is None:
                return
            name = str(kw.get("fun_name", "?"))
            if name.startswith("jit(") and name.endswith(")"):
                name = name[4:-1]
            cap.events.append(StageEvent(cap.next_seq(), stage, name, seconds, user_site(2)))

        jax.monitoring.register_event_duration_secs_listener(on_duration)
        self._undo.append(lambda: jax.monitoring.unregister_event_duration_listener(on_duration))

    def _capture_cache_misses(self) -> None:
        cap = self.cap
        was_on = bool(jax.config.jax_explain_cache_misses)

        class MissFilter(logging.Filter):
            def filter(self, record: logging.LogRecord) -> bool:
                msg = record.getMessage()
                if "CACHE MISS" not in msg:
                    return True
                cap.misses.append(CacheMiss(cap.next_seq(), msg))
                return was_on  # the user asked for these logs: let them through

        flt = MissFilter()
        for name in _MISS_LOGGERS:
            logger = logging.getLogger(name)
            logger.addFilter(flt)
            self._undo.append(lambda logger=logger: logger.removeFilter(flt))
        if not was_on:
            jax.config.update("jax_explain_cache_misses", True)
            user_set: list[bool] = []

            def restore() -> None:
                if not user_set:  # the profiled code chose a value itself: keep it
                    jax.config.update("jax_explain_cache_misses", False)
            self._undo.append(restore)
            self._watch_config(user_set)

    def _watch_config(self, user_set: list[bool]) -> None:
        """Note when the profiled code sets ``jax_explain_cache_misses`` itself."""
        config = jax.config
        update = config.update

        def watched_update(name: str, value: Any) -> None:
            if name == "jax_explain_cache_misses":
                user_set.append(True)
            return update(name, value)

        config.update = watched_update  # instance attribute shadows the method

        def undo() -> None:
            if vars(config).get("update") is watched_update:
                del config.update
        self._undo.append(undo)

    def _wrap_lowering(self) -> None:
        cap = self.cap
        original = _pxla.lower_sharding_computation

        def lower_sharding_computation(closed_jaxpr, api_name, fun_name, in_shardings,
                                       out_shardings, in_layouts, out_layouts, donated_invars,
                                       *args, **kwargs):
            computation = original(closed_jaxpr, api_name, fun_name, in_shardings,
                                   out_shardings, in_layouts, out_layouts, donated_invars,
                                   *args, **kwargs)
            cap.lowerings.append(Lowering(cap.next_seq(), str(fun_name), closed_jaxpr,
                                          computation, tuple(donated_invars), user_site(2)))
            return computation

        self._patch(_pxla, "lower_sharding_computation", lower_sharding_computation)

    def _count_eager_dispatch(self) -> None:
        cap, me = self.cap, self._thread
        process_primitive = _core.EvalTrace.process_primitive
        skip = {"pjit", "jit", "closed_call", "core_call", "custom_jvp_call", "custom_vjp_call"}

        def counted_process_primitive(trace, primitive, args, params, /):
            name = primitive.name
            if name not in skip:
                cap.eager_ops[name] += 1
                cap.eager_total += 1
                if cap.eager_total <= _EAGER_SITE_SAMPLES and threading.get_ident() == me:
                    cap.eager_sites[user_site(2)] += 1
            return process_primitive(trace, primitive, args, params)

        self._patch(_core.EvalTrace, "process_primitive", counted_process_primitive)

        def make_operator(op_name: str, fn: Callable) -> Callable:
            label = op_name.strip("_").removeprefix("r") if op_name.startswith("__r") else op_name.strip("_")

            def operator(self, *args):
                cap.eager_ops[label] += 1
                cap.eager_total += 1
                if cap.eager_total <= _EAGER_SITE_SAMPLES and threading.get_ident() == me:
                    cap.eager_sites[user_site(2)] += 1
                return fn(self, *args)
            operator.__name__ = op_name
            return operator

        for op_name in _ARRAY_OPERATORS:
            fn = getattr(ArrayImpl, op_name, None)
            if fn is not None:
                self._patch(ArrayImpl, op_name, make_operator(op_name, fn))

    def _count_transfers(self) -> None:
        cap = self.cap
        value_prop = ArrayImpl.__dict__["_value"]
        block = ArrayImpl.block_until_ready

        def _value(arr):
            if arr._npy_value is None:
                cap.transfers[user_site(2)] += 1
            return value_prop.fget(arr)

        def block_until_ready(arr):
            cap.syncs[user_site(2)] += 1
            return block(arr)

        self._patch(ArrayImpl, "_value", property(_value))
        self._patch(ArrayImpl, "block_until_ready", block_until_ready)

    def _record_warnings(self) -> None:
        cap = self.cap
        original = warnings.showwarning

        def showwarning(message, category, filename, lineno, file=None, line=None):
            cap.warnings.append((category.__name__, str(message), user_site(2)))
            return original(message, category, filename, lineno, file, line)

        warnings.showwarning = showwarning

        def undo() -> None:
            warnings.showwarning = original
        self._undo.append(undo)


class Profiler:
    """Context manager that records what JAX does inside a ``with`` block.

    Example::

        with Profiler() as prof:
            y = f(x)
        prof.report()   # -> ProfileReport

    Args:
        explain_cache_misses: turn on ``jax_explain_cache_misses`` for the block (restored
            afterwards) to learn why each function recompiled.
        sync: wait for every live array when the block ends, so that the wall time
            includes device work dispatched asynchronously by the block.
    """

    def __init__(self, *, explain_cache_misses: bool = True, sync: bool = True):
        self.capture = Capture()
        self._sync = sync
        self._hooks = _Hooks(self.capture, explain_cache_misses)
        self._t0 = 0.0
        self._active = False

    def __enter__(self) -> "Profiler":
        if self._active:
            raise RuntimeError("this Profiler is already running; create a new one to nest")
        self._hooks.install()
        self._active = True
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        self._hooks.remove()  # first: nothing below may count as the user's work
        self._active = False
        try:
            if self._sync and exc_type is not KeyboardInterrupt:
                t_sync = time.perf_counter()
                _wait_for_device_work()
                self.capture.sync_s = time.perf_counter() - t_sync
        finally:
            self.capture.wall_s = time.perf_counter() - self._t0
            self.capture.exception = exc
        return False

    def report(self, **kwargs: Any):
        """Build the ``ProfileReport`` (see ``jaxmagic.profile.report.build_report``)."""
        from jaxmagic.profile.report import build_report

        return build_report(self.capture, **kwargs)


def _wait_for_device_work() -> None:
    """Block until all dispatched device work is done (async dispatch)."""
    arrays = [a for a in jax.live_arrays() if not a.is_deleted()]
    try:
        jax.block_until_ready(arrays)
    except Exception:  # a failed computation surfaces where its result is used
        pass
