"""Run one call under ``jax.experimental.checkify`` and report what plain JAX silently
ignores: out-of-bounds indices (clamped, filled or dropped, as the operation's mode says), NaNs
and infs produced, divisions by zero, and failed ``checkify.check`` assertions
(``%jaxcheck``, or ``check_call`` directly).

The call runs on copies of the user's NNX objects (``jaxmagic._calls``): nothing the user
holds changes. The plain program is traced first and checkify runs on its jaxpr, whose
equations also locate the findings (``jaxmagic.jaxpr_sources``).

No IPython here: the magic passes a ``where`` function that turns a file name into a cell
label (``In[5]``).
"""

from __future__ import annotations

import linecache
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from jaxmagic._result import Result

# Check names accepted by ``checks=`` / ``%jaxcheck --checks``, in report order.
CHECKS = ("index", "nan", "div", "user")

# What plain JAX does instead of raising, per finding kind.
_SILENT = {
    "index": "Plain JAX raises nothing here: out-of-bounds reads are clamped to the last valid "
    "index and out-of-bounds writes (.at[].set) are dropped.",
    "nan": "Plain JAX raises nothing here: the NaN flows on into every result computed from it.",
    "div": "Plain JAX raises nothing here: a float division by zero gives inf or NaN, an integer "
    "one an unspecified value.",
    "user": "A checkify.check assertion in the code failed.",
    "inf": "Plain JAX raises nothing here: the inf flows on into the result (and inf - inf or "
    "0 * inf turns it into NaN further on).",
}
_FIXES = {
    "index": "Check the index (or clip it on purpose with jnp.clip / mode='clip'); "
    "use mode='fill' or mode='drop' to make the out-of-bounds behaviour explicit.",
    "nan": "Guard the operation's domain (jnp.where before log/sqrt/division, a small epsilon), "
    "or debug with jax.config.update('jax_debug_nans', True).",
    "div": "Guard the divisor (jnp.where(d == 0, 1, d) or an epsilon) before dividing.",
    "user": "",
    "inf": "Guard the operation's domain (jnp.where before log/division, jnp.clip before exp, a "
    "small epsilon), or debug with jax.config.update('jax_debug_infs', True).",
}
_TITLES = {
    "index": "out-of-bounds index",
    "nan": "NaN produced",
    "div": "division by zero",
    "user": "failed check",
    "inf": "inf produced",
}


@dataclass(frozen=True)
class Finding:
    """One error checkify found: what, where (first frame outside JAX/Flax), and why it matters."""

    kind: str  # "index" | "nan" | "div" | "user" | "inf" (part of the nan check)
    message: str  # checkify's own message
    primitive: str | None  # the primitive that raised it (gather, log, div, ...)
    file: str | None
    line: int | None
    function: str | None
    source: str | None  # the source line, stripped
    where: str | None  # a friendly location: "In[5], line 3" or "model.py:12"
    behaviour: str | None = None  # what plain JAX did here, when known more exactly than by kind

    @property
    def title(self) -> str:
        return _TITLES[self.kind]

    @property
    def silent(self) -> str:
        return self.behaviour or _SILENT[self.kind]

    @property
    def fix(self) -> str:
        return _FIXES[self.kind]

    def location(self) -> str:
        """``In[5], line 3 in f`` (or ``file.py:12 in f``); empty when unknown."""
        if self.where is None:
            return ""
        return self.where + (f" in {self.function}" if self.function else "")

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "title": self.title,
            "message": self.message,
            "primitive": self.primitive,
            "file": self.file,
            "line": self.line,
            "function": self.function,
            "source": self.source,
            "where": self.where,
            "silent": self.silent,
            "fix": self.fix,
        }


@dataclass(frozen=True)
class CheckReport(Result):
    """What ``checkify`` found in one call; ``clean`` when the checks that ran found nothing.

    ``checks`` are the checks that ran; ``skipped`` those that could not (a note says why).
    """

    name: str
    signature: str
    checks: tuple[str, ...]
    findings: tuple[Finding, ...]
    output: str  # the value the call returned (plain JAX returns the same)
    seconds: float  # checkify trace + compile + run
    notes: tuple[str, ...] = field(default=())
    skipped: tuple[str, ...] = field(default=())

    @property
    def clean(self) -> bool:
        return not self.findings and bool(self.checks)

    def finding(self, kind: str) -> Finding | None:
        """The finding of ``kind`` (``"index"``, ``"nan"``, ``"div"``, ``"user"``, ``"inf"``) or
        None."""
        return next((f for f in self.findings if f.kind == kind), None)

    def summary(self) -> str:
        call = f"{self.name}({self.signature})"
        skipped = f"; {', '.join(self.skipped)} skipped" if self.skipped else ""
        if not self.checks:
            return f"{call}: no checks could run ({', '.join(self.skipped)} skipped)"
        if self.clean:
            return f"{call}: clean ({', '.join(self.checks)} checks{skipped})"
        return (
            f"{call}: " + ", ".join(f.title for f in self.findings) + (f" ({skipped[2:]})" if skipped else "")
        )

    def to_text(self, width: int = 100) -> str:
        from jaxmagic.render.check import check_text

        return check_text(self, width=width)

    def to_html(self) -> str:
        from jaxmagic.render.check import check_html

        return check_html(self)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "signature": self.signature,
            "checks": list(self.checks),
            "clean": self.clean,
            "findings": [f.to_dict() for f in self.findings],
            "output": self.output,
            "seconds": self.seconds,
            "notes": list(self.notes),
            "skipped": list(self.skipped),
        }


def parse_checks(spec: str | tuple[str, ...] | list[str] | None) -> tuple[str, ...]:
    """``"index,nan"`` / ``["index"]`` / ``"all"`` / None -> validated names in report order."""
    if spec is None:
        return CHECKS
    names = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec)]
    names = [n for n in names if n]
    if names == ["all"]:
        return CHECKS
    bad = [n for n in names if n not in CHECKS]
    if bad or not names:
        raise ValueError(
            f"unknown check {', '.join(map(repr, bad)) or '(none given)'}; "
            f"choose from {', '.join(CHECKS)} or all"
        )
    return tuple(c for c in CHECKS if c in names)


def _errors(checks: tuple[str, ...]) -> frozenset:
    from jax.experimental import checkify as ck

    sets = {"index": ck.index_checks, "nan": ck.nan_checks, "div": ck.div_checks, "user": ck.user_checks}
    out: frozenset = frozenset()
    for c in checks:
        out = out | sets[c]
    return out


def _kind(exc: Any) -> str:
    return {
        "OOBError": "index",
        "NaNError": "nan",
        "DivisionByZeroError": "div",
        "FailedCheckError": "user",
    }.get(type(exc).__name__, "user")


def _exceptions(error: Any) -> tuple[list[Any], str | None]:
    """Every error checkify recorded (one per kind), in the order they happened, and a note
    when only the first could be read (``Error.get_exception()`` returns only the first; the
    per-effect tables behind it are private, read in ``_internals``)."""
    from jaxmagic._internals import InternalsChanged, checkify_errors

    try:
        return [e for _, e in checkify_errors(error)], None
    except InternalsChanged as e:
        exc = error.get_exception()
        return ([] if exc is None else [exc]), f"only the first error is listed: {e}"


class _Program:
    """The plain (unchecked) program of the call, which checkify runs: its equations carry
    the tracebacks checkify's errors point at, so the user's line behind a jitted library
    function and the equation that made an inf can be found in it."""

    def __init__(self, closed: Any):
        self.closed = closed

    def chain_of(self, traceback: Any) -> tuple | None:
        from jaxmagic import jaxpr_sources

        return jaxpr_sources.chain_of(self.closed, traceback)


def _location(frame: tuple[str, int, str] | None, where: Callable[[str], str | None] | None) -> dict:
    import os

    if frame is None:
        return {"file": None, "line": None, "function": None, "source": None, "where": None}
    file, line, function = frame
    cell = where(file) if where is not None else None
    return {
        "file": file,
        "line": line,
        "function": function,
        "source": linecache.getline(file, line).strip() or None,
        "where": f"{cell}, line {line}" if cell else f"{os.path.basename(file)}:{line}",
    }


def _finding(exc: Any, where: Callable[[str], str | None] | None, program: _Program) -> Finding:
    from jaxmagic import jaxpr_sources
    from jaxmagic._internals import InternalsChanged, traceback_frames

    tb = getattr(exc, "traceback_info", None)
    frame, chain = None, None
    try:
        frame = jaxpr_sources.user_frame(traceback_frames(tb))
        if frame is None or _kind(exc) == "index":
            chain = program.chain_of(tb)
        if frame is None and chain is not None:
            frame = jaxpr_sources.chain_user_frame(chain)
    except InternalsChanged:
        pass
    behaviour = _oob_behaviour(chain[-1]) if chain and _kind(exc) == "index" else None
    return Finding(
        kind=_kind(exc),
        message=str(exc).strip(),
        primitive=getattr(exc, "prim", None),
        behaviour=behaviour,
        **_location(frame, where),
    )


def _oob_behaviour(eqn: Any) -> str | None:
    """What plain JAX did with the out-of-bounds index at ``eqn``, read from its mode."""
    import jax
    import numpy as np

    mode = jax.lax.GatherScatterMode
    name, m = eqn.primitive.name, eqn.params.get("mode")
    said = "Plain JAX raises nothing here: "
    if name == "gather" and m == mode.FILL_OR_DROP:
        fill = eqn.params.get("fill_value")
        dtype = eqn.outvars[0].aval.dtype
        if isinstance(fill, float) and math.isnan(fill):
            fill = "NaN"
        elif fill is None:
            fill = (
                "NaN"
                if jax.dtypes.issubdtype(dtype, np.inexact)
                else "the most negative integer"
                if jax.dtypes.issubdtype(dtype, np.signedinteger)
                else "the largest value of the dtype"
            )
        return (
            said + f"the out-of-bounds read returned the fill value ({fill}) instead of an "
            "element (gather mode 'fill', the default of jnp.take and nnx.Embed)."
        )
    if name == "gather" and m in (mode.CLIP, mode.PROMISE_IN_BOUNDS):
        return said + "the out-of-bounds read was clamped to the nearest valid index."
    if name.startswith("scatter") and m == mode.FILL_OR_DROP:
        return said + "the out-of-bounds write was dropped."
    if name.startswith("scatter") and m in (mode.CLIP, mode.PROMISE_IN_BOUNDS):
        return said + "the out-of-bounds write was clamped to the nearest valid index."
    if name in ("dynamic_slice", "dynamic_update_slice"):
        return said + (
            "the index was clamped into range (a dynamic slice's start index is "
            "clamped so that the slice fits in the array)."
        )
    return None


def _inf_finding(
    program: _Program, inputs: tuple, where: Callable[[str], str | None] | None
) -> tuple[Finding | None, str | None]:
    """An ``inf`` finding when the call's result holds inf that no input held (checkify's NaN
    check does not look at inf), located by running the program op by op."""
    from jaxmagic import jaxpr_sources

    try:  # the op-by-op run is best effort (InternalsChanged included)
        origin = jaxpr_sources.inf_origin(program.closed, list(inputs))
        frame = jaxpr_sources.chain_user_frame(origin) if origin not in (None, jaxpr_sources.INPUT) else None
    except Exception as e:
        return (
            Finding("inf", "the result contains inf", None, None, None, None, None, None),
            f"where the inf was made is unknown: {type(e).__name__}: {e}",
        )
    if origin is None:
        return None, None
    if origin == jaxpr_sources.INPUT:
        return None, "the result contains inf that an input already held"
    eqn = origin[-1]
    return (
        Finding(
            "inf",
            f"inf generated by primitive: {eqn.primitive.name}.",
            eqn.primitive.name,
            **_location(frame, where),
        ),
        None,
    )


def _describe_output(out: Any) -> str:
    """A short text of the returned value: small arrays in full, bigger ones by type."""
    import jax
    import numpy as np

    from jaxmagic._format import shape_str

    def one(x: Any) -> str:
        if hasattr(x, "shape") and hasattr(x, "dtype"):
            t = shape_str(x.shape, x.dtype)
            if int(np.prod(x.shape)) <= 8:
                with np.printoptions(precision=4, suppress=True):
                    return f"{t} {np.asarray(x)}".replace("\n", "")
            return t
        return repr(x)[:60]

    leaves, tree = jax.tree_util.tree_flatten(out)
    if tree.num_leaves == 1 and tree.num_nodes == 1:
        return one(out)
    shown = ", ".join(one(x) for x in leaves[:6]) + (", …" if len(leaves) > 6 else "")
    return f"{type(out).__name__} of {len(leaves)}: {shown}"


def check_call(
    fn: Callable,
    *args: Any,
    checks: Any = None,
    where: Callable[[str], str | None] | None = None,
    call_name: str | None = None,
    **kwargs: Any,
) -> CheckReport:
    """Run ``fn(*args, **kwargs)`` once under ``checkify`` (jitted) and report what it found.

    The call runs for real, on copies of the NNX modules, optimizers and ``nnx.Rngs`` among
    the callee and its arguments: the user's objects never change (no RNG count advances, no
    optimizer step is taken), whether the call succeeds or fails. Arrays and Python numbers
    are traced; Python bool, str, None and callables stay static. Its value is in the report
    (plain JAX returns the same value, minus the checks).

    The ``nan`` check also reports an inf that reaches the result from finite inputs
    (checkify itself looks only for NaN). When checkify cannot transform the call with some
    check (a JAX bug), the call runs with the checks that work and the report names the
    skipped ones and why.

    Args:
        fn: a function, bound method, ``jax.jit`` / ``nnx.jit`` function or NNX module.
        *args, **kwargs: the call's arguments.
        checks: which checks: ``"index"``, ``"nan"``, ``"div"``, ``"user"`` (``checkify.check``
            assertions), a comma-separated string or list of them; default all.
        where: optional ``filename -> label`` (e.g. ``"In[5]"``) for notebook cells.
        call_name: how the title names the callee (e.g. ``"model.generate_step"``).

    Returns:
        A ``CheckReport``; ``report.clean`` is True when nothing was found.

    Raises:
        ValueError: unknown check names.
        TypeError: ``fn`` is not callable.
        NotTraceableError: JAX could not trace the call.

    Example::

        check_call(lambda x, i: x[i], jnp.arange(3.0), 10).finding("index").message
    """
    import jax

    from jaxmagic._calls import describe_args, name_of
    from jaxmagic.ir import trace_safely

    enabled = parse_checks(checks)
    if not callable(fn):
        raise TypeError(f"{type(fn).__name__} object is not callable")
    name = call_name or name_of(fn)
    t0 = time.perf_counter()
    # Trace the plain program first (NNX transforms inside checkify's own trace fail with
    # "different trace level"), then checkify the program's jaxpr.
    traced, call, trace_notes = trace_safely(fn, args, kwargs, name, own_trace=False)
    _, inputs = call.pure()
    program = _Program(traced.jaxpr)
    flat = jax.tree_util.tree_leaves(inputs)
    error, outs, ran, notes = _run_checked(program.closed, flat, enabled)
    out = jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(traced.out_info), outs)
    seconds = time.perf_counter() - t0
    notes = list(trace_notes) + notes
    exceptions, read_note = _exceptions(error)
    findings = [_finding(e, where, program) for e in exceptions]
    notes += [read_note] if read_note else []
    if "nan" in ran:
        inf, inf_note = _inf_finding(program, flat, where) if _output_has_inf(out) else (None, None)
        findings += [inf] if inf is not None else []
        notes += [inf_note] if inf_note else []
        if _has_nan_input(flat):
            notes.append("an input already contains NaN, so the first NaN reported may come from it")
    return CheckReport(
        name=name,
        signature=describe_args(fn, args, kwargs, values=False),
        checks=ran,
        findings=tuple(findings),
        output=_describe_output(out),
        seconds=seconds,
        notes=tuple(notes),
        skipped=tuple(c for c in enabled if c not in ran),
    )


def _run_checked(
    closed: Any, flat: list, enabled: tuple[str, ...]
) -> tuple[Any, list, tuple[str, ...], list[str]]:
    """Run the program ``closed`` on ``flat`` under checkify with ``enabled`` checks:
    ``(error, outputs, checks run, notes)``.

    If checkify fails to transform the program with all checks (a JAX bug, e.g. index
    checks on the gradient of ``optax.softmax_cross_entropy_with_integer_labels``), each
    check is tried alone and the call runs with those that work.
    """
    import jax
    from jax.experimental import checkify as ck
    from jax.extend.core import jaxpr_as_fun

    def run(checks: tuple[str, ...]) -> tuple[Any, list]:
        error, outs = jax.jit(ck.checkify(jaxpr_as_fun(closed), errors=_errors(checks)))(*flat)
        return error, jax.block_until_ready(outs)

    try:
        return (*run(enabled), enabled, [])
    except Exception as e:
        first = e
    working, notes = [], []
    for c in enabled:
        try:
            jax.jit(ck.checkify(jaxpr_as_fun(closed), errors=_errors((c,)))).trace(*flat)
            working.append(c)
        except Exception as e:
            notes.append(
                f"{c} checks skipped: checkify could not transform this call with them "
                f"({type(e).__name__}: {str(e).strip()[:120]}), a limitation of "
                "jax.experimental.checkify, not an error in your code"
            )
    if not working:
        raise first
    ran = tuple(working)
    return (*run(ran), ran, notes)


def _output_has_inf(out: Any) -> bool:
    from jaxmagic.jaxpr_sources import has_inf

    return has_inf(out)


def _has_nan_input(values: list) -> bool:
    import jax
    import numpy as np

    for v in values:
        dtype = getattr(v, "dtype", None)
        dtype = np.asarray(v).dtype if dtype is None else dtype
        if jax.dtypes.issubdtype(dtype, np.inexact) and np.isnan(np.asarray(v)).any():
            return True
    return False
