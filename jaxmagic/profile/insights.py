"""Plain-language findings about classic JAX pitfalls, each with a stable ``kind``.

Every rule fires only on clear evidence (thresholds below), so an ordinary cell gets no
warning. Rules read the report and, for warnings and exceptions, the raw capture.
"""

from __future__ import annotations

import ast
import linecache
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, get_args

from jaxmagic._format import fmt_seconds

if TYPE_CHECKING:
    from jaxmagic.profile.capture import Capture
    from jaxmagic.profile.report import ProfileReport

InsightKind = Literal[
    "recompile",
    "jit-recreated",
    "captured-constant",
    "eager-ops",
    "compile-dominated",
    "host-sync",
    "donation-unusable",
    "x64-truncated",
    "tracer-conversion",
    "deleted-array",
]
INSIGHT_KINDS: tuple[str, ...] = get_args(InsightKind)


@dataclass(frozen=True)
class Insight:
    """A plain-language finding about a JAX pitfall seen in the profiled code.

    ``kind`` is one of ``INSIGHT_KINDS`` (a stable identifier); ``message`` says what
    happened, ``fix`` what to do about it; ``severity`` is ``"warn"`` or ``"info"``.
    """

    kind: InsightKind
    message: str
    fix: str
    function: str | None = None
    line: int | None = None
    severity: Literal["warn", "info"] = "warn"

    def __post_init__(self) -> None:
        if self.kind not in INSIGHT_KINDS:
            raise ValueError(f"unknown insight kind {self.kind!r}; known: {', '.join(INSIGHT_KINDS)}")

    def to_dict(self) -> dict[str, Any]:
        """``{"kind", "message", "fix", "function", "line", "severity"}``."""
        return {
            "kind": self.kind,
            "message": self.message,
            "fix": self.fix,
            "function": self.function,
            "line": self.line,
            "severity": self.severity,
        }


EAGER_OPS_MIN = 100  # ops dispatched outside jit before we call it op-by-op
HOST_SYNC_MIN = 20  # transfers/syncs from one line before we call it a loop
COMPILE_SHARE = 0.5  # share of the wall time spent compiling
COMPILE_MIN_S = 0.1  # ...and at least this long
CONST_MIN_BYTES = 1 << 20  # closed-over arrays baked into a program

_RECOMPILE_FIX = {
    "shape": "give the function a few fixed shapes (pad or bucket inputs), or move the varying "
    "part out of the jitted function",
    "dtype": "cast inputs to one dtype before the call",
    "weak_type": "pass the same kind of value every time: jnp.asarray(x, jnp.float32) rather than "
    "a Python scalar one time and an array the next",
    "static": "each value of a static argument compiles a new program: pass it as a traced array "
    "if it takes many values",
    "structure": "keep the input pytree structure (keys, list lengths, None entries) identical between calls",
    "graph": "nnx.jit compiles once per object graph: pass the same Module/Optimizer objects on "
    "every call (create them once), and do not add or remove attributes between calls",
    "other": "keep argument types, shapes and static values identical between calls",
}


def _line_of(site: str | None) -> int | None:
    if site and site.startswith("line "):
        return int(site.split()[1])
    return None


# Compile kinds that are not a cache miss: the first compile of a function, and a further
# program JAX derives from it without a tracing cache miss (forward/backward under grad).
NOT_A_MISS = ("first", "derived")


def _recompiles(report: ProfileReport) -> Iterator[Insight]:
    if "cache-miss reasons" in report.unavailable:
        return  # without JAX's explanations a second compile cannot be told from a recompile
    for f in report.functions:
        if f.kind != "jit" or len(f.compiles) < 2:
            continue
        where = f" at {f.sites[0]}" if f.sites else ""
        line = _line_of(f.sites[0] if f.sites else None)
        firsts = Counter(c.signature for c in f.compiles if c.kinds == ("first",))
        wasted = sum(n - 1 for n in firsts.values())
        if wasted:  # a new wrapper compiled a signature another wrapper had already compiled
            yield Insight(
                "jit-recreated",
                f"{f.name} was wrapped in jax.jit anew {sum(firsts.values())} times{where}: every "
                f"new wrapper starts with an empty cache and compiles from scratch "
                f"({fmt_seconds(f.compile_total_s)} compiling).",
                "create the jitted function once (outside the loop or function) and reuse it",
                function=f.name,
                line=line,
            )
            continue
        # a compile without kinds: explanations were off (Profiler(explain_cache_misses=False))
        misses = [
            c
            for i, c in enumerate(f.compiles)
            if (c.kinds and not set(c.kinds) <= set(NOT_A_MISS)) or (not c.kinds and i > 0)
        ]
        if not misses:
            continue
        reasons = [r for c in misses for r in c.reasons]
        kinds = Counter(k for c in misses for k in c.kinds if k not in NOT_A_MISS)
        shown = "; ".join(reasons[:3]) + (f"; … {len(reasons) - 3} more" if len(reasons) > 3 else "")
        what = f": {shown}" if shown else ""
        main = kinds.most_common(1)[0][0] if kinds else "other"
        yield Insight(
            "recompile",
            f"{f.name} compiled {len(f.compiles)} times{where}, "
            f"{fmt_seconds(f.compile_total_s)} in total{what}.",
            _RECOMPILE_FIX[main],
            function=f.name,
            line=line,
        )


def _captured_constants(report: ProfileReport) -> Iterator[Insight]:
    from jaxmagic._format import fmt_bytes

    for f in report.functions:
        if f.kind == "jit" and f.const_bytes >= CONST_MIN_BYTES:
            yield Insight(
                "captured-constant",
                f"{f.name} closes over {fmt_bytes(f.const_bytes)} of arrays (globals or closure "
                f"variables). They become constants of the compiled program: compiled again if "
                f"they change, and held in memory with it.",
                "pass the arrays as arguments to the jitted function instead of closing over them",
                function=f.name,
                line=_line_of(f.sites[0] if f.sites else None),
            )


def _eager(report: ProfileReport) -> Iterator[Insight]:
    if "eager ops" in report.unavailable:
        return
    total = sum(report.eager_ops.values())
    if total < EAGER_OPS_MIN:
        return
    top = ", ".join(f"{op} ×{n}" for op, n in list(report.eager_ops.items())[:4])
    sites = list(report.eager_sites.items())
    where = f", mostly from {sites[0][0]}" if sites else ""
    yield Insight(
        "eager-ops",
        f"{total} operations were dispatched one at a time outside jit ({top}){where}. Each one "
        f"is a separate call into XLA with its own Python and dispatch overhead.",
        "put the computation in a function decorated with @jax.jit; write Python loops over "
        "arrays as jax.lax.fori_loop / jax.lax.scan or vectorise them with jax.vmap",
        line=_line_of(sites[0][0]) if sites else None,
    )


def _compile_dominated(report: ProfileReport) -> Iterator[Insight]:

    if report.wall_s <= 0 or report.compile_total_s < COMPILE_MIN_S:
        return
    share = report.compile_total_s / report.wall_s
    if share < COMPILE_SHARE:
        return
    yield Insight(
        "compile-dominated",
        f"{share:.0%} of the {fmt_seconds(report.wall_s)} went to tracing and compiling "
        f"({fmt_seconds(report.compile_total_s)}); running took {fmt_seconds(report.run_s)}.",
        "compilation is paid once per input signature: time a second call to see steady-state "
        "speed, and set jax.config.update('jax_compilation_cache_dir', ...) to reuse compiled "
        "programs across sessions",
        severity="info",
    )


def in_innermost_loop(filename: str, line: int) -> bool | None:
    """Whether ``line`` runs once per iteration of the innermost loop of its source.

    ``True``: it sits in a loop whose body holds no further loop (a per-step sync).
    ``False``: it is in no loop (one statement, e.g. a library call, made the copies) or in an
    outer loop around an inner one (once per epoch). ``None``: the source is not readable.
    """
    source = "".join(linecache.getlines(filename))
    if not source:
        return None
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None
    loops = (ast.For, ast.AsyncFor, ast.While, ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)
    enclosing = [
        n for n in ast.walk(tree) if isinstance(n, loops) and n.lineno <= line <= (n.end_lineno or n.lineno)
    ]
    if not enclosing:
        return False
    inner = max(enclosing, key=lambda n: n.lineno)
    nested = [
        n
        for n in ast.walk(inner)
        if isinstance(n, loops) and n is not inner and not n.lineno <= line <= (n.end_lineno or n.lineno)
    ]
    return not nested


def _host_syncs(report: ProfileReport, per_step: Mapping[str, bool | None]) -> Iterator[Insight]:
    """Copies and waits at one line, judged against the loop they run in: per step of the
    innermost loop is the pitfall; once per epoch around an inner loop, or many copies made
    by one library call, is not."""
    if "host transfers" in report.unavailable:
        return
    for site, n in report.transfers.items():
        if n >= HOST_SYNC_MIN and per_step.get(site) is not False:
            yield Insight(
                "host-sync",
                f"{site} copied a device value to the host {n} times, once per step of its loop "
                f"(float(), .item(), np.asarray or print). Each copy waits for all queued device "
                f"work, so asynchronous dispatch cannot run ahead.",
                "keep values on the device inside the loop (accumulate with jnp) and read them "
                "once at the end, or only every N steps",
                line=_line_of(site),
            )
    for site, n in report.syncs.items():
        if n >= HOST_SYNC_MIN and per_step.get(site) is not False:
            yield Insight(
                "host-sync",
                f"{site} called block_until_ready {n} times, once per step of its loop: the host "
                f"waits for the device each time instead of queueing the next step.",
                "block once after the loop (for timing) or not at all",
                line=_line_of(site),
            )


_X64_FIX = (
    "set jax.config.update('jax_enable_x64', True) at startup if you need 64-bit, "
    "or convert explicitly (np.asarray(x, np.float32) / np.int32) where 32-bit is enough"
)


def _first_sentence(message: str, limit: int = 300) -> str:
    """The message's first sentence, whole (never cut mid-sentence)."""
    text = " ".join(message.split())
    end = text.find(". ")
    sentence = text if end < 0 else text[: end + 1]
    if len(sentence) > limit:
        sentence = sentence[:limit].rsplit(" ", 1)[0] + " …"
    return sentence


def _warnings(cap: Capture) -> Iterator[Insight]:
    seen: set[str] = set()
    for _category, message, _site in cap.warnings:
        if "donated buffers were not usable" in message and "donation" not in seen:
            seen.add("donation")
            yield Insight(
                "donation-unusable",
                "Some donated buffers could not be reused for outputs (no output has the same "
                "shape and dtype), so donation saved no memory: " + _first_sentence(message),
                "donate only arguments whose shape/dtype match an output, or drop donate_argnums",
            )
        elif "requested in" in message and "is not available" in message and "x64" not in seen:
            seen.add("x64")
            yield Insight(
                "x64-truncated",
                "A 64-bit dtype was requested but JAX runs in 32-bit mode, so the value was "
                "truncated: " + _first_sentence(message),
                _X64_FIX,
            )


def _silent_x64(cap: Capture, label: Any) -> Iterator[Insight]:
    """64-bit NumPy values turned 32-bit by JAX without a warning (``jnp.asarray``)."""
    if not cap.x64_casts:
        return
    lost = [c for c in cap.x64_casts if c.lost]
    first = (lost or cap.x64_casts)[0]
    where = label(first.site) or "the code"
    more = len(cap.x64_casts) - 1
    also = f" ({more} more such conversion{'s' if more != 1 else ''})" if more > 0 else ""
    if lost:
        text = (
            f"{where}: {first.what}; JAX runs in 32-bit mode and converted it without a "
            f"warning, so the value changed{also}."
        )
    else:
        text = (
            f"{where}: {first.what}; JAX runs in 32-bit mode and converted it without a "
            f"warning, so it lost precision{also}."
        )
    yield Insight("x64-truncated", text, _X64_FIX, line=_line_of(where), severity="warn" if lost else "info")


_TRACER_ERRORS = {
    "ConcretizationTypeError",
    "TracerBoolConversionError",
    "TracerIntegerConversionError",
    "TracerArrayConversionError",
}


def _exception(cap: Capture) -> Iterator[Insight]:

    exc = cap.exception
    if exc is None:
        return
    name = type(exc).__name__
    if name in _TRACER_ERRORS:
        yield Insight(
            "tracer-conversion",
            f"{name}: Python needed a concrete value (an if/while condition, int(), a NumPy "
            f"call or a shape) from an array that is only abstract while jit traces it.",
            "use jnp.where / jax.lax.cond / jax.lax.while_loop for value-dependent control flow, "
            "or mark the argument static (static_argnums) if it takes only a few values",
        )
    elif "has been deleted" in str(exc):
        yield Insight(
            "deleted-array",
            "An array was used after it was deleted, typically after being donated to a jitted "
            "function (donate_argnums): donation hands its buffer to the output.",
            "use the function's outputs instead of the donated inputs, or stop donating that argument",
        )


def find_insights(
    report: ProfileReport,
    cap: Capture,
    *,
    per_step: Mapping[str, bool | None] | None = None,
    label: Any = lambda site: None,
) -> list[Insight]:
    """All insights for ``report``, warnings first.

    Args:
        per_step: site label -> ``in_innermost_loop`` verdict for host-sync sites.
        label: ``(file, line)`` -> the site label used in the report.
    """
    found = [
        *_recompiles(report),
        *_captured_constants(report),
        *_eager(report),
        *_host_syncs(report, per_step or {}),
        *_warnings(cap),
        *_silent_x64(cap, label),
        *_exception(cap),
        *_compile_dominated(report),
    ]
    if any(i.kind == "x64-truncated" and i.severity == "warn" for i in found):
        found = [i for i in found if not (i.kind == "x64-truncated" and i.severity == "info")]
    return sorted(found, key=lambda i: i.severity != "warn")
