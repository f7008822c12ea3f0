"""Progress from inside jitted loops: :func:`scan`, :func:`fori_loop`, :func:`tick`, :func:`log`.

How it stays cheap and right (and where jax-tqdm goes wrong):

- :func:`scan` splits the loop into chunks of ``every`` iterations, a scan of scans, and
  reports once per chunk from the outer body: no conditional and no host callback inside
  the inner loop, so the iterations between reports cost what they cost without progress.
  The count comes from the chunk structure, not from ``xs``, so scans over ``arange(5000,
  10000)`` (or over no ``xs``) are counted right.
- One bar under ``vmap``: the outer counter is not batched, so the report is one host
  callback, not one per lane; logged values that are batched are averaged over the lanes
  first (``custom_vmap``), and the bar says how many lanes.
- :func:`tick` (inside your own loop body) guards its callback with ``lax.cond`` on
  ``i % every``; under ``vmap`` a batched ``i`` would turn that ``cond`` into a ``select``
  that runs the callback every iteration for every lane, so ``tick`` reduces ``i`` over the
  lanes (the furthest counts) before the ``cond`` (``custom_vmap``): it stays a ``cond``.
- Inside ``shard_map``/``pmap`` each device runs the loop; only the first device reports.
- Each report carries one argument (a packed int32 vector) and depends on the loop's carry,
  so XLA cannot run it ahead of the iterations it counts; the short last chunk comes last.
- A run begins at run time, on the host, when the first report arrives: the bar belongs to
  an execution, not to a trace, so a cached jitted function shows a new bar per call and
  ``make_jaxpr``/``eval_shape`` show none. Nested tracked loops are known when they are
  traced (static nesting): the inner one is a row in the outer one's view, counting passes.
- Values cross to the host as NumPy (``_internals.host_report``, lowered like
  ``jax.debug.callback`` but without its device_put, ~0.3 ms inside a busy program; the
  fallback is ``jax.debug.callback``), after ``stop_gradient``, so a tracked loop may sit
  inside ``grad``; a failing view is logged once and never fails the computation.
"""

from __future__ import annotations

import functools
import logging
import math
import numbers
import threading
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxmagic._internals import host_report
from jaxmagic.progress.state import LoopRun
from jaxmagic.progress.views import check_progress, resolve_view

log_ = logging.getLogger("jaxmagic.progress")
_local = threading.local()


def _stack() -> list[_Frame]:
    stack = getattr(_local, "stack", None)
    if stack is None:
        stack = _local.stack = []
    return stack


def default_every(n: int) -> int:
    """About 100 reports per loop: a divisor of ``n`` giving 50-200 chunks when there is one
    (so the chunks tile the loop exactly), else ``ceil(n / 100)``."""
    if n <= 100:
        return 1
    best, lo, hi = None, math.ceil(n / 200), n // 50
    for d in range(lo, hi + 1):
        if n % d == 0 and (best is None or abs(n / d - 100) < abs(n / best - 100)):
            best = d
    return best or math.ceil(n / 100)


def _check_every(every: Any) -> int | None:
    if every is None:
        return None
    if isinstance(every, bool) or not isinstance(every, numbers.Integral):
        raise TypeError(f"every must be a whole number of iterations, got {type(every).__name__}")
    if every <= 0:
        raise ValueError(f"every must be >= 1 (report once per `every` iterations), got {every}")
    return int(every)


class _Channel:
    """One tracked loop of a traced program; its runs begin when its reports arrive."""

    def __init__(
        self,
        name: str,
        kind: str,
        total: int | None,
        every: int | None,
        first_done: int,
        progress: Any,
        max_rate: float,
        parent: _Channel | None,
    ):
        self.name, self.kind, self.total, self.every = name, kind, total, every
        self.first_done, self.progress, self.max_rate, self.parent = first_done, progress, max_rate, parent
        self.key = (name, kind, total, every)  # the same loop traced twice is one nested row
        self.run: LoopRun | None = None
        self.lock = threading.Lock() if parent is None else parent.lock
        self.failed = False
        self.start: int = 0  # tick: the first index (for the out-of-range message)

    def top_run(self, done: int) -> LoopRun | None:
        """The current run of this (outermost) loop; a new one on a first report."""
        run = self.run
        if run is not None and not run.finished and 0 < done <= self.first_done <= run.done:
            # a first report while the last run is unfinished: that execution never sent its
            # last report (it failed, or was abandoned); this is a new one
            run.finish("stopped", f"ended without its last report, after {run.done} {run.unit}s")
        if run is None or (run.finished and done <= self.first_done):
            run = self.run = LoopRun(
                self.name,
                self.kind,
                self.total,
                view=resolve_view(self.progress),
                max_rate=self.max_rate,
                every=self.every,
            )
        elif run.finished:
            return None  # a late duplicate of a finished run's report
        return run

    def on_report(self, lanes: int, names: tuple[str, ...], payload: Any) -> None:
        if self.failed:
            return
        try:
            arr = np.asarray(payload, np.int32)
            vals = dict(zip(names, arr[3:].view(np.float32).tolist()))
            self._report(lanes, int(arr[0]), int(arr[1]), vals)
        except Exception:  # the view must never fail the user's computation
            self.failed = True
            log_.exception("jaxmagic.progress: the view of loop %r failed; it stops updating", self.name)

    def _report(self, lanes: int, done: int, total: int, vals: dict[str, float]) -> None:
        with self.lock:
            if self.parent is None:
                run = self.top_run(done)
                if run is None:
                    return
            else:
                outer = self.parent.outer_run()
                run = outer.child(self.key, self.name, self.kind, total, self.every)
                if run.passes == 0 or done < run.done or (done == self.first_done and run.done >= done):
                    run.restart_pass()
            run.total, run.lanes = total, max(run.lanes, lanes)
            if not 0 < done <= total:
                run.message = (
                    f"index {self.start + done - 1} is outside {self.start}..{self.start + total - 1}: "
                    f"pass tick(i, total, start=<first index>)"
                )
                run.push(force=True)
                return
            run.advance(done)
            if vals:  # a nested loop's values go on one axis across its passes
                run.record(vals, done if self.parent is None else (run.passes - 1) * total + done)
            if done >= total:
                if self.parent is None:
                    run.finish("completed")
                else:
                    run.status = "completed"
                    run.push()
            else:
                run.push()

    def outer_run(self) -> LoopRun:
        """The run a nested loop's report belongs to (started by it if the outer loop has not
        reported yet: its first report comes after its first chunk, inner loops included)."""
        if self.parent is not None:
            outer = self.parent.outer_run()
            run = outer.child(self.key, self.name, self.kind, self.total, self.every)
            if run.passes == 0:
                run.restart_pass()
            return run
        run = self.run
        if run is None or run.finished:
            run = self.top_run(0)
            assert run is not None
        return run


def _emitter(channel: _Channel, lanes: int) -> Callable[..., Any]:
    """``emit(done, total, values, after)``: one host report, run once ``after`` (an int32
    computed from the loop's carry) exists. Under ``vmap`` it reports once: the furthest
    lane's counters and the lanes' mean of each value (the callback would otherwise be
    unrolled into one call per lane)."""

    @jax.custom_batching.custom_vmap
    def emit(done: Any, total: Any, values: dict[str, Any], after: Any) -> Any:
        # One int32 vector [done, total, after, *bits of the float32 values], handed to the
        # host as NumPy (host_report: no device_put, which costs ~0.3 ms in a busy program).
        names = sorted(values)
        head = jnp.stack([done, total, after]).astype(jnp.int32)
        bits = [lax.bitcast_convert_type(values[k], jnp.int32)[None] for k in names]
        payload = jnp.concatenate([head, *bits]) if bits else head
        on_host = functools.partial(channel.on_report, lanes, tuple(names))
        if not host_report(on_host, payload):
            jax.debug.callback(on_host, payload)
        return done

    @emit.def_vmap
    def _one_report(axis_size: int, in_batched: Any, done: Any, total: Any, values: Any, after: Any) -> Any:
        d_b, t_b, v_b, a_b = in_batched
        pick = lambda x, b: jnp.max(x, axis=0) if b else x  # noqa: E731 - the furthest lane
        vals = {k: (jnp.mean(v, axis=0) if v_b[k] else v) for k, v in values.items()}
        every_lane = jnp.sum(after, axis=0, dtype=jnp.int32) if a_b else after  # waits for all lanes
        _emitter(channel, lanes * axis_size)(pick(done, d_b), pick(total, t_b), vals, every_lane)
        return done, d_b

    return emit


def _after(tree: Any) -> Any:
    """An int32 that depends on ``tree``'s values, so a report passed it cannot run before
    them (a report whose inputs are constants, when nothing is logged, could be scheduled
    by XLA ahead of the very iterations it counts)."""
    for leaf in jax.tree.leaves(tree):
        if not hasattr(leaf, "dtype") or not jnp.size(leaf):
            continue
        if jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
            leaf = jax.random.key_data(leaf)
        return (jnp.ravel(leaf)[0] != 0).astype(jnp.int32)
    return jnp.int32(0)


def _emit(
    channel: _Channel, done: Any, total: Any, values: dict[str, Any], after: Any = 0, lanes: int = 1
) -> None:
    """One report. Inside ``shard_map``/``pmap`` every device runs the loop: only the first
    device (index 0 on every manual mesh axis) reports, so there is one bar, not one per device."""
    args = (
        jnp.asarray(done, jnp.int32),
        jnp.asarray(total, jnp.int32),
        values,
        jnp.asarray(after, jnp.int32),
    )
    args = lax.stop_gradient(args)
    axes = tuple(getattr(jax.sharding.get_abstract_mesh(), "manual_axes", ()) or ())
    if not axes:
        _emitter(channel, lanes)(*args)
        return
    first = functools.reduce(jnp.logical_and, [lax.axis_index(a) == 0 for a in axes])

    def report(a: tuple) -> None:
        _emitter(channel, lanes)(*a)

    lax.cond(first, report, lambda a: None, args)


class _Frame:
    """A tracked loop body being traced: its channel and the values ``log`` collects."""

    def __init__(self, channel: _Channel | None):
        self.channel = channel
        self.values: dict[str, Any] = {}


def _collecting(f: Callable, channel: _Channel | None) -> Callable:
    """``f`` with ``log`` calls collected: returns ``(carry, (y, logged))``."""

    def body(carry: Any, x: Any) -> Any:
        frame = _Frame(channel)
        _stack().append(frame)
        try:
            carry, y = f(carry, x)
        finally:
            _stack().pop()
        return carry, (y, frame.values)

    return body


def log(**values: Any) -> None:
    """Record scalars from inside a tracked loop body (:func:`scan`, :func:`fori_loop`): each
    report shows the mean over the iterations since the previous one (and over vmapped lanes).

    Example:
      >>> def step(w, batch):
      ...     loss, g = jax.value_and_grad(loss_fn)(w, batch)
      ...     jaxmagic.progress.log(loss=loss)
      ...     return w - 0.1 * g, None
      >>> w, _ = jaxmagic.progress.scan(step, w, batches)
    """
    stack = _stack()
    if not stack:
        raise RuntimeError(
            "jaxmagic.progress.log() is for inside a jaxmagic.progress.scan/fori_loop body; "
            "in a Python loop use bar.log() on jaxmagic.track(...), in your own scan tick(i, n, loss=...)"
        )
    frame = stack[-1]
    for k, v in values.items():
        v = jnp.asarray(v)
        if v.size != 1:
            raise ValueError(f"jaxmagic.progress.log({k}=...) takes a scalar, got shape {v.shape}")
        frame.values[k] = v.reshape(()).astype(jnp.float32)


def _parent() -> _Channel | None:
    stack = _stack()
    return stack[-1].channel if stack else None


def _length_of(xs: Any, length: int | None) -> int | None:
    leaves = jax.tree.leaves(xs)
    sizes = {int(np.shape(x)[0]) if np.ndim(x) else -1 for x in leaves}
    if length is not None:
        if sizes and sizes != {int(length)}:
            return None
        return int(length)
    return sizes.pop() if len(sizes) == 1 and -1 not in sizes else None


def scan(
    f: Callable,
    init: Any,
    xs: Any = None,
    length: int | None = None,
    *,
    every: int | None = None,
    name: str | None = None,
    progress: Any = "auto",
    reverse: bool = False,
    unroll: int | bool = 1,
    max_rate: float = 10.0,
) -> tuple[Any, Any]:
    """``jax.lax.scan`` with live progress: same arguments, same results, plus a bar.

    The loop runs as chunks of ``every`` iterations with one host report per chunk (none
    between), so the cost is the reports alone: ~100 per loop by default. Call
    :func:`log` in ``f`` for curves. Works under ``jit``, ``vmap`` (one bar), ``grad``,
    nested in another tracked loop (a row of the outer bar), and with any ``xs``.

    Args:
      f, init, xs, length, reverse, unroll: as ``jax.lax.scan``.
      every: iterations per report (default: about 100 reports per loop).
      name: the title (default: ``f.__name__``). progress: ``"auto"`` (widget in a notebook
        kernel, else text), ``"widget"``, ``"text"``, ``None`` or a ``LoopView``.
      max_rate: redraws per second at most.

    Returns:
      ``(carry, ys)`` exactly as ``jax.lax.scan`` returns them.

    Example:
      >>> def step(x, _):
      ...     x = x - 0.01 * jnp.tanh(x)
      ...     jaxmagic.progress.log(norm=jnp.linalg.norm(x))
      ...     return x, None
      >>> x, _ = jax.jit(lambda x: jaxmagic.progress.scan(step, x, length=10_000))(x0)
    """
    every = _check_every(every)
    check_progress(progress)
    n = _length_of(xs, length)
    if not n:  # length 0 (nothing to report), or shapes lax.scan rejects with its own error
        quiet = _collecting(f, None)
        return lax.scan(
            lambda c, x: _drop_logged(quiet(c, x)), init, xs, length=length, reverse=reverse, unroll=unroll
        )
    k = min(every or default_every(n), n)
    q, r = divmod(n, k)
    channel = _Channel(name or _name_of(f, "scan"), "scan", n, k, k, progress, max_rate, _parent())
    body = _collecting(f, channel)
    # The short chunk (r iterations) is the one processed last, in either direction, so every
    # report but the last sits inside the outer loop, in loop order; the last one follows it.
    lo, hi = (r, n) if reverse else (0, q * k)
    leaves, tree = jax.tree.flatten(xs)
    main = tree.unflatten([lax.slice_in_dim(x, lo, hi).reshape((q, k) + x.shape[1:]) for x in leaves])
    rest = tree.unflatten(
        [lax.slice_in_dim(x, 0, r) if reverse else lax.slice_in_dim(x, hi, n) for x in leaves]
    )
    xs_none = xs is None

    def part(carry: Any, chunk_xs: Any, size: int, done_after: Any) -> tuple[Any, Any]:
        carry, (ys, logged) = lax.scan(
            body, carry, None if xs_none else chunk_xs, length=size, reverse=reverse, unroll=unroll
        )
        _emit(channel, done_after, n, {k_: jnp.mean(v) for k_, v in logged.items()}, _after((carry, ys)))
        return carry, ys

    def chunk(state: Any, chunk_xs: Any) -> tuple[Any, Any]:
        carry, done = state
        carry, ys = part(carry, chunk_xs, k, done + k)
        return (carry, done + k), ys

    (carry, _), ys = lax.scan(
        chunk, (init, jnp.int32(0)), None if xs_none else main, length=q, reverse=reverse
    )
    ys = jax.tree.map(lambda y: y.reshape((q * k,) + y.shape[2:]), ys)
    if not r:
        return carry, ys
    carry, ys_rest = part(carry, rest, r, n)
    join = (lambda a, b: jnp.concatenate([b, a])) if reverse else (lambda a, b: jnp.concatenate([a, b]))
    return carry, jax.tree.map(join, ys, ys_rest)


def _drop_logged(out: tuple[Any, Any]) -> tuple[Any, Any]:
    carry, (y, _) = out
    return carry, y


def _name_of(f: Callable, default: str) -> str:
    name = getattr(f, "__name__", None)
    return name if isinstance(name, str) and name.isidentifier() else default


def _concrete_int(v: Any) -> int | None:
    try:
        return int(v) if np.ndim(v) == 0 else None
    except (TypeError, jax.errors.ConcretizationTypeError, jax.errors.TracerIntegerConversionError):
        return None


def fori_loop(
    lower: Any,
    upper: Any,
    body_fun: Callable,
    init_val: Any,
    *,
    every: int | None = None,
    name: str | None = None,
    progress: Any = "auto",
    unroll: int | bool = 1,
    max_rate: float = 10.0,
) -> Any:
    """``jax.lax.fori_loop`` with live progress (``body_fun(i, val) -> val``; :func:`log` inside).

    With Python-int bounds it runs as :func:`scan` (chunks, one report per chunk); with
    traced bounds as ``lax.fori_loop`` with :func:`tick` after each iteration.

    Example:
      >>> x = jaxmagic.progress.fori_loop(0, 10_000, lambda i, x: x * 0.999 + 1.0, 0.0)
    """
    every = _check_every(every)
    check_progress(progress)
    lo, hi = _concrete_int(lower), _concrete_int(upper)
    name = name or _name_of(body_fun, "fori_loop")
    if lo is not None and hi is not None:
        if hi <= lo:
            return lax.fori_loop(lower, upper, body_fun, init_val)
        idx = jnp.arange(lo, hi, dtype=jnp.result_type(lower, upper))

        def step(val: Any, i: Any) -> tuple[Any, None]:
            return body_fun(i, val), None

        out, _ = scan(
            step, init_val, idx, every=every, name=name, progress=progress, unroll=unroll, max_rate=max_rate
        )
        return out

    def tracked(i: Any, val: Any) -> Any:
        channel_parent = _parent()
        frame = _Frame(_Channel(name, "fori_loop", None, every, 1, progress, max_rate, channel_parent))
        _stack().append(frame)
        try:
            val = body_fun(i, val)
        finally:
            _stack().pop()
        _tick(frame.channel, i - lower, upper - lower, every, frame.values)
        return val

    return lax.fori_loop(lower, upper, tracked, init_val)


def tick(
    i: Any,
    total: Any,
    *,
    every: int | None = None,
    start: Any = 0,
    name: str = "loop",
    progress: Any = "auto",
    max_rate: float = 10.0,
    **values: Any,
) -> None:
    """Report progress from inside your own loop body (``lax.scan``, ``fori_loop``,
    ``while_loop``): iteration ``i`` of ``total``, the first being ``start``.

    Reports when ``i - start`` is 0, a multiple of ``every`` less one, or the last; between
    them the cost is a ``lax.cond`` per iteration. Scalars in ``values`` are shown as they
    are at the reporting iterations. Under ``vmap`` the furthest lane's ``i`` counts and
    values are averaged over lanes: one bar. Prefer :func:`scan` where you can: it reports with no
    per-iteration cost.

    Args:
      i: the loop index (traced). total: iterations (Python int or traced).
      every: iterations per report (default: about 100 per loop). start: the first index.

    Example:
      >>> def body(carry, i):
      ...     carry = carry * 0.99 + 1.0
      ...     jaxmagic.progress.tick(i, 5000, start=5000, value=carry)
      ...     return carry, None
      >>> jax.lax.scan(body, 0.0, jnp.arange(5000, 10_000))
    """
    every = _check_every(every)
    check_progress(progress)
    static_total = _concrete_int(total)
    if static_total is not None and static_total < 0:
        raise ValueError(f"total must be >= 0, got {static_total}")
    if static_total == 0:
        return  # a loop of no iterations reports nothing
    for k, v in values.items():
        if jnp.size(v) != 1:
            raise ValueError(f"tick({k}=...) takes a scalar, got shape {jnp.shape(v)}")
    channel = _Channel(name, "tick", static_total, every, 1, progress, max_rate, _parent())
    channel.start = _concrete_int(start) or 0
    vals = {k: jnp.asarray(v).reshape(()).astype(jnp.float32) for k, v in values.items()}
    _tick(channel, jnp.asarray(i) - start, total, every, vals)


def _tick(channel: _Channel, counter: Any, total: Any, every: int | None, values: dict[str, Any]) -> None:
    """Report when ``counter`` (0-based) is the first, every ``every``-th, or the last."""
    counter = jnp.asarray(counter, jnp.int32)
    _gate(channel, every, 1)(*lax.stop_gradient((counter, jnp.asarray(total, jnp.int32), values)))


def _gate(channel: _Channel, every: int | None, lanes: int) -> Callable[..., Any]:
    """``gate(counter, total, values)``: a ``lax.cond`` around one report. Under ``vmap`` the
    rule reduces the counter over lanes before the ``cond``, which therefore stays a ``cond``
    (a batched predicate would make it a ``select`` running the report every iteration)."""

    @jax.custom_batching.custom_vmap
    def gate(counter: Any, total: Any, values: dict[str, Any]) -> Any:
        cadence = every if every is not None else jnp.maximum(1, (total + 99) // 100)
        due = (counter == 0) | ((counter + 1) % cadence == 0) | (counter == total - 1)

        def report(counter: Any, total: Any, values: dict[str, Any]) -> None:
            _emit(channel, counter + 1, total, values, counter, lanes)

        lax.cond(due, report, lambda *_: None, counter, total, values)
        return counter

    @gate.def_vmap
    def _furthest(axis_size: int, in_batched: Any, counter: Any, total: Any, values: dict[str, Any]) -> Any:
        # The lane that got furthest counts: in a vmapped while_loop the lanes that are done
        # stop counting while the others go on (offsets per lane are taken out by `start`).
        c_b, t_b, v_b = in_batched
        most = lambda x, b: jnp.max(x, axis=0) if b else x  # noqa: E731
        vals = {k: (jnp.mean(v, axis=0) if v_b[k] else v) for k, v in values.items()}
        _gate(channel, every, lanes * axis_size)(most(counter, c_b), most(total, t_b), vals)
        return counter, c_b

    return gate
