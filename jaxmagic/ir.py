"""The IR of one call at each stage: jaxpr, StableHLO, optimized HLO, plus XLA cost and
memory analysis (``%jaxpr`` / ``%jaxhlo``, or ``inspect_call`` directly)."""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from typing import Any, Callable

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
        return {"name": self.name, "signature": self.signature, "out_signature": self.out_signature,
                "stage": self.stage, "jaxpr": self.jaxpr, "stablehlo": self.stablehlo,
                "hlo": self.hlo, "cost": dict(self.cost), "memory": self.memory}


def jaxpr_text(jaxpr: Any) -> str:
    """A (closed) jaxpr as plain text: no ANSI colours, whatever ``jax_pprint_use_color`` says."""
    try:
        return jaxpr.pretty_print(use_color=False)
    except TypeError:  # older/newer signature: fall back to the default rendering
        return str(jaxpr)


def _types(avals: Any, names: Any = None) -> str:
    from jaxmagic._format import shape_str

    parts = []
    for i, a in enumerate(avals):
        t = shape_str(a.shape, a.dtype) if hasattr(a, "shape") and hasattr(a, "dtype") else str(a)
        label = names[i] if names and i < len(names) and names[i] else None
        parts.append(f"{label}: {t}" if label else t)
    return ", ".join(parts)


def _name_of(fn: Any) -> str:
    inner = getattr(fn, "fun", None) or getattr(fn, "__wrapped__", None) or fn
    return getattr(inner, "__name__", None) or type(inner).__name__


def _user_frame(exc: BaseException) -> str:
    """The innermost frame of ``exc`` outside JAX/Flax, as ``file:line: source``."""
    from jaxmagic._frames import is_library_file

    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not is_library_file(f.filename)]
    if not frames:
        return ""
    f = frames[-1]
    src = f" → {f.line.strip()}" if f.line else ""
    return f" (at {f.filename}:{f.lineno}{src})"


def inspect_call(fn: Callable, *args: Any, stage: str = "jaxpr", optimized: bool = False,
                 **kwargs: Any) -> IRReport:
    """Trace, lower and compile ``fn(*args, **kwargs)`` without running it.

    Works for plain functions, ``jax.jit`` / ``nnx.jit`` functions and NNX modules.

    Args:
        fn: what to call.
        *args, **kwargs: the call's arguments (arrays, pytrees, NNX modules).
        stage: which IR the report leads with: ``"jaxpr"`` or ``"stablehlo"``/``"hlo"``.
        optimized: also compile and include the optimized HLO (``stage="hlo"`` implies it).

    Returns:
        An ``IRReport``.

    Example::

        inspect_call(jax.jit(lambda x: x * 2), jnp.ones(3)).jaxpr
    """
    import jax

    if stage not in ("jaxpr", "stablehlo", "hlo"):
        raise ValueError(f"stage must be 'jaxpr', 'stablehlo' or 'hlo', not {stage!r}")
    if not callable(fn):
        raise TypeError(f"{type(fn).__name__} object is not callable")
    name = _name_of(fn)
    try:
        if hasattr(fn, "trace"):
            traced = fn.trace(*args, **kwargs)
        elif _is_nnx_module(fn):
            traced = jax.jit(lambda m, *a, **k: m(*a, **k)).trace(fn, *args, **kwargs)
        else:
            traced = jax.jit(fn).trace(*args, **kwargs)
    except Exception as e:
        raise NotTraceableError(f"JAX could not trace {name}: {type(e).__name__}: "
                                f"{str(e).strip().splitlines()[0] if str(e).strip() else ''}"
                                f"{_user_frame(e)}") from e
    inner = getattr(traced, "traced", traced)  # nnx.jit wraps jax's Traced
    closed = inner.jaxpr
    info = closed.jaxpr.debug_info
    signature = _types(closed.in_avals, getattr(info, "arg_names", None))
    out_signature = _types(closed.out_avals)
    lowered = traced.lower()
    stablehlo = lowered.as_text()
    hlo, cost, memory = None, {"flops": None, "transcendentals": None, "bytes_accessed": None}, None
    if optimized or stage == "hlo" or stage == "stablehlo":
        compiled = lowered.compile()
        if optimized or stage == "hlo":
            hlo = compiled.as_text()
        cost, memory = cost_of(compiled), memory_of(compiled)
    return IRReport(name=name, signature=signature, out_signature=out_signature, stage=stage,
                    jaxpr=jaxpr_text(closed), stablehlo=stablehlo, hlo=hlo, cost=cost, memory=memory)


def _is_nnx_module(obj: Any) -> bool:
    try:
        from flax import nnx
    except ImportError:  # pragma: no cover - flax is a dependency
        return False
    return isinstance(obj, nnx.Module)


def cost_of(compiled: Any) -> dict[str, float | None]:
    """XLA cost analysis of a compiled program; numbers a backend does not report are ``None``."""
    out: dict[str, float | None] = {"flops": None, "transcendentals": None, "bytes_accessed": None}
    try:
        cost = compiled.cost_analysis()
        if isinstance(cost, (list, tuple)):
            cost = cost[0] if cost else None
        for key, src in (("flops", "flops"), ("transcendentals", "transcendentals"),
                         ("bytes_accessed", "bytes accessed")):
            v = (cost or {}).get(src)
            out[key] = None if v is None or v < 0 else float(v)
    except Exception:  # backends may not implement it: shown as n/a
        pass
    return out


def memory_of(compiled: Any) -> dict[str, int] | None:
    """XLA memory analysis (argument/output/alias/temp/code bytes), or ``None`` if unavailable."""
    try:
        m = compiled.memory_analysis()
        return None if m is None else {
            "argument_bytes": int(m.argument_size_in_bytes), "output_bytes": int(m.output_size_in_bytes),
            "alias_bytes": int(m.alias_size_in_bytes), "temp_bytes": int(m.temp_size_in_bytes),
            "generated_code_bytes": int(m.generated_code_size_in_bytes)}
    except Exception:
        return None
