"""Run one call under ``jax.experimental.checkify`` and report what plain JAX silently
ignores: out-of-bounds indices (clamped or dropped), NaNs produced, divisions by zero, and
failed ``checkify.check`` assertions (``%jaxcheck``, or ``check_call`` directly).

No IPython here: the magic passes a ``where`` function that turns a file name into a cell
label (``In[5]``).
"""

from __future__ import annotations

import linecache
import time
from dataclasses import dataclass, field
from typing import Any, Callable

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
}
_FIXES = {
    "index": "Check the index (or clip it on purpose with jnp.clip / mode='clip'); "
             "use mode='fill' or mode='drop' to make the out-of-bounds behaviour explicit.",
    "nan": "Guard the operation's domain (jnp.where before log/sqrt/division, a small epsilon), "
           "or debug with jax.config.update('jax_debug_nans', True).",
    "div": "Guard the divisor (jnp.where(d == 0, 1, d) or an epsilon) before dividing.",
    "user": "",
}
_TITLES = {"index": "out-of-bounds index", "nan": "NaN produced", "div": "division by zero",
           "user": "failed check"}


@dataclass(frozen=True)
class Finding:
    """One error checkify found: what, where (first frame outside JAX/Flax), and why it matters."""

    kind: str                 # "index" | "nan" | "div" | "user"
    message: str              # checkify's own message
    primitive: str | None     # the primitive that raised it (gather, log, div, ...)
    file: str | None
    line: int | None
    function: str | None
    source: str | None        # the source line, stripped
    where: str | None         # a friendly location: "In[5], line 3" or "model.py:12"

    @property
    def title(self) -> str:
        return _TITLES[self.kind]

    @property
    def silent(self) -> str:
        return _SILENT[self.kind]

    @property
    def fix(self) -> str:
        return _FIXES[self.kind]

    def location(self) -> str:
        """``In[5], line 3 in f`` (or ``file.py:12 in f``); empty when unknown."""
        if self.where is None:
            return ""
        return self.where + (f" in {self.function}" if self.function else "")

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "title": self.title, "message": self.message,
                "primitive": self.primitive, "file": self.file, "line": self.line,
                "function": self.function, "source": self.source, "where": self.where,
                "silent": self.silent, "fix": self.fix}


@dataclass(frozen=True)
class CheckReport(Result):
    """What ``checkify`` found in one call; ``clean`` when nothing."""

    name: str
    signature: str
    checks: tuple[str, ...]
    findings: tuple[Finding, ...]
    output: str               # the value the call returned (plain JAX returns the same)
    seconds: float            # checkify trace + compile + run
    notes: tuple[str, ...] = field(default=())

    @property
    def clean(self) -> bool:
        return not self.findings

    def finding(self, kind: str) -> Finding | None:
        """The finding of ``kind`` (``"index"``, ``"nan"``, ``"div"``, ``"user"``) or None."""
        return next((f for f in self.findings if f.kind == kind), None)

    def summary(self) -> str:
        call = f"{self.name}({self.signature})"
        if self.clean:
            return f"{call}: clean ({', '.join(self.checks)} checks)"
        return f"{call}: " + ", ".join(f.title for f in self.findings)

    def to_text(self, width: int = 100) -> str:
        from jaxmagic.render.check import check_text

        return check_text(self, width=width)

    def to_html(self) -> str:
        from jaxmagic.render.check import check_html

        return check_html(self)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "signature": self.signature, "checks": list(self.checks),
                "clean": self.clean, "findings": [f.to_dict() for f in self.findings],
                "output": self.output, "seconds": self.seconds, "notes": list(self.notes)}


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
        raise ValueError(f"unknown check {', '.join(map(repr, bad)) or '(none given)'}; "
                         f"choose from {', '.join(CHECKS)} or all")
    return tuple(c for c in CHECKS if c in names)


def _errors(checks: tuple[str, ...]) -> frozenset:
    from jax.experimental import checkify as ck

    sets = {"index": ck.index_checks, "nan": ck.nan_checks, "div": ck.div_checks,
            "user": ck.user_checks}
    out: frozenset = frozenset()
    for c in checks:
        out = out | sets[c]
    return out


def _kind(exc: Any) -> str:
    return {"OOBError": "index", "NaNError": "nan", "DivisionByZeroError": "div",
            "FailedCheckError": "user"}.get(type(exc).__name__, "user")


def _exceptions(error: Any) -> list[Any]:
    """Every error checkify recorded (one per kind), in the order they happened.

    ``Error.get_exception()`` returns only the first; the per-effect tables hold all of
    them. If their private layout changes, fall back to the first.
    """
    import jax
    import numpy as np

    try:
        found = []
        for effect, pred in error._pred.items():
            if bool(np.any(np.asarray(pred))):
                code = int(np.asarray(error._code[effect]).ravel()[0])
                exc = jax.tree_util.tree_unflatten(error._metadata[code], error._payload[effect])
                found.append((code, exc))
        return [e for _, e in sorted(found, key=lambda t: t[0])]
    except Exception:  # pragma: no cover - depends on checkify internals
        exc = error.get_exception()
        return [] if exc is None else [exc]


def _user_frame(traceback_info: Any) -> tuple[str, int, str] | None:
    from jaxmagic._frames import is_library_file

    for fr in getattr(traceback_info, "frames", ()) or ():  # innermost first
        if not is_library_file(fr.file_name):
            return fr.file_name, int(fr.line_num), fr.function_name.rsplit(".", 1)[-1]
    return None


def _finding(exc: Any, where: Callable[[str], str | None] | None) -> Finding:
    import os

    frame = _user_frame(getattr(exc, "traceback_info", None))
    file = line = function = source = label = None
    if frame is not None:
        file, line, function = frame
        source = linecache.getline(file, line).strip() or None
        cell = where(file) if where is not None else None
        label = f"{cell}, line {line}" if cell else f"{os.path.basename(file)}:{line}"
    message = str(exc).strip()
    return Finding(kind=_kind(exc), message=message, primitive=getattr(exc, "prim", None),
                   file=file, line=line, function=function, source=source, where=label)


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


def _is_array_leaf(x: Any) -> bool:
    import jax
    import numpy as np

    return isinstance(x, (jax.Array, np.ndarray, np.generic, bool, int, float, complex))


def check_call(fn: Callable, *args: Any, checks: Any = None,
               where: Callable[[str], str | None] | None = None, **kwargs: Any) -> CheckReport:
    """Run ``fn(*args, **kwargs)`` once under ``checkify`` (jitted) and report what it found.

    Array leaves of the arguments are traced; other leaves (strings, callables, ...) are
    passed through unchanged, as static values. The call runs for real: its value is in
    the report (plain JAX returns the same value, minus the checks).

    Args:
        fn: a function, ``jax.jit`` / ``nnx.jit`` function or NNX module.
        *args, **kwargs: the call's arguments.
        checks: which checks: ``"index"``, ``"nan"``, ``"div"``, ``"user"`` (``checkify.check``
            assertions), a comma-separated string or list of them; default all.
        where: optional ``filename -> label`` (e.g. ``"In[5]"``) for notebook cells.

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
    from jax.experimental import checkify as ck

    from jaxmagic.ir import NotTraceableError, _name_of, _user_frame as _exc_frame

    enabled = parse_checks(checks)
    if not callable(fn):
        raise TypeError(f"{type(fn).__name__} object is not callable")
    name = _name_of(fn)
    leaves, tree = jax.tree_util.tree_flatten((args, kwargs))
    dynamic = [i for i, x in enumerate(leaves) if _is_array_leaf(x)]

    def call(*dyn: Any) -> Any:
        full = list(leaves)
        for i, v in zip(dynamic, dyn):
            full[i] = v
        a, k = jax.tree_util.tree_unflatten(tree, full)
        return fn(*a, **k)

    dyn_values = [leaves[i] for i in dynamic]
    checked = jax.jit(ck.checkify(call, errors=_errors(enabled)))
    t0 = time.perf_counter()
    try:
        error, out = checked(*dyn_values)
        jax.block_until_ready(out)
    except Exception as e:
        raise NotTraceableError(f"JAX could not trace {name}: {type(e).__name__}: "
                                f"{str(e).strip().splitlines()[0] if str(e).strip() else ''}"
                                f"{_exc_frame(e)}") from e
    seconds = time.perf_counter() - t0
    signature = _signature(fn, args, kwargs)
    findings = tuple(_finding(e, where) for e in _exceptions(error))
    notes = []
    if "nan" in enabled and _has_nan_input(dyn_values):
        notes.append("an input already contains NaN, so the first NaN reported may come from it")
    return CheckReport(name=name, signature=signature, checks=enabled, findings=findings,
                       output=_describe_output(out), seconds=seconds, notes=tuple(notes))


def _signature(fn: Callable, args: tuple, kwargs: dict) -> str:
    """``x: f32[3], i: int`` from the actual arguments (parameter names where known)."""
    import inspect

    from jaxmagic._format import shape_str

    def t(v: Any) -> str:
        if hasattr(v, "shape") and hasattr(v, "dtype"):
            return shape_str(v.shape, v.dtype)
        return type(v).__name__
    try:
        target = getattr(fn, "__wrapped__", None) or getattr(fn, "fun", None) or fn
        sig = inspect.signature(target)
        bound = sig.bind_partial(*args, **kwargs)
        parts = []
        for k, v in bound.arguments.items():
            kind = sig.parameters[k].kind
            if kind is inspect.Parameter.VAR_POSITIONAL:
                parts += [t(x) for x in v]
            elif kind is inspect.Parameter.VAR_KEYWORD:
                parts += [f"{kk}: {t(x)}" for kk, x in v.items()]
            else:
                parts.append(f"{k}: {t(v)}")
        return ", ".join(parts)
    except (TypeError, ValueError):
        return ", ".join([t(a) for a in args] + [f"{k}: {t(v)}" for k, v in kwargs.items()])


def _has_nan_input(values: list) -> bool:
    import numpy as np

    for v in values:
        a = np.asarray(v)
        if np.issubdtype(a.dtype, np.inexact) and np.isnan(a).any():
            return True
    return False
