"""From raw observations (``Capture``) to a ``ProfileReport`` of plain, frozen data."""

from __future__ import annotations

import dataclasses
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from jaxmagic import _internals
from jaxmagic._result import Result
from jaxmagic.profile import misses as _misses
from jaxmagic.profile.capture import Capture, Lowering, StageEvent
from jaxmagic.profile.insights import Insight
from jaxmagic.profile.throughput import Throughput

#: Version of ``ProfileReport.to_dict``'s layout; ``jaxmagic.compare`` reads it. Raise it when
#: a key is renamed, removed or changes meaning.
REPORT_VERSION = 1


def environment() -> dict[str, str]:
    """Where a report was made: jax version, backend and device kind (for comparing runs)."""
    import jax

    device = jax.devices()[0]
    return {"jax": jax.__version__, "backend": device.platform, "device_kind": device.device_kind}


__all__ = ["CompileRecord", "FunctionProfile", "Insight", "ProfileReport", "build_report"]

_JAX_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__import__("jax").__file__)))


@dataclass(frozen=True)
class CompileRecord:
    """One trace (+ lower + backend compile) of a function."""

    trace_s: float
    lower_s: float
    backend_compile_s: float  # XLA's compile only
    site: str | None  # "line 7" for the profiled cell, else "file.py:12"
    reasons: tuple[str, ...]  # why the cache missed, in plain words
    kinds: tuple[str, ...]  # "first", "derived" (no cache miss: e.g. the backward program
    # under jax.grad), or a miss kind ("shape", "static", ...)
    signature: str | None  # input types, e.g. "x: f32[3], y: f32[]"

    @property
    def compile_total_s(self) -> float:
        """Trace + lower + backend compile."""
        return self.trace_s + self.lower_s + self.backend_compile_s


@dataclass(frozen=True)
class FunctionProfile:
    """Everything observed about one function (a ``jit`` function or an eager op)."""

    name: str
    kind: str  # "jit" (user function) or "eager" (op outside jit)
    defined_at: str | None
    compiles: tuple[CompileRecord, ...]
    calls: int | None  # executions (from --trace), eager-op count; None: not counted
    flops: float | None
    transcendentals: float | None
    bytes_accessed: float | None
    memory: dict[str, int] | None  # argument/output/alias/temp/generated_code bytes
    jaxpr: str | None
    hlo: str | None
    donated_args: int = 0
    device_s: float | None = None  # from --trace
    const_bytes: int = 0  # arrays closed over and baked into the program
    calls_lower_bound: bool = False  # calls counted in a truncated trace: at least this many
    # traced without building a program (jax.eval_shape, nnx.eval_shape, make_jaxpr): no compile
    traced_only: int = 0
    traced_only_s: float = 0.0
    throughput: Throughput | None = None  # achieved FLOP/s, bytes/s, utilisation (--trace)

    @property
    def trace_s(self) -> float:
        return sum(c.trace_s for c in self.compiles) + self.traced_only_s

    @property
    def lower_s(self) -> float:
        return sum(c.lower_s for c in self.compiles)

    @property
    def backend_compile_s(self) -> float:
        """XLA's compile time only (see ``compile_total_s`` for trace + lower + compile)."""
        return sum(c.backend_compile_s for c in self.compiles)

    @property
    def compile_total_s(self) -> float:
        """Trace + lower + backend compile, over every compile of this function."""
        return self.trace_s + self.lower_s + self.backend_compile_s

    @property
    def cache_misses(self) -> list[str]:
        """Why each compile happened ("first compile", or the cache miss reasons); further
        programs derived without a cache miss (kind ``derived``) are not misses."""
        return ["; ".join(c.reasons) for c in self.compiles if c.reasons and c.kinds != ("derived",)]

    @property
    def sites(self) -> list[str]:
        seen: list[str] = []
        for c in self.compiles:
            if c.site and c.site not in seen:
                seen.append(c.site)
        return seen

    @property
    def intensity(self) -> float | None:
        if self.flops is None or not self.bytes_accessed:
            return None
        return self.flops / self.bytes_accessed

    @property
    def peak_bytes(self) -> int | None:
        """Peak bytes per device of the last compiled program, from its memory analysis:
        arguments + outputs + temporaries − aliased + code (``jaxmagic.ir.peak_bytes``)."""
        from jaxmagic.ir import peak_bytes

        return peak_bytes(self.memory)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready data. Keys: ``name``, ``kind`` ("jit" | "eager"), ``defined_at``,
        ``compiles`` (count), ``trace_s``, ``lower_s``, ``backend_compile_s`` (XLA only),
        ``compile_total_s`` (trace + lower + backend), ``sites``, ``cache_misses``,
        ``compile_records`` (per compile: ``trace_s``, ``lower_s``, ``backend_compile_s``,
        ``site``, ``reasons``, ``kinds``, ``signature``), ``calls`` (``None``: not counted),
        ``calls_lower_bound``, ``flops``, ``transcendentals``, ``bytes_accessed``,
        ``arithmetic_intensity``, ``memory``, ``jaxpr``, ``hlo``, ``donated_args``,
        ``device_s`` (from ``--trace``), ``const_bytes``, ``traced_only`` (traces that built
        no program: ``jax.eval_shape``, ``make_jaxpr``; not in ``compiles``), ``throughput``
        (``--trace``: ``flops_per_s``, ``bytes_per_s``, ``utilization`` of the device's peak,
        ``executions``, ``devices``, ``note`` saying why a number is ``None``; ``None`` without
        a trace). Seconds are floats.
        ``peak_bytes``: see :attr:`peak_bytes` (``None`` without a memory analysis)."""
        return {
            "name": self.name,
            "kind": self.kind,
            "defined_at": self.defined_at,
            "compiles": len(self.compiles),
            "trace_s": self.trace_s,
            "lower_s": self.lower_s,
            "backend_compile_s": self.backend_compile_s,
            "compile_total_s": self.compile_total_s,
            "sites": self.sites,
            "cache_misses": self.cache_misses,
            "compile_records": [
                {
                    "trace_s": c.trace_s,
                    "lower_s": c.lower_s,
                    "backend_compile_s": c.backend_compile_s,
                    "site": c.site,
                    "reasons": list(c.reasons),
                    "kinds": list(c.kinds),
                    "signature": c.signature,
                }
                for c in self.compiles
            ],
            "calls": self.calls,
            "calls_lower_bound": self.calls_lower_bound,
            "flops": self.flops,
            "transcendentals": self.transcendentals,
            "bytes_accessed": self.bytes_accessed,
            "arithmetic_intensity": self.intensity,
            "memory": self.memory,
            "jaxpr": self.jaxpr,
            "hlo": self.hlo,
            "donated_args": self.donated_args,
            "device_s": self.device_s,
            "const_bytes": self.const_bytes,
            "traced_only": self.traced_only,
            "throughput": None if self.throughput is None else self.throughput.to_dict(),
            "peak_bytes": self.peak_bytes,
        }


@dataclass(frozen=True)
class ProfileReport(Result):
    """What JAX did while a cell (or ``with Profiler()`` block) ran.

    Render it by displaying it (HTML in notebooks, text in terminals) or call
    ``to_text()``, ``to_html()``, ``to_dict()``.
    """

    wall_s: float
    sync_s: float
    functions: tuple[FunctionProfile, ...]
    insights: tuple[Insight, ...]
    eager_ops: dict[str, int]
    eager_sites: dict[str, int]
    transfers: dict[str, int]
    syncs: dict[str, int]
    complete: bool = True
    error: str | None = None
    label: str = "cell"
    trace_dir: str | None = None
    timeline: tuple[dict[str, Any], ...] = ()
    build_s: float = 0.0
    notes: tuple[str, ...] = field(default_factory=tuple)
    # parts not measured because a JAX internal changed ("eager ops", "host transfers", ...):
    # renderers show them as unknown, never as 0
    unavailable: tuple[str, ...] = ()
    # JAX work of other threads during the cell (not charged to it): compiles/eager_ops/transfers
    other_threads: dict[str, int] = field(default_factory=dict)
    # one device's peak FLOP/s for utilisation under --trace, and where it comes from
    peak_flops: float | None = None
    peak_source: str | None = None
    # live device memory before/after, arrays created and still alive (profile.memory)
    memory: Any = None

    # -- totals ----------------------------------------------------------------
    @property
    def trace_s(self) -> float:
        return sum(f.trace_s for f in self.functions)

    @property
    def lower_s(self) -> float:
        return sum(f.lower_s for f in self.functions)

    @property
    def backend_compile_s(self) -> float:
        """XLA's compile time only, over every function."""
        return sum(f.backend_compile_s for f in self.functions)

    @property
    def compile_total_s(self) -> float:
        """Trace + lower + backend compile, over every function."""
        return self.trace_s + self.lower_s + self.backend_compile_s

    @property
    def run_s(self) -> float:
        """Wall time not spent compiling: Python, dispatch and device work."""
        return max(0.0, self.wall_s - self.compile_total_s)

    @property
    def n_compiles(self) -> int:
        return sum(len(f.compiles) for f in self.functions)

    def function(self, name: str) -> FunctionProfile:
        """The profile of the function called ``name`` (KeyError if none)."""
        for f in self.functions:
            if f.name == name:
                return f
        raise KeyError(
            f"no function named {name!r} in this report; have: "
            f"{', '.join(f.name for f in self.functions) or 'none'}"
        )

    def insight_kinds(self) -> list[str]:
        return [i.kind for i in self.insights]

    # -- result protocol -----------------------------------------------------
    def summary(self) -> str:
        from jaxmagic._format import fmt_seconds, plural

        user = [f for f in self.functions if f.kind == "jit"]
        text = (
            f"{plural(len(user), 'function')}, {plural(self.n_compiles, 'compile')}, "
            f"{fmt_seconds(self.wall_s)} wall"
        )
        return text + ("" if self.complete else ", incomplete")

    def to_text(self, width: int = 100) -> str:
        from jaxmagic.render.profile import profile_text

        return profile_text(self, width=width)

    def to_html(self) -> str:
        from jaxmagic.render.profile import profile_html

        return profile_html(self)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready data. Keys: ``version`` (``REPORT_VERSION``), ``environment`` (jax
        version, backend, device kind), ``wall_s``, ``compile_total_s`` (trace + lower + backend
        compile), ``trace_s``, ``lower_s``, ``backend_compile_s`` (XLA only), ``run_s``,
        ``sync_s``, ``complete``, ``error``, ``label``, ``functions`` (see
        ``FunctionProfile.to_dict``), ``insights`` (see ``Insight.to_dict``), ``eager_ops``
        (op -> count), ``eager_sites``, ``transfers``, ``syncs`` (site -> count), ``trace_dir``,
        ``timeline``, ``notes``, ``unavailable`` (parts not measured; their counts are not 0
        but unknown), ``other_threads``, ``peak_flops`` (one device's peak FLOP/s under
        ``--trace``, else ``None``), ``peak_source`` (known by device kind, or measured) and
        ``memory`` (live bytes per device before and after, arrays created and still alive with
        their owner, arrays freed: see ``profile.memory.MemorySection.to_dict``; ``None`` when
        not measured)."""
        return {
            "version": REPORT_VERSION,
            "environment": environment(),
            "wall_s": self.wall_s,
            "compile_total_s": self.compile_total_s,
            "trace_s": self.trace_s,
            "lower_s": self.lower_s,
            "backend_compile_s": self.backend_compile_s,
            "run_s": self.run_s,
            "sync_s": self.sync_s,
            "complete": self.complete,
            "error": self.error,
            "label": self.label,
            "functions": [f.to_dict() for f in self.functions],
            "insights": [i.to_dict() for i in self.insights],
            "eager_ops": dict(self.eager_ops),
            "eager_sites": dict(self.eager_sites),
            "transfers": dict(self.transfers),
            "syncs": dict(self.syncs),
            "trace_dir": self.trace_dir,
            "timeline": list(self.timeline),
            "notes": list(self.notes),
            "unavailable": list(self.unavailable),
            "other_threads": dict(self.other_threads),
            "peak_flops": self.peak_flops,
            "peak_source": self.peak_source,
            "memory": self.memory.to_dict() if self.memory is not None else None,
        }


# -- building ------------------------------------------------------------------

CellLabel = Callable[[str], "str | None"]  # filename -> "In[3]" for notebook cells, else None


def _site_label(
    site: tuple[str, int] | None, cell_file: str | None, cell_label: CellLabel | None = None
) -> str | None:
    """``line 7`` in the profiled cell, ``In[3]:2`` in another notebook cell, else ``file.py:12``."""
    if site is None:
        return None
    filename, line = site
    if cell_file is not None and filename == cell_file:
        return f"line {line}"
    label = cell_label(filename) if cell_label else None
    return f"{label or os.path.basename(filename)}:{line}"


def _relabel(where: str | None, cell_label: CellLabel | None) -> str | None:
    """``/tmp/ipykernel_1/123.py:4`` -> ``In[3]:4`` for code defined in a notebook cell."""
    if not where or not cell_label:
        return where
    filename, _, line = where.rpartition(":")
    label = cell_label(filename)
    return f"{label}:{line}" if label else where


@dataclass
class _Unit:
    """One compile being assembled from its stage events."""

    name: str
    trace: StageEvent | None = None
    lower: StageEvent | None = None
    compile: StageEvent | None = None
    lowering: Lowering | None = None
    miss: _misses.Miss | None = None


def _assemble_units(cap: Capture) -> list[_Unit]:
    items: list[tuple[int, str, Any]] = [(e.seq, e.stage, e) for e in cap.events]
    items += [(lw.seq, "lowering", lw) for lw in cap.lowerings]
    items += [(m.seq, "miss", m) for m in cap.misses]
    items.sort(key=lambda t: t[0])
    units: list[_Unit] = []
    pending_miss: dict[str, list[_misses.Miss]] = {}

    def attach(name: str, slot: str, obj: Any) -> None:
        # Stages of one compile arrive in order (trace, lower, lowering, compile), so a
        # stage belongs to the latest unit of that name unless that one already has it.
        for u in reversed(units):
            if u.name == name:
                if getattr(u, slot) is None:
                    setattr(u, slot, obj)
                    return
                break
        u = _Unit(name)
        setattr(u, slot, obj)
        queue = pending_miss.get(name)  # a compile without a trace event of its own
        if queue:
            u.miss = queue.pop(0)
        units.append(u)

    for _, stage, obj in items:
        if stage == "miss":
            parsed = _misses.parse(obj.message)
            if parsed is not None:
                pending_miss.setdefault(parsed.function, []).append(parsed)
            continue
        name = obj.name
        if stage == "trace":
            u = _Unit(name, trace=obj)
            queue = pending_miss.get(name)
            if queue:
                u.miss = queue.pop(0)
            units.append(u)
        else:
            attach(name, stage, obj)
    return units


def _checked_leaves(lowering: Lowering) -> dict[str, tuple] | None:
    """The nnx.jit argument leaves of ``lowering``, kept only where their count, shapes and
    dtypes match the program's inputs (a name is shown only when it is surely right)."""
    if not lowering.nnx_leaves:
        return None
    try:
        jaxpr = lowering.closed_jaxpr
        names = jaxpr.jaxpr.debug_info.arg_names if jaxpr.jaxpr.debug_info else None
        avals = jaxpr.in_avals
    except Exception:
        return None
    if not names:
        return None
    seen: dict[str, list[Any]] = {}
    for name, aval in zip(names, avals):
        m = _misses._NNX_LEAF.match(name or "")
        if m:
            seen.setdefault(m[1], []).append((int(m[2]), aval))
    kept = {}
    for param, leaves in lowering.nnx_leaves.items():
        found = sorted(seen.get(param, []), key=lambda t: t[0])
        if len(found) == len(leaves) and all(
            k == i and tuple(getattr(a, "shape", ())) == leaf[1] and str(getattr(a, "dtype", "")) == leaf[2]
            for i, ((k, a), leaf) in enumerate(zip(found, leaves))
        ):
            kept[param] = leaves
    return kept or None


def _namer(lowering: Lowering | None, defined_at: str | None):
    """``rename`` for input paths: parameter names and NNX Variable paths."""
    return _misses.path_namer(
        _misses.param_names(defined_at), _checked_leaves(lowering) if lowering is not None else None
    )


def _signature(lowering: Lowering | None, rename: Any = str) -> str | None:
    if lowering is None:
        return None
    from jaxmagic._format import shape_str

    try:
        jaxpr = lowering.closed_jaxpr
        names = jaxpr.jaxpr.debug_info.arg_names if jaxpr.jaxpr.debug_info else None
        avals = jaxpr.in_avals
        parts = []
        for i, aval in enumerate(avals):
            typ = shape_str(aval.shape, aval.dtype) if hasattr(aval, "shape") else str(aval)
            if getattr(aval, "weak_type", False):
                typ += "(weak)"
            label = rename(names[i]) if names and i < len(names) and names[i] else f"arg{i}"
            parts.append(f"{label}: {typ}")
        return ", ".join(parts)
    except Exception:
        return None


def _defined_at(lowering: Lowering | None, miss: _misses.Miss | None) -> str | None:
    if miss is not None and miss.defined_at:
        return miss.defined_at
    if lowering is None:
        return None
    info = lowering.closed_jaxpr.jaxpr.debug_info
    src = getattr(info, "func_src_info", None) if info is not None else None
    if src and " at " in src:
        return src.split(" at ", 1)[1]
    return None


def _is_eager(defined_at: str | None, lowering: Lowering | None, lowerings_seen: bool) -> bool:
    """An op dispatched outside jit (its tiny program is defined inside JAX)."""
    if defined_at is not None:
        return os.path.abspath(defined_at.rsplit(":", 1)[0]).startswith(_JAX_DIR)
    # with lowerings seen, an op's program always has one: no lowering is a function only
    # traced (jax.eval_shape, jax.make_jaxpr), not an op
    return lowering is None and not lowerings_seen


def _analyses(
    lowering: Lowering | None, want_jaxpr: bool, want_hlo: bool, notes: list[str], want_loops: bool = False
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "flops": None,
        "transcendentals": None,
        "bytes_accessed": None,
        "memory": None,
        "jaxpr": None,
        "hlo": None,
        "const_bytes": 0,
    }
    if lowering is None:
        return out
    out["const_bytes"] = int(sum(getattr(c, "nbytes", 0) for c in lowering.closed_jaxpr.consts))
    if want_jaxpr:
        try:
            from jaxmagic.ir import jaxpr_text

            out["jaxpr"] = jaxpr_text(lowering.closed_jaxpr)
        except Exception as e:  # pretty-printing must never break a report
            out["jaxpr"] = f"<jaxpr unavailable: {e}>"
    try:
        executable = _internals.executable_of(lowering.computation)
    except _internals.InternalsChanged as e:
        note = f"cost and memory analysis not measured: {e}"
        if note not in notes:
            notes.append(note)
        return out
    if executable is None:
        return out
    from jaxmagic.ir import cost_of, memory_of

    out.update(cost_of(executable))
    out["memory"] = memory_of(executable)
    if want_hlo or want_loops:
        try:
            text = executable.as_text()
        except Exception as e:
            text = None
            out["hlo"] = f"<optimized HLO unavailable: {e}>" if want_hlo else None
        if text is not None:
            out["hlo"] = text if want_hlo else None
            if want_loops:
                from jaxmagic.memories.hlo import op_counts

                out["while_loops"] = op_counts(text).get("while", 0)
    return out


_OPERATOR_TO_JNP = {
    "add": "add",
    "sub": "subtract",
    "mul": "multiply",
    "truediv": "true_divide",
    "floordiv": "floor_divide",
    "pow": "power",
    "matmul": "matmul",
    "neg": "negative",
    "abs": "absolute",
    "lt": "less",
    "le": "less_equal",
    "gt": "greater",
    "ge": "greater_equal",
    "eq": "equal",
    "ne": "not_equal",
    "and": "bitwise_and",
    "or": "bitwise_or",
    "mod": "remainder",
    "getitem": "getitem",
}


def _records(
    us: list[_Unit],
    defined: str | None,
    cell_file: str | None,
    cell_label: CellLabel | None,
    misses_known: bool,
) -> list[CompileRecord]:
    records = []
    for n, u in enumerate(us):
        site_ev = u.trace or u.lower or u.compile
        site = _site_label(
            site_ev.site if site_ev else (u.lowering.site if u.lowering else None), cell_file, cell_label
        )
        if u.miss is not None and cell_file and u.miss.call_file == cell_file:
            site = f"line {u.miss.call_line}"
        miss = _misses.renamed(u.miss, _namer(u.lowering, defined)) if u.miss else None
        reasons, kinds = (miss.reasons, miss.kinds) if miss else ((), ())
        if miss is None and n > 0 and misses_known:
            # JAX explained no tracing cache miss: a further program it derived from the
            # same function (forward and backward under jax.grad), not a recompile
            reasons, kinds = (
                (
                    "another program of the same function (e.g. its backward pass "
                    "under jax.grad), not a cache miss",
                ),
                ("derived",),
            )
        records.append(
            CompileRecord(
                trace_s=u.trace.seconds if u.trace else 0.0,
                lower_s=u.lower.seconds if u.lower else 0.0,
                backend_compile_s=u.compile.seconds if u.compile else 0.0,
                site=site,
                reasons=reasons,
                kinds=kinds,
                signature=_signature(u.lowering, _namer(u.lowering, defined)),
            )
        )
    return records


def build_report(
    cap: Capture,
    *,
    cell_file: str | None = None,
    jaxpr: bool = True,
    hlo: bool = False,
    label: str = "cell",
    error: str | None = None,
    trace: dict[str, Any] | None = None,
    cell_label: CellLabel | None = None,
    device: Any = None,
    namespace: Any = None,
    extra_roots: Any = (),
) -> ProfileReport:
    """Turn a ``Capture`` into a ``ProfileReport`` (JAX objects are dropped here).

    Args:
        cap: the raw observations.
        cell_file: the filename the profiled code was compiled under; call sites in it are
            shown as ``line N``.
        jaxpr / hlo: include jaxpr text / optimized HLO text per function.
        label: what was profiled, for titles ("cell", "line", "block").
        error: ``"TypeName: message"`` if the profiled code raised.
        trace: per-function device times, calls and timeline from ``--trace`` (see
            ``tracing.TraceSession.summary``).
        cell_label: filename -> ``In[3]`` for code from other notebook cells (else ``None``).
        device: whose peak FLOP/s the ``--trace`` utilisation is measured against (default
            ``jax.devices()[0]``); a CPU's peak is measured here, once per process, never
            while the profiled code runs.
        namespace, extra_roots: where the memory section looks for the owners of arrays the
            block created (see ``profile.memory.memory_section``).
    """
    from jaxmagic.profile.insights import find_insights, in_innermost_loop
    from jaxmagic.profile.tracing import sanitize

    t0 = time.perf_counter()
    notes = list(cap.notes)
    units = _assemble_units(cap)
    eager_calls: Counter = Counter()
    for op, n in cap.eager_ops.items():
        eager_calls[_OPERATOR_TO_JNP.get(op, op)] += n

    groups: dict[tuple[str, str | None], list[_Unit]] = {}
    for u in units:
        defined = _defined_at(u.lowering, u.miss)
        key = (u.name, defined)
        if defined is None:  # attach to the only known function of that name, if any
            same = [k for k in groups if k[0] == u.name]
            if len(same) == 1:
                key = same[0]
        groups.setdefault(key, []).append(u)

    trace = trace or {}
    device_s, calls_traced = trace.get("device_s", {}), trace.get("calls", {})
    device_runs = trace.get("device_runs", {})
    lower_bound = bool(trace.get("truncated"))
    misses_known = cap.misses_explained
    lowerings_seen = "cost, memory and jaxprs" not in cap.unavailable

    def traced_calls(name: str) -> int | None:
        n = calls_traced.get(name)
        return n if n is not None else device_runs.get(sanitize(name))

    functions = []
    while_loops: dict[int, int | None] = {}  # id(FunctionProfile) -> while ops in its program
    for (name, defined), group in groups.items():
        # a trace that built no program (eval_shape, make_jaxpr) is not a compile
        us = [u for u in group if u.lowering is not None or u.lower is not None or u.compile is not None]
        traced = [u for u in group if u not in us]
        last_lowering = next((u.lowering for u in reversed(us) if u.lowering is not None), None)
        kind = "eager" if _is_eager(defined, last_lowering, lowerings_seen) else "jit"
        # Eager ops are single primitives: their IR is never shown, so skip printing it.
        info = _analyses(
            last_lowering,
            jaxpr and kind == "jit",
            hlo and kind == "jit",
            notes,
            bool(device_s) and kind == "jit",
        )
        loops = info.pop("while_loops", None)
        calls = traced_calls(name) if kind == "jit" else None
        if calls is None and kind == "eager" and name in eager_calls:
            calls = eager_calls[name]
        functions.append(
            FunctionProfile(
                name=name,
                kind=kind,
                defined_at=_relabel(defined, cell_label),
                compiles=tuple(_records(us, defined, cell_file, cell_label, misses_known)),
                calls=calls,
                calls_lower_bound=lower_bound and calls is not None and kind == "jit",
                donated_args=sum(last_lowering.donated) if last_lowering else 0,
                device_s=device_s.get(sanitize(name)),
                traced_only=len(traced),
                traced_only_s=sum(u.trace.seconds for u in traced if u.trace),
                **info,
            )
        )
        while_loops[id(functions[-1])] = loops
    # functions that ran in the cell without compiling in it (compiled before): from --trace;
    # eager ops dispatched as tiny jitted programs are counted with the eager ops instead
    known = {f.name for f in functions} | set(cap.eager_ops) | set(eager_calls)
    for name, n in calls_traced.items():
        if name not in known and sanitize(name) in device_s:
            functions.append(
                FunctionProfile(
                    name=name,
                    kind="jit",
                    defined_at=None,
                    compiles=(),
                    calls=n,
                    calls_lower_bound=lower_bound,
                    flops=None,
                    transcendentals=None,
                    bytes_accessed=None,
                    memory=None,
                    jaxpr=None,
                    hlo=None,
                    device_s=device_s.get(sanitize(name)),
                )
            )
    short = [
        f.name
        for f in functions
        if f.kind == "jit" and f.calls and device_runs.get(sanitize(f.name), f.calls) < f.calls
    ]
    if short and not lower_bound:
        notes.append(
            f"--trace: device time of {', '.join(short)} leaves out executions still "
            f"running when the trace stopped (their results were not waited for)"
        )
    functions.sort(key=lambda f: (f.kind != "jit", -f.compile_total_s, -(f.device_s or 0)))
    peak = None
    if device_s:
        functions, peak = _with_throughput(functions, trace, device, while_loops)

    def site_label(site: tuple[str, int] | None) -> str | None:
        return _site_label(site, cell_file, cell_label)

    def sites(counter: Counter) -> dict[str, int]:
        out: dict[str, int] = {}
        for site, n in counter.most_common():
            lbl = site_label(site) or "?"
            out[lbl] = out.get(lbl, 0) + n
        return out

    per_step: dict[str, bool | None] = {}
    for site in (*cap.transfers, *cap.syncs):
        verdicts = [in_innermost_loop(*frame) for frame in cap.sync_chains.get(site, ())]
        known = [v for v in verdicts if v is not None]
        per_step[site_label(site) or "?"] = any(known) if known else None

    if trace.get("error"):
        notes.append(trace["error"])
    if trace.get("truncated"):
        notes.append(trace["truncated"])
    others = {k: v for k, v in vars(cap.other_threads).items() if v}
    report = ProfileReport(
        wall_s=cap.wall_s,
        sync_s=cap.sync_s,
        functions=tuple(functions),
        insights=(),
        eager_ops=dict(eager_calls.most_common()),
        eager_sites=sites(cap.eager_sites),
        transfers=sites(cap.transfers),
        syncs=sites(cap.syncs),
        complete=cap.exception is None,
        error=error,
        label=label,
        trace_dir=trace.get("dir"),
        timeline=tuple(trace.get("timeline", ())),
        notes=tuple(notes),
        unavailable=tuple(cap.unavailable),
        other_threads=others,
        peak_flops=peak.flops if peak else None,
        peak_source=peak.describe() if peak else None,
    )
    insights = tuple(find_insights(report, cap, per_step=per_step, label=site_label))
    memory, notes_after = None, report.notes
    if cap.live_before is not None and cap.live_after is not None:
        from jaxmagic.profile.memory import memory_section

        try:
            memory = memory_section(cap.live_before, cap.live_after, namespace, extra_roots=extra_roots)
        except Exception as e:  # a memory section must never cost the user the report
            notes_after += (f"memory section not available: {type(e).__name__}: {e}",)
    build_s = time.perf_counter() - t0
    return dataclasses.replace(report, insights=insights, build_s=build_s, memory=memory, notes=notes_after)


def _with_throughput(
    functions: list[FunctionProfile], trace: dict[str, Any], device: Any, while_loops: dict[int, int | None]
) -> tuple[list[FunctionProfile], Any]:
    """``functions`` with their ``--trace`` throughput, and the device's ``Peak`` (measured only
    when some function has FLOPs and device time to compare with it)."""
    from jaxmagic import devicepeak
    from jaxmagic.profile.throughput import achieved
    from jaxmagic.profile.tracing import sanitize

    runs, devices = trace.get("device_runs", {}), trace.get("devices", {})
    modules = Counter(sanitize(f.name) for f in functions if f.kind == "jit")
    wanted = any(f.kind == "jit" and f.device_s and (f.flops or 0) > 0 for f in functions)
    if wanted and device is None:
        import jax

        device = jax.devices()[0]
    peak = devicepeak.peak(device) if wanted else None
    out = []
    for f in functions:
        if f.kind != "jit" or f.device_s is None:
            out.append(f)
            continue
        module = sanitize(f.name)
        throughput = achieved(
            flops=f.flops,
            bytes_accessed=f.bytes_accessed,
            executions=runs.get(module, f.calls),
            devices=devices.get(module, 1),
            device_s=f.device_s,
            programs=len(f.compiles),
            shared_name=modules[module] > 1,
            loops=while_loops.get(id(f)) or 0,
            peak_flops=peak.flops if peak else None,
        )
        out.append(dataclasses.replace(f, throughput=throughput))
    return out, peak
