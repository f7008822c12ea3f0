"""The IR of one call at each stage: jaxpr, StableHLO, optimized HLO, plus XLA cost and
memory analysis (``%jaxpr`` / ``%jaxhlo``, or ``inspect_call`` directly).

Nothing runs and nothing the user holds is touched: NNX objects are traced as copies
(``jaxmagic._calls``), whatever the call does to them while it is traced."""

from __future__ import annotations

import re
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from jaxmagic._result import Result


class NotTraceableError(ValueError):
    """The function could not be traced by JAX with the given arguments."""


@dataclass(frozen=True)
class IRReport(Result):
    """The program JAX builds for one call.

    ``stage`` says what the report leads with: ``"jaxpr"``, ``"stablehlo"`` or ``"hlo"``.
    """

    name: str
    signature: str
    out_signature: str
    stage: str
    jaxpr: str
    stablehlo: str | None
    hlo: str | None
    cost: dict[str, float | None]
    memory: dict[str, int] | None
    notes: tuple[str, ...] = ()

    def summary(self) -> str:
        n = len(self.main_text().splitlines())
        return f"{self.stage} of {self.name}({self.signature}), {n} lines"

    def main_text(self) -> str:
        return {"jaxpr": self.jaxpr, "stablehlo": self.stablehlo, "hlo": self.hlo}[self.stage] or ""

    def to_text(self, width: int = 100) -> str:
        from jaxmagic.render.ir import ir_text

        return ir_text(self, width=width)

    def to_html(self) -> str:
        from jaxmagic.render.ir import ir_html

        return ir_html(self)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "signature": self.signature,
            "out_signature": self.out_signature,
            "stage": self.stage,
            "jaxpr": self.jaxpr,
            "stablehlo": self.stablehlo,
            "hlo": self.hlo,
            "cost": dict(self.cost),
            "memory": self.memory,
            "notes": list(self.notes),
        }


def jaxpr_text(jaxpr: Any) -> str:
    """A (closed) jaxpr as plain text: no ANSI colours, whatever ``jax_pprint_use_color`` says."""
    try:
        return jaxpr.pretty_print(use_color=False)
    except TypeError:  # older/newer signature: fall back to the default rendering
        return str(jaxpr)


def _describe_out(out_info: Any, limit: int = 160) -> str:
    """The call's value as the user sees it: ``f32[2,10]``, or for a tuple each element
    (``TrainState(14 leaves), f32[]``)."""
    import jax

    from jaxmagic._format import shape_str

    def one(v: Any) -> str:
        if hasattr(v, "shape") and hasattr(v, "dtype"):
            return shape_str(v.shape, v.dtype)
        leaves = jax.tree_util.tree_leaves(v)
        return f"{type(v).__name__}({len(leaves)} leaves)" if leaves else repr(v)

    out = ", ".join(one(v) for v in (out_info if isinstance(out_info, tuple) else (out_info,)))
    return out if len(out) <= limit else out[: limit - 1].rsplit(", ", 1)[0] + ", …"


def _user_frame(exc: BaseException) -> str:
    """The innermost frame of ``exc`` outside JAX/Flax, as `` (at file:line → source)``."""
    from jaxmagic._frames import is_library_file

    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not is_library_file(f.filename)]
    if not frames:
        return ""
    f = frames[-1]
    src = f" → {f.line.strip()}" if f.line else ""
    return f" (at {f.filename}:{f.lineno}{src})"


def not_traceable(name: str, e: BaseException) -> NotTraceableError:
    """The error for a call JAX could not trace: the cause's first line and the user's line."""
    text = str(e).strip()
    hint = ""
    if type(e).__name__ == "TraceContextError":
        hint = (
            ". The function changes an NNX object it reaches through a global or a closure "
            "(an RNG stream, BatchNorm statistics); pass that object as an argument, e.g. "
            "f(model, x), and it is traced as a copy"
        )
    return NotTraceableError(
        f"JAX could not trace {name}: {type(e).__name__}: "
        f"{text.splitlines()[0] if text else ''}{_user_frame(e)}{hint}"
    )


def trace_safely(
    fn: Callable, args: tuple, kwargs: dict, name: str, *, own_trace: bool = True
) -> tuple[Any, Any, tuple[str, ...]]:
    """Trace ``fn(*args, **kwargs)`` without touching the user's objects (see ``_calls``).

    Returns ``(traced, safe_call, notes)``. ``jax.jit`` / ``nnx.jit`` functions are traced
    through their own ``.trace`` on graph copies (unless ``own_trace`` is False); anything
    else through ``jax.jit`` of the pure function that merges copies inside the trace
    (``safe_call.pure()``). If that fails and the call has Python numbers among its
    arguments (a function that uses one as a Python value, ``range(n)``, or a jitted one
    that declares it static), it is traced again with numbers static.

    Raises:
        NotTraceableError: JAX could not trace the call.
    """
    import jax

    from jaxmagic._calls import SafeCall, has_own_trace, python_numbers

    try:
        call = SafeCall(fn, args, kwargs)
    except Exception as e:
        raise not_traceable(name, e) from e
    if own_trace and has_own_trace(call.callee):
        try:
            callee, a, k = call.on_copies()
            return callee.trace(*a, **k), call, ()
        except Exception as e:
            raise not_traceable(name, e) from e
    try:
        f, inputs = call.pure()
        return jax.jit(f).trace(*inputs), call, ()
    except Exception as e:
        if not call.has_python_numbers:
            raise not_traceable(name, e) from e
        first = e
    try:
        call = SafeCall(fn, args, kwargs, static_numbers=True)
        f, inputs = call.pure()
        traced = jax.jit(f).trace(*inputs)
    except Exception:
        raise not_traceable(name, first) from first
    numbers = python_numbers(fn, args, kwargs)
    note = (
        f"Python numbers were kept static{f' ({numbers})' if numbers else ''}: traced as "
        f"arrays, the call fails with {type(first).__name__}."
    )
    return traced, call, (note,)


def _static_params(traced: Any, call: Any, fn: Callable, args: tuple, kwargs: dict) -> frozenset[str]:
    """Parameters a ``jax.jit`` function declared static (``static_argnums``/``argnames``):
    those of the call its traced program has no input for."""
    from jaxmagic._calls import bound_arguments, has_own_trace

    if not has_own_trace(call.callee) or hasattr(traced, "traced"):  # not jax.jit's own trace
        return frozenset()
    names = getattr(getattr(traced.jaxpr.jaxpr, "debug_info", None), "arg_names", None)
    if not names:
        return frozenset()
    dynamic = {re.split(r"[\[.]", n, maxsplit=1)[0] for n in names if n}
    return frozenset(n for n, _ in bound_arguments(fn, args, kwargs) if n and n not in dynamic)


def inspect_call(
    fn: Callable,
    *args: Any,
    stage: str = "jaxpr",
    optimized: bool = False,
    call_name: str | None = None,
    **kwargs: Any,
) -> IRReport:
    """Trace, lower and compile ``fn(*args, **kwargs)`` without running it.

    Works for plain functions, ``jax.jit`` / ``nnx.jit`` functions and methods, bound methods
    and NNX modules. The user's objects are never touched: NNX modules, optimizers and
    ``nnx.Rngs`` are traced as copies, so success or failure leaves them as they were.
    Arrays and Python numbers are traced; Python bool, str, None and callables stay static
    (``model(x, training=True)`` takes its Python branch); a ``jax.jit`` / ``nnx.jit``
    function's own ``static_argnums`` decide for it.

    Args:
        fn: what to call.
        *args, **kwargs: the call's arguments (arrays, pytrees, NNX modules).
        stage: which IR the report leads with: ``"jaxpr"`` or ``"stablehlo"``/``"hlo"``.
        optimized: also compile and include the optimized HLO (``stage="hlo"`` implies it).
        call_name: how the title names the callee, e.g. the expression the user wrote
            (``"model.generate_step"``); default the function's or module class's name.

    Returns:
        An ``IRReport``.

    Example::

        inspect_call(jax.jit(lambda x: x * 2), jnp.ones(3)).jaxpr
    """
    from jaxmagic._calls import describe_args, name_of

    if stage not in ("jaxpr", "stablehlo", "hlo"):
        raise ValueError(f"stage must be 'jaxpr', 'stablehlo' or 'hlo', not {stage!r}")
    if not callable(fn):
        raise TypeError(f"{type(fn).__name__} object is not callable")
    name = call_name or name_of(fn)
    traced, call, notes = trace_safely(fn, args, kwargs, name)
    static = _static_params(traced, call, fn, args, kwargs)
    inner = getattr(traced, "traced", traced)  # nnx.jit wraps jax's Traced
    out_info = inner.out_info
    if inner is not traced:  # nnx.jit returns (args' state, kwargs' state, value)
        out_info = out_info[2]
    closed = inner.jaxpr
    lowered = traced.lower()
    stablehlo = lowered.as_text()
    hlo, cost, memory = None, {"flops": None, "transcendentals": None, "bytes_accessed": None}, None
    if optimized or stage == "hlo" or stage == "stablehlo":
        compiled = lowered.compile()
        if optimized or stage == "hlo":
            hlo = compiled.as_text()
        cost, memory = cost_of(compiled), memory_of(compiled)
    return IRReport(
        name=name,
        signature=describe_args(fn, args, kwargs, static=static),
        out_signature=_describe_out(out_info),
        stage=stage,
        jaxpr=jaxpr_text(closed),
        stablehlo=stablehlo,
        hlo=hlo,
        cost=cost,
        memory=memory,
        notes=notes,
    )


def cost_of(compiled: Any) -> dict[str, float | None]:
    """XLA cost analysis of a compiled program; numbers a backend does not report are ``None``."""
    out: dict[str, float | None] = {"flops": None, "transcendentals": None, "bytes_accessed": None}
    try:
        cost = compiled.cost_analysis()
        if isinstance(cost, (list, tuple)):
            cost = cost[0] if cost else None
        for key, src in (
            ("flops", "flops"),
            ("transcendentals", "transcendentals"),
            ("bytes_accessed", "bytes accessed"),
        ):
            v = (cost or {}).get(src)
            out[key] = None if v is None or v < 0 else float(v)
    except Exception:  # backends may not implement it: shown as n/a
        pass
    return out


def peak_bytes(memory: dict[str, int] | None) -> int | None:
    """Peak bytes per device of a compiled program, from its memory analysis (``memory_of``):
    arguments + outputs + temporaries − aliased + generated code. ``%jaxplan`` and
    ``%%jaxprofile`` both use this one formula. ``None`` when there is no analysis.

    Example::

        peak_bytes(memory_of(jax.jit(f).lower(x).compile()))
    """
    if memory is None:
        return None
    return (
        memory["argument_bytes"]
        + memory["output_bytes"]
        + memory["temp_bytes"]
        - memory["alias_bytes"]
        + memory["generated_code_bytes"]
    )


def memory_of(compiled: Any) -> dict[str, int] | None:
    """XLA memory analysis (argument/output/alias/temp/code bytes), or ``None`` if unavailable."""
    try:
        m = compiled.memory_analysis()
        return (
            None
            if m is None
            else {
                "argument_bytes": int(m.argument_size_in_bytes),
                "output_bytes": int(m.output_size_in_bytes),
                "alias_bytes": int(m.alias_size_in_bytes),
                "temp_bytes": int(m.temp_size_in_bytes),
                "generated_code_bytes": int(m.generated_code_size_in_bytes),
            }
        )
    except Exception:
        return None
