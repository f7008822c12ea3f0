"""Plain-language findings about classic JAX pitfalls, each with a stable ``kind``.

Every rule fires only on clear evidence (thresholds below), so an ordinary cell gets no
warning. Rules read the report and, for warnings and exceptions, the raw capture.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Iterator

from jaxmagic._format import fmt_seconds, plural

if TYPE_CHECKING:
    from jaxmagic.profile.capture import Capture
    from jaxmagic.profile.report import Insight, ProfileReport

EAGER_OPS_MIN = 100        # ops dispatched outside jit before we call it op-by-op
HOST_SYNC_MIN = 20         # transfers/syncs from one line before we call it a loop
COMPILE_SHARE = 0.5        # share of the wall time spent compiling
COMPILE_MIN_S = 0.1        # ...and at least this long
CONST_MIN_BYTES = 1 << 20  # closed-over arrays baked into a program

_RECOMPILE_FIX = {
    "shape": "give the function a few fixed shapes (pad or bucket inputs), or move the varying "
             "part out of the jitted function",
    "dtype": "cast inputs to one dtype before the call",
    "weak_type": "pass the same kind of value every time: jnp.asarray(x, jnp.float32) rather than "
                 "a Python scalar one time and an array the next",
    "static": "each value of a static argument compiles a new program: pass it as a traced array "
              "if it takes many values",
    "structure": "keep the input pytree structure (keys, list lengths, None entries) identical "
                 "between calls",
    "other": "keep argument types, shapes and static values identical between calls",
}


def _line_of(site: str | None) -> int | None:
    if site and site.startswith("line "):
        return int(site.split()[1])
    return None


def _recompiles(report: "ProfileReport") -> Iterator["Insight"]:
    from jaxmagic.profile.report import Insight

    for f in report.functions:
        if f.kind != "jit" or len(f.compiles) < 2:
            continue
        firsts = sum(1 for c in f.compiles if c.kinds == ("first",))
        where = f" at {f.sites[0]}" if f.sites else ""
        if firsts >= 2:
            yield Insight(
                "jit-recreated",
                f"{f.name} was wrapped in jax.jit anew {firsts} times{where}: every new wrapper "
                f"starts with an empty cache and compiles from scratch "
                f"({fmt_seconds(f.total_compile_s)} compiling).",
                "create the jitted function once (outside the loop or function) and reuse it",
                function=f.name, line=_line_of(f.sites[0] if f.sites else None))
            continue
        reasons = [r for c in f.compiles for r in c.reasons if r != "first compile"]
        kinds = Counter(k for c in f.compiles for k in c.kinds if k != "first")
        shown = "; ".join(reasons[:3]) + (f"; … {len(reasons) - 3} more" if len(reasons) > 3 else "")
        what = f": {shown}" if shown else ""
        main = kinds.most_common(1)[0][0] if kinds else "other"
        yield Insight(
            "recompile",
            f"{f.name} compiled {len(f.compiles)} times{where}, "
            f"{fmt_seconds(f.total_compile_s)} in total{what}.",
            _RECOMPILE_FIX[main], function=f.name, line=_line_of(f.sites[0] if f.sites else None))


def _captured_constants(report: "ProfileReport") -> Iterator["Insight"]:
    from jaxmagic._format import fmt_bytes
    from jaxmagic.profile.report import Insight

    for f in report.functions:
        if f.kind == "jit" and f.const_bytes >= CONST_MIN_BYTES:
            yield Insight(
                "captured-constant",
                f"{f.name} closes over {fmt_bytes(f.const_bytes)} of arrays (globals or closure "
                f"variables). They become constants of the compiled program: compiled again if "
                f"they change, and held in memory with it.",
                "pass the arrays as arguments to the jitted function instead of closing over them",
                function=f.name, line=_line_of(f.sites[0] if f.sites else None))


def _eager(report: "ProfileReport") -> Iterator["Insight"]:
    from jaxmagic.profile.report import Insight

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
        line=_line_of(sites[0][0]) if sites else None)


def _compile_dominated(report: "ProfileReport") -> Iterator["Insight"]:
    from jaxmagic.profile.report import Insight

    if report.wall_s <= 0 or report.compile_s < COMPILE_MIN_S:
        return
    share = report.compile_s / report.wall_s
    if share < COMPILE_SHARE:
        return
    yield Insight(
        "compile-dominated",
        f"{share:.0%} of the {fmt_seconds(report.wall_s)} went to tracing and compiling "
        f"({fmt_seconds(report.compile_s)}); running took {fmt_seconds(report.run_s)}.",
        "compilation is paid once per input signature: time a second call to see steady-state "
        "speed, and set jax.config.update('jax_compilation_cache_dir', ...) to reuse compiled "
        "programs across sessions",
        severity="info")


def _host_syncs(report: "ProfileReport") -> Iterator["Insight"]:
    from jaxmagic.profile.report import Insight

    for site, n in report.transfers.items():
        if n >= HOST_SYNC_MIN:
            yield Insight(
                "host-sync",
                f"{site} copied a device value to the host {n} times (float(), .item(), "
                f"np.asarray or print). Each copy waits for all queued device work, so "
                f"asynchronous dispatch cannot run ahead.",
                "keep values on the device inside the loop (accumulate with jnp) and read them "
                "once at the end, or only every N steps",
                line=_line_of(site))
    for site, n in report.syncs.items():
        if n >= HOST_SYNC_MIN:
            yield Insight(
                "host-sync",
                f"{site} called block_until_ready {n} times: the host waits for the device "
                f"each time instead of queueing the next step.",
                "block once after the loop (for timing) or not at all",
                line=_line_of(site))


def _warnings(cap: "Capture") -> Iterator["Insight"]:
    from jaxmagic.profile.report import Insight

    seen: set[str] = set()
    for category, message, _site in cap.warnings:
        if "donated buffers were not usable" in message and "donation" not in seen:
            seen.add("donation")
            yield Insight(
                "donation-unusable",
                "Some donated buffers could not be reused for outputs (no output has the same "
                "shape and dtype), so donation saved no memory: " + message.splitlines()[0][:200],
                "donate only arguments whose shape/dtype match an output, or drop donate_argnums")
        elif "requested in" in message and "is not available" in message and "x64" not in seen:
            seen.add("x64")
            yield Insight(
                "x64-truncated",
                "A 64-bit dtype was requested but JAX runs in 32-bit mode, so the value was "
                "silently truncated: " + message.splitlines()[0][:200],
                "set jax.config.update('jax_enable_x64', True) at startup if you need 64-bit, "
                "or request float32/int32 explicitly")


_TRACER_ERRORS = {"ConcretizationTypeError", "TracerBoolConversionError",
                  "TracerIntegerConversionError", "TracerArrayConversionError"}


def _exception(cap: "Capture") -> Iterator["Insight"]:
    from jaxmagic.profile.report import Insight

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
            "or mark the argument static (static_argnums) if it takes only a few values")
    elif "has been deleted" in str(exc):
        yield Insight(
            "deleted-array",
            "An array was used after it was deleted, typically after being donated to a jitted "
            "function (donate_argnums): donation hands its buffer to the output.",
            "use the function's outputs instead of the donated inputs, or stop donating that "
            "argument")


def find_insights(report: "ProfileReport", cap: "Capture") -> list["Insight"]:
    """All insights for ``report``, warnings first."""
    found = [*_recompiles(report), *_captured_constants(report), *_eager(report), *_host_syncs(report), *_warnings(cap),
             *_exception(cap), *_compile_dominated(report)]
    return sorted(found, key=lambda i: i.severity != "warn")
