"""``--time``: measured device time per module call.

The trace's op events do not carry ``jax.named_scope`` names (on CPU they name only the HLO
module, op and run), but the compiled program's op metadata does. So the whole call is
compiled once with a scope ``jm_call_<k>`` around each module call ``k``, run on a split copy
of the model's state under a ``jax.profiler`` trace, and each op event's time is given to the
call its HLO instruction came from:

- an op's own time is its duration less the ops nested in it on the same thread (a loop's
  body runs inside its ``while`` op), so no time is counted twice;
- a fusion that holds ops of several calls goes to the innermost call holding all of them
  (rows are inclusive, so the parent's row has it);
- ops from no call (copies XLA added, ops without metadata) go to the whole call's own time.

Rows are then inclusive: a call's time is its own ops' time plus that of the calls inside it.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp

from jaxmagic.layercost.recording import SCOPE_PREFIX, Call, recording

RUNS = 3  # traced executions averaged per row
_TOKEN = re.compile(re.escape(SCOPE_PREFIX) + r"(\d+)")


@dataclass(frozen=True)
class Timing:
    """Device seconds per row (inclusive, mean of ``runs`` executions) and how they were had."""

    device_s: tuple[float, ...] | None  # None: not measured (``error`` says why)
    self_s: tuple[float, ...] | None  # outside the calls nested in each
    runs: int
    devices: int
    unattributed_s: float  # per execution: op events naming no instruction of the program
    zeros: bool  # inputs given as shapes ran on zeros
    error: str | None = None

    def describe(self) -> str:
        if self.device_s is None:
            return f"device time not measured: {self.error}"
        parts = [
            f"device time: mean of {self.runs} runs of the whole call compiled once, under a "
            "jax.profiler trace; each XLA op is given to the module call it came from (a "
            "jax.named_scope per call, read from the compiled program's op metadata), an op "
            "fused from several calls to the innermost call holding them all; concurrent ops "
            "each count"
        ]
        if self.devices > 1:
            parts.append(f"summed over {self.devices} devices")
        if self.zeros:
            parts.append("inputs given as shapes ran on zeros")
        if self.unattributed_s > 0:
            parts.append(
                f"{self.unattributed_s * 1e6:.3g} µs per run of op events naming no instruction of the "
                "program are counted as the whole call's own time"
            )
        return "; ".join(parts)


def _concrete(tree: Any) -> tuple[Any, bool]:
    zeros = False

    def leaf(x: Any) -> Any:
        nonlocal zeros
        if isinstance(x, jax.ShapeDtypeStruct):
            zeros = True
            return jnp.zeros(x.shape, x.dtype)
        return x

    return jax.tree.map(leaf, tree), zeros


def _common(paths: list[tuple[int, ...]]) -> tuple[int, ...]:
    out = paths[0]
    for p in paths[1:]:
        n = 0
        while n < min(len(out), len(p)) and out[n] == p[n]:
            n += 1
        out = out[:n]
    return out


def scope_paths(hlo_text: str) -> dict[str, tuple[int, ...]]:
    """HLO instruction name -> the call indices (outermost first) its work came from: from its
    ``op_name`` metadata and, for fusions and loops, the instructions it runs."""
    from jaxmagic.memories.hlo import instructions

    found = instructions(hlo_text)
    by_computation: dict[str, list[Any]] = defaultdict(list)
    for ins in found:
        by_computation[ins.computation].append(ins)
    memo: dict[str, tuple[int, ...] | None] = {}

    def of_instruction(ins: Any, seen: frozenset) -> tuple[int, ...] | None:
        paths = []
        tokens = _TOKEN.findall(ins.op_name or "")
        if tokens:  # metadata naming no call (a reduction's add region) says nothing
            paths.append(tuple(int(t) for t in tokens))
        for comp in ins.called:
            p = of_computation(comp, seen)
            if p is not None:
                paths.append(p)
        return _common(paths) if paths else None

    def of_computation(comp: str, seen: frozenset) -> tuple[int, ...] | None:
        if comp in memo:
            return memo[comp]
        if comp in seen:  # a cycle would be malformed HLO: nothing to learn
            return None
        paths = [
            p for i in by_computation.get(comp, ()) if (p := of_instruction(i, seen | {comp})) is not None
        ]
        memo[comp] = _common(paths) if paths else None
        return memo[comp]

    # an instruction with no metadata anywhere in it (a copy XLA added) belongs to no call: ()
    return {ins.name: of_instruction(ins, frozenset()) or () for ins in found}


def own_times(events: list[dict[str, Any]], module: str) -> list[tuple[dict[str, Any], float]]:
    """``(event, own µs)`` for each op event of ``module``: its duration less the events nested
    in it on the same thread."""
    by_thread: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for e in events:
        args = e.get("args") or {}
        if e.get("ph") == "X" and args.get("hlo_module") == module:
            by_thread[(e.get("pid"), e.get("tid"))].append(e)
    out = []
    for items in by_thread.values():
        items.sort(key=lambda e: (float(e["ts"]), -float(e.get("dur", 0.0))))
        stack: list[list[Any]] = []  # [event, end, nested µs]
        done = []
        for e in items:
            start, dur = float(e["ts"]), float(e.get("dur", 0.0))
            while stack and stack[-1][1] <= start:
                done.append(stack.pop())
            if stack:
                stack[-1][2] += dur
            stack.append([e, start + dur, 0.0])
        done += stack
        out += [(e, max(0.0, float(e.get("dur", 0.0)) - nested)) for e, _end, nested in done]
    return out


def measure(
    model: Any,
    calls: list[Call],
    classes: set[type],
    args: tuple,
    kwargs: dict,
    *,
    linen: bool,
    trace_dir: str | None = None,
    runs: int = RUNS,
) -> Timing:
    """Device time of each recorded call (``calls``, in order) of ``model(*args, **kwargs)``.

    The model's state is split once and the call runs on that copy, so the user's model
    (RNG counters, batch statistics) is not changed. Raises ``LayerCallError`` if the call
    raises when it runs.
    """
    from flax import nnx

    from jaxmagic.layercost.capture import _call_error, split_arrays
    from jaxmagic.profile.tracing import TraceSession, load_events

    (args, kwargs), zeros = _concrete((args, kwargs))
    graphdef, state = nnx.split(model)
    dyn, rebuild = split_arrays(args, kwargs)
    timed: list[Call] = []

    def jaxmagic_tabulate_time(state: Any, dyn: list) -> Any:
        m = nnx.merge(graphdef, state)
        paths = {id(sub): path for path, sub in nnx.iter_modules(m)}
        a, k = rebuild(dyn)
        timed.clear()
        with recording(classes, timed, paths, scoped=True, linen=linen):
            return m(*a, **k)

    try:
        compiled = jax.jit(jaxmagic_tabulate_time).lower(state, dyn).compile()
        jax.block_until_ready(compiled(state, dyn))  # the first run pays one-off costs
    except Exception as e:
        raise _call_error(model, e) from e
    if [c.path for c in timed] != [c.path for c in calls]:
        return Timing(None, None, runs, 1, 0.0, zeros, "the timed run called the layers in another order")
    hlo = compiled.as_text()
    module = re.match(r"HloModule\s+([\w.\-]+)", hlo)
    owned = trace_dir is None
    session = TraceSession(trace_dir or tempfile.mkdtemp(prefix="jaxtabulate-time-"))
    try:
        session.start()
        if session.error:
            return Timing(None, None, runs, 1, 0.0, zeros, session.error.removeprefix("--trace: "))
        try:
            for _ in range(runs):
                jax.block_until_ready(compiled(state, dyn))
        finally:
            session.stop()
        path = session.trace_file()
        if session.error or path is None or module is None:
            return Timing(None, None, runs, 1, 0.0, zeros, session.error or "no trace file was written")
        events = own_times(load_events(path), module.group(1))
    finally:
        if owned:
            shutil.rmtree(session.directory, ignore_errors=True)
    return _attribute(events, scope_paths(hlo), len(calls), runs, zeros)


def _attribute(
    events: list[tuple[dict[str, Any], float]],
    paths: dict[str, tuple[int, ...]],
    n: int,
    runs: int,
    zeros: bool,
) -> Timing:
    inclusive, own_time = [0.0] * n, [0.0] * n
    unattributed, devices = 0.0, set()
    for e, own in events:
        args = e.get("args") or {}
        devices.add((e.get("pid"), args.get("device_ordinal")))
        path = paths.get(str(args.get("hlo_op", "")))
        if path is None:
            unattributed += own
        path = tuple(k for k in path or () if k < n)
        own_time[path[-1] if path else 0] += own
        for k in {0, *path}:
            inclusive[k] += own

    def per_run(us: list[float]) -> tuple[float, ...]:
        return tuple(t / 1e6 / runs for t in us)

    return Timing(
        per_run(inclusive), per_run(own_time), runs, max(1, len(devices)), unattributed / 1e6 / runs, zeros
    )
