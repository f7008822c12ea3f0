"""Capture what JAX does while a block of code runs: traces, lowerings, compiles, cache
misses, eager dispatches, host transfers and JAX warnings. No IPython, no rendering.

Everything is installed on ``__enter__`` and removed on ``__exit__`` (also on exceptions
and KeyboardInterrupt), so profiling leaves no listener, log filter, patched method or
config flag behind. The hot path of a jitted call (JAX's C++ dispatch) is untouched; the
hooks run only on compiles, Python-level eager dispatch and device->host transfers.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jax

from jaxmagic import _internals
from jaxmagic._frames import is_library_file, user_site  # noqa: F401 (re-exported)
from jaxmagic._internals import InternalsChanged

_STAGE_OF_EVENT = {
    "/jax/core/compile/jaxpr_trace_duration": "trace",
    "/jax/core/compile/jaxpr_to_mlir_module_duration": "lower",
    "/jax/core/compile/backend_compile_duration": "compile",
}


@dataclass
class StageEvent:
    """One trace/lower/compile step reported by ``jax.monitoring``."""

    seq: int
    stage: str  # "trace" | "lower" | "compile"
    name: str  # function name without the "jit(...)" wrapper
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
    # nnx.jit only: parameter name -> the argument's Variables as (path, shape, dtype), in
    # the order nnx.jit flattens them (``model.states[0][k]`` is the k-th)
    nnx_leaves: dict[str, tuple[tuple[str, tuple, str], ...]] | None = None


@dataclass
class CacheMiss:
    seq: int
    message: str


@dataclass
class X64Cast:
    """A 64-bit NumPy value JAX turned 32-bit without a warning (``jax_enable_x64`` off)."""

    site: tuple[str, int] | None
    what: str  # e.g. "jnp.asarray turned int64 1099511627776 into int32 0"
    lost: bool  # values changed (integers out of range), not only precision


# Parts of the capture a hook provides; a hook turned off by ``InternalsChanged`` names its
# part in ``Capture.unavailable`` so the report shows "unknown", never a count of 0.
EAGER, TRANSFERS, LOWERINGS, MISSES = (
    "eager ops",
    "host transfers",
    "cost, memory and jaxprs",
    "cache-miss reasons",
)


@dataclass
class OtherThreads:
    """JAX work other threads did while the block ran (a data loader, a prefetch thread).

    It is not charged to the block: the report names it in one line.
    """

    compiles: int = 0
    eager_ops: int = 0
    transfers: int = 0


@dataclass
class Capture:
    """Raw observations of one profiled block; turned into a ``ProfileReport`` by ``report``.

    Only work done by the thread that runs the block is recorded; other threads' work is
    counted in ``other_threads``.
    """

    events: list[StageEvent] = field(default_factory=list)
    lowerings: list[Lowering] = field(default_factory=list)
    misses: list[CacheMiss] = field(default_factory=list)
    eager_ops: Counter = field(default_factory=Counter)  # op name -> count
    eager_total: int = 0
    eager_sites: Counter = field(default_factory=Counter)  # (file, line) -> count (sampled)
    transfers: Counter = field(default_factory=Counter)  # (file, line) -> device->host copies
    syncs: Counter = field(default_factory=Counter)  # (file, line) -> block_until_ready
    # site -> the user's frames that led to it (site first, then its callers), first seen
    sync_chains: dict = field(default_factory=dict)
    warnings: list[tuple[str, str, tuple[str, int] | None]] = field(default_factory=list)
    other_threads: OtherThreads = field(default_factory=OtherThreads)
    misses_explained: bool = False  # JAX's cache-miss explanations were captured
    x64_casts: list[X64Cast] = field(default_factory=list)
    unavailable: list[str] = field(default_factory=list)  # parts whose hook was turned off
    notes: list[str] = field(default_factory=list)  # why (one per changed internal)
    wall_s: float = 0.0
    sync_s: float = 0.0
    exception: BaseException | None = None
    seq: int = 0
    # live arrays before and after the block (profile.memory.Snapshot), None when not taken
    live_before: Any = None
    live_after: Any = None

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def turn_off(self, part: str, error: InternalsChanged) -> None:
        """Record that ``part`` is not measured, with one note naming the version."""
        if part not in self.unavailable:
            self.unavailable.append(part)
        note = f"{part} not measured: {error}"
        if note not in self.notes:
            self.notes.append(note)


# Eager ops are attributed to a line for the first N only: counting stays exact and the
# stack walk cost stays bounded in long eager loops.
_EAGER_SITE_SAMPLES = 2000

# jax.Array operators that dispatch one op each when used outside jit.
_ARRAY_OPERATORS = (
    "__add__",
    "__radd__",
    "__sub__",
    "__rsub__",
    "__mul__",
    "__rmul__",
    "__truediv__",
    "__rtruediv__",
    "__floordiv__",
    "__pow__",
    "__rpow__",
    "__matmul__",
    "__rmatmul__",
    "__neg__",
    "__abs__",
    "__lt__",
    "__le__",
    "__gt__",
    "__ge__",
    "__eq__",
    "__ne__",
    "__getitem__",
    "__and__",
    "__or__",
    "__mod__",
)
# Primitives that only carry a call to a jitted function (counted as compiles, not ops).
_CALL_PRIMITIVES = {"pjit", "jit", "closed_call", "core_call", "custom_jvp_call", "custom_vjp_call"}


class _Hooks:
    """Installs and removes every hook; one instance per profiled block.

    Each hook reaches JAX's internals through ``jaxmagic._internals``; a hook whose internal
    changed shape is skipped and noted (``Capture.turn_off``), the others still run.
    """

    def __init__(self, cap: Capture, explain_misses: bool):
        self.cap = cap
        self.explain_misses = explain_misses
        self._undo: list[Callable[[], None]] = []
        self._thread = threading.get_ident()
        self._in_operator = 0  # >0 while a jax.Array operator runs on the block's thread

    def mine(self) -> bool:
        """True on the thread that runs the profiled block."""
        return threading.get_ident() == self._thread

    # -- install -------------------------------------------------------------
    def install(self) -> None:
        self._thread = threading.get_ident()  # the block's thread: the one that enters it
        try:
            self._listen_stage_events()
            for part, hook in (
                (MISSES, self._capture_cache_misses),
                (LOWERINGS, self._wrap_lowering),
                (EAGER, self._count_eager_dispatch),
                (TRANSFERS, self._count_transfers),
            ):
                if part == MISSES and not self.explain_misses:
                    continue
                mark = len(self._undo)
                try:
                    hook()
                except InternalsChanged as e:
                    self._unwind_to(mark)
                    self.cap.turn_off(part, e)
                    if part == MISSES:
                        self.cap.misses_explained = False
            self._record_warnings()
            self._watch_x64_casts()
        except BaseException:
            self.remove()
            raise

    def remove(self) -> None:
        self._unwind_to(0)

    def _unwind_to(self, mark: int) -> None:
        while len(self._undo) > mark:
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
            if not self.mine():
                cap.other_threads.compiles += stage == "compile"
                return
            name = str(kw.get("fun_name", "?"))
            if name.startswith("jit(") and name.endswith(")"):
                name = name[4:-1]
            cap.events.append(StageEvent(cap.next_seq(), stage, name, seconds, user_site(2)))

        jax.monitoring.register_event_duration_secs_listener(on_duration)
        self._undo.append(lambda: jax.monitoring.unregister_event_duration_listener(on_duration))

    def _capture_cache_misses(self) -> None:
        """Turn on ``jax.explain_cache_misses`` for this thread (the public config context;
        the user's own setting is untouched) and catch its log records."""
        cap = self.cap
        loggers = _internals.cache_miss_loggers()
        was_on = bool(jax.config.jax_explain_cache_misses)

        me = self._thread

        class MissFilter(logging.Filter):
            def filter(self, record: logging.LogRecord) -> bool:
                msg = record.getMessage()
                if "CACHE MISS" not in msg:
                    return True
                if record.thread == me:  # another thread's misses are not the block's
                    cap.misses.append(CacheMiss(cap.next_seq(), msg))
                return was_on  # the user asked for these logs: let them through

        flt = MissFilter()
        for name in loggers:
            logger = logging.getLogger(name)
            logger.addFilter(flt)
            self._undo.append(lambda logger=logger: logger.removeFilter(flt))
        cap.misses_explained = True
        if not was_on:
            context = jax.explain_cache_misses(True)
            context.__enter__()
            self._undo.append(lambda: context.__exit__(None, None, None))

    def _wrap_lowering(self) -> None:
        cap = self.cap
        module, name = _internals.lowering_target()
        original = getattr(module, name)

        def lower_sharding_computation(*args: Any, **kwargs: Any) -> Any:
            computation = original(*args, **kwargs)
            if self.mine():
                try:
                    call = _internals.lowering_call(args, kwargs)
                except (InternalsChanged, TypeError) as e:
                    cap.turn_off(
                        LOWERINGS,
                        e
                        if isinstance(e, InternalsChanged)
                        else _internals.changed("jax", f"{name} arguments ({e})"),
                    )
                else:
                    cap.lowerings.append(
                        Lowering(
                            cap.next_seq(),
                            call.fun_name,
                            call.closed_jaxpr,
                            computation,
                            call.donated_invars,
                            user_site(2),
                            self._nnx_leaves(),
                        )
                    )
            return computation

        self._patch(module, name, lower_sharding_computation)

    def _nnx_leaves(self) -> dict[str, tuple[tuple[str, tuple, str], ...]] | None:
        """Names for the inputs of the ``nnx.jit`` call being compiled (``None`` if none)."""
        if "flax.nnx" not in sys.modules:
            return None
        try:
            arguments = _internals.nnx_jit_arguments()
        except InternalsChanged as e:
            self.cap.turn_off("nnx argument names", e)
            return None
        if not arguments:
            return None
        try:
            return {
                name: leaves
                for name, obj in arguments.items()
                if (leaves := _variable_leaves(obj)) is not None
            }
        except Exception:  # names are a nicety: never break a compile for them
            return None

    def _count_op(self, label: str) -> None:
        cap = self.cap
        cap.eager_ops[label] += 1
        cap.eager_total += 1
        if cap.eager_total <= _EAGER_SITE_SAMPLES:
            cap.eager_sites[user_site(3)] += 1

    def _count_eager_dispatch(self) -> None:
        eval_trace, array = _internals.eval_trace(), _internals.array_impl()
        cap = self.cap
        process_primitive = eval_trace.process_primitive

        def counted_process_primitive(trace, primitive, args, params, /):
            name = primitive.name
            if name not in _CALL_PRIMITIVES:
                if not self.mine():
                    cap.other_threads.eager_ops += 1
                elif not self._in_operator:  # an operator's inner primitives are part of it
                    self._count_op(name)
            return process_primitive(trace, primitive, args, params)

        self._patch(eval_trace, "process_primitive", counted_process_primitive)

        def make_operator(op_name: str, fn: Callable) -> Callable:
            label = op_name.strip("_").removeprefix("r") if op_name.startswith("__r") else op_name.strip("_")

            def operator(arr, *args):
                if not self.mine():
                    cap.other_threads.eager_ops += 1
                    return fn(arr, *args)
                if self._in_operator:
                    return fn(arr, *args)
                self._count_op(label)
                self._in_operator += 1
                try:
                    return fn(arr, *args)
                finally:
                    self._in_operator -= 1

            operator.__name__ = op_name
            return operator

        for op_name in _ARRAY_OPERATORS:
            fn = getattr(array, op_name, None)
            if fn is not None:
                self._patch(array, op_name, make_operator(op_name, fn))

    def _count_transfers(self) -> None:
        """Count device->host copies (``float()``, ``.item()``, ``.tolist()``, ``print``,
        ``np.asarray`` on GPU/TPU) and ``block_until_ready`` calls. On CPU ``np.asarray`` reads
        the buffer in place through the buffer protocol: no copy, and not counted."""
        cap = self.cap
        array = _internals.array_impl()
        block = array.block_until_ready

        def record(counter: Counter) -> None:
            chain = _user_chain()
            site = chain[0] if chain else None
            counter[site] += 1
            if site not in cap.sync_chains:
                cap.sync_chains[site] = chain

        def on_copy(arr: Any) -> None:
            if self.mine():
                record(cap.transfers)
            else:
                cap.other_threads.transfers += 1

        def block_until_ready(arr):
            if self.mine():
                record(cap.syncs)
            return block(arr)

        self._undo.append(_internals.watch_host_copies(on_copy))
        self._patch(array, "block_until_ready", block_until_ready)

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

    def _watch_x64_casts(self) -> None:
        """Wrap the public converters (``jnp.asarray``, ``jnp.array``, ``jax.device_put``)
        to note 64-bit NumPy inputs JAX silently makes 32-bit (it warns only when a dtype
        is requested explicitly)."""
        import jax.numpy as jnp

        if jax.config.jax_enable_x64:
            return
        cap = self.cap
        casts = cap.x64_casts

        def wrap(owner: Any, attr: str, label: str, value: str) -> None:
            fn = getattr(owner, attr)
            takes_dtype = label != "jax.device_put"  # its 2nd parameter is a device

            def converter(*args: Any, **kwargs: Any) -> Any:
                out = fn(*args, **kwargs)
                dtype_given = kwargs.get("dtype") is not None or (takes_dtype and len(args) > 1)
                if (
                    self.mine()
                    and len(casts) < 100
                    and not dtype_given
                    and not is_library_file(sys._getframe(1).f_code.co_filename)
                ):  # the user's own call
                    x = args[0] if args else kwargs.get(value)
                    cast = _x64_cast(label, x, out)
                    if cast is not None:
                        casts.append(X64Cast(user_site(2), *cast))
                return out

            converter.__wrapped__ = fn  # type: ignore[attr-defined]
            self._patch(owner, attr, converter)

        wrap(jnp, "asarray", "jnp.asarray", "a")
        wrap(jnp, "array", "jnp.array", "object")
        wrap(jax, "device_put", "jax.device_put", "x")


def _user_chain(limit: int = 4) -> tuple[tuple[str, int], ...]:
    """The innermost ``limit`` user frames on the stack as ``(file, line)``, innermost first
    (a copy made in a helper is judged by the loop its caller runs it in)."""
    frame, chain = sys._getframe(2), []
    while frame is not None and len(chain) < limit:
        filename = frame.f_code.co_filename
        if not is_library_file(filename):
            chain.append((filename, frame.f_lineno))
        frame = frame.f_back
    return tuple(chain)


def _variable_leaves(obj: Any) -> tuple[tuple[str, tuple, str], ...] | None:
    """An NNX object's Variables as ``(path, shape, dtype)`` in flatten order (sorted paths),
    read with ``nnx.iter_graph`` (a read-only walk)."""
    from flax import nnx

    if not nnx.graph.is_graph_node(obj):
        return None
    leaves = []
    for path, node in nnx.iter_graph(obj):
        if isinstance(node, nnx.Variable):
            # a Variable forwards shape and dtype to the array it holds
            leaves.append((path, tuple(getattr(node, "shape", ())), str(getattr(node, "dtype", ""))))
    leaves.sort(key=lambda t: tuple((isinstance(k, str), k) for k in t[0]))
    return tuple((".".join(map(str, p)), shape, dtype) for p, shape, dtype in leaves)


def _x64_cast(label: str, x: Any, out: Any) -> tuple[str, bool] | None:
    """``(description, values_changed)`` if ``x`` was 64-bit NumPy data and ``out`` is not."""
    import numpy as np

    dtype = getattr(x, "dtype", None)
    if (
        not isinstance(x, (np.ndarray, np.generic))
        or dtype is None
        or dtype.itemsize != 8
        or dtype.kind not in "iuf"
        or getattr(out, "dtype", dtype).itemsize == 8
    ):
        return None
    new = out.dtype
    if dtype.kind == "f":
        shape = "" if np.ndim(x) == 0 else f" array {list(np.shape(x))}"
        return f"{label} turned {dtype}{shape} into {new}", False
    # integers that fit in 32 bits lose nothing: only changed values are a finding
    if np.ndim(x) == 0:
        after = int(np.asarray(x).astype(new))
        return (f"{label} turned {dtype} {int(x)} into {new} {after}", True) if after != int(x) else None
    if np.size(x) > 10_000_000:  # not scanned: say what happened without a count
        return f"{label} turned {dtype} array {list(np.shape(x))} into {new}", True
    bad = int(np.count_nonzero(np.asarray(x) != np.asarray(x).astype(new)))
    values = f"{bad} value{'s' if bad != 1 else ''}"
    text = f"{label} turned {dtype} array {list(np.shape(x))} into {new} ({values} out of range)"
    return (text, True) if bad else None


class Profiler:
    """Context manager that records what JAX does inside a ``with`` block.

    Example::

        with Profiler() as prof:
            y = f(x)
        prof.report()   # -> ProfileReport

    Only the thread that enters the block is profiled; JAX work other threads do meanwhile
    (a data loader, a prefetch thread) is summed apart (``ProfileReport.other_threads``).

    Args:
        explain_cache_misses: turn on JAX's cache-miss explanations for the block, on its
            thread only (the public ``jax.explain_cache_misses`` context; the user's own
            setting is untouched), to learn why each function recompiled.
        sync: wait for every live array when the block ends, so that the wall time
            includes device work dispatched asynchronously by the block.
        memory: list the live arrays before and after the block (ids, weak references and
            bytes per device, outside the timed block) for the report's memory section.
    """

    def __init__(self, *, explain_cache_misses: bool = True, sync: bool = True, memory: bool = True):
        self.capture = Capture()
        self._sync = sync
        self._memory = memory
        self._hooks = _Hooks(self.capture, explain_cache_misses)
        self._t0 = 0.0
        self._active = False

    def __enter__(self) -> Profiler:
        if self._active:
            raise RuntimeError("this Profiler is already running; create a new one to nest")
        if self._memory:
            self.capture.live_before = _snapshot()
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
            if self.capture.live_before is not None:
                self.capture.live_after = _snapshot()
        return False

    def report(self, **kwargs: Any):
        """Build the ``ProfileReport`` (see ``jaxmagic.profile.report.build_report``)."""
        from jaxmagic.profile.report import build_report

        return build_report(self.capture, **kwargs)


def _snapshot() -> Any:
    """The live arrays now (``profile.memory.snapshot``), or None if they cannot be read."""
    from jaxmagic.profile.memory import snapshot

    try:
        return snapshot()
    except Exception:  # the memory section is a nicety: never break the block for it
        return None


def _wait_for_device_work() -> None:
    """Block until all dispatched device work is done (async dispatch)."""
    arrays = [a for a in jax.live_arrays() if not a.is_deleted()]
    try:
        jax.block_until_ready(arrays)
    except Exception:  # a failed computation surfaces where its result is used
        pass
