"""Explain a ``RESOURCE_EXHAUSTED`` error: what was being allocated, where, what is alive and
who holds it, and fixes ranked by the bytes they free. Reads the exception only: it is never
changed, re-raised or wrapped."""

from __future__ import annotations

import ast
import re
import traceback
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from jaxmagic._format import fmt_bytes
from jaxmagic._result import Result
from jaxmagic.memories.remedies import Remedy
from jaxmagic.memories.report import MemoryReport, Suggestion

# How XLA's allocators word the size: "Out of memory allocating 1099511627776 bytes.",
# "Out of memory while trying to allocate 17179869184 bytes.", "... request for 1.00TiB (1099511627776B)".
_SIZE = (
    re.compile(r"allocat\w*\s+(\d+)\s*bytes", re.I),
    re.compile(r"\((\d+)B\)"),
    re.compile(r"(\d+)\s*bytes", re.I),
)


def find_resource_exhausted(exc: BaseException | None, depth: int = 8) -> BaseException | None:
    """``exc`` or the exception it was raised from / during that says ``RESOURCE_EXHAUSTED``."""
    seen = 0
    while exc is not None and seen < depth:
        if "RESOURCE_EXHAUSTED" in str(exc) or "Out of memory" in str(exc):
            return exc
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


def requested_bytes(message: str) -> int | None:
    """The allocation size an OOM message names, or ``None`` where it names none."""
    for pattern in _SIZE:
        m = pattern.search(message)
        if m:
            return int(m.group(1))
    return None


@dataclass(frozen=True)
class OOMReport(Result):
    """Why a cell ran out of device memory, and what to do about it."""

    error: str  # first line of the message
    requested: int | None  # bytes the failed allocation asked for
    where: str | None  # "file:line" of the innermost user frame
    source: str | None  # that line's code
    call: str | None  # the call on that line, for %jaxplan
    memory: MemoryReport
    program: Any  # PlanReport of the failing call, traced and compiled again (not run), or None
    fixes: tuple[Suggestion, ...]  # names to free, most bytes first
    # every fix, names to free included, ranked by the bytes per device it saves (unknown last)
    remedies: tuple[Remedy, ...]
    limit: int | None  # the device's bytes_limit where the backend reports it
    findings: tuple[str, ...] = ()  # what the sizes say (the request alone exceeds the device, ...)

    def summary(self) -> str:
        asked = (
            f"asked for {fmt_bytes(self.requested)}" if self.requested is not None else "size not reported"
        )
        return f"out of device memory: {asked}; {fmt_bytes(self.memory.total_bytes)} alive"

    def to_text(self, width: int = 100) -> str:
        from jaxmagic.render.memory import oom_text

        return oom_text(self, width=width)

    def to_html(self) -> str:
        from jaxmagic.render.memory import oom_html

        return oom_html(self)

    def to_dict(self) -> dict[str, Any]:
        """Keys: ``error``, ``requested``, ``where``, ``source``, ``call``, ``memory`` (see
        ``MemoryReport.to_dict``), ``program`` (``PlanReport.to_dict`` or ``None``), ``fixes``
        (names to free), ``remedies`` (every fix ranked: ``action``, ``saves`` bytes per device
        or ``None`` when unknown, ``why``, ``kind``), ``limit``, ``findings``."""
        return {
            "error": self.error,
            "requested": self.requested,
            "where": self.where,
            "source": self.source,
            "call": self.call,
            "memory": self.memory.to_dict(),
            "program": self.program.to_dict() if self.program is not None else None,
            "fixes": [f.to_dict() for f in self.fixes],
            "remedies": [r.to_dict() for r in self.remedies],
            "limit": self.limit,
            "findings": list(self.findings),
        }


def _user_frames(tb: Any, label_file: Any = None) -> tuple[tuple[str | None, str | None], str | None]:
    """``(where, source)`` of the innermost user frame, and the source of the outermost one
    (the cell's own line, whose call can be planned from the namespace)."""
    from jaxmagic._frames import is_library_file, running_cell_label

    frames = [f for f in traceback.extract_tb(tb) if not is_library_file(f.filename)]
    if not frames:
        return (None, None), None
    inner = frames[-1]
    # the cell's own top-level line (IPython's exec frame is outside any library directory)
    outer = next((f for f in frames if f.name == "<module>"), frames[0])
    label = (label_file or running_cell_label)(inner.filename)
    where = f"{label}, line {inner.lineno}" if label else f"{inner.filename}:{inner.lineno}"
    return (where, (inner.line or "").strip() or None), (outer.line or "").strip() or None


def _calls_in(source: str | None) -> list[str]:
    """The calls on ``source``, outermost first (``float(step(state, batch))`` gives both)."""
    if not source:
        return []
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    return [
        ast.get_source_segment(source, node) or ast.unparse(node)
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
    ]


def _call_in(source: str | None) -> str | None:
    """The outermost call on ``source`` (``step(state, batch)`` in ``loss = step(state, batch)``)."""
    calls = _calls_in(source)
    return calls[0] if calls else None


def _jax_callable(fn: Any) -> bool:
    """A function JAX or Flax made (``jax.jit``, ``nnx.jit``): compiling it runs no user code
    beyond its tracing. Read from the type, not the object (no user ``__getattr__``)."""
    module = type(fn).__module__ or ""
    return callable(fn) and module.split(".")[0] in ("jax", "jaxlib", "flax")


@dataclass(frozen=True)
class FailingCall:
    """``fn(*args, **kwargs)`` as the failing line wrote it, its values read from the namespace."""

    fn: Any
    args: tuple
    kwargs: dict
    arg_names: tuple[str, ...]  # the positional arguments' names, as written


def resolve_call(call: str | None, namespace: Mapping[str, Any]) -> FailingCall | None:
    """``call`` when it is ``f(a, b, k=c)`` with plain names bound in ``namespace`` and ``f`` a
    JAX/Flax-compiled function (so compiling it runs no user code beyond tracing); else ``None``.
    Names are read with ``dict.get``: nothing is evaluated."""
    if not call:
        return None
    try:
        node = ast.parse(call, mode="eval").body
    except SyntaxError:
        return None
    names = [*node.args, *(k.value for k in node.keywords)] if isinstance(node, ast.Call) else []
    if (
        not isinstance(node, ast.Call)
        or not isinstance(node.func, ast.Name)
        or any(k.arg is None for k in node.keywords)
        or not all(isinstance(a, ast.Name) for a in names)
    ):
        return None
    missing = object()
    fn = dict.get(namespace, node.func.id, missing) if isinstance(namespace, dict) else missing
    args = [dict.get(namespace, a.id, missing) for a in node.args] if isinstance(namespace, dict) else []
    kwargs = (
        {k.arg: dict.get(namespace, k.value.id, missing) for k in node.keywords}
        if isinstance(namespace, dict)
        else {}
    )
    if fn is missing or missing in args or missing in kwargs.values() or not _jax_callable(fn):
        return None
    return FailingCall(fn, tuple(args), kwargs, tuple(a.id for a in node.args))


def plan_failing_call(call: str | None, namespace: Mapping[str, Any]) -> Any:
    """Compile (never run) ``call`` (see :func:`resolve_call`); its ``PlanReport``, or ``None``
    when it is not such a call or on any error."""
    failing = resolve_call(call, namespace)
    return _plan(failing) if failing is not None else None


def _plan(failing: FailingCall) -> Any:
    from jaxmagic.memories.plan import plan

    try:
        return plan(failing.fn, *failing.args, **failing.kwargs)
    except Exception:  # the explanation must never fail because a re-compile did
        return None


def explain_oom(
    exc: BaseException,
    namespace: Mapping[str, Any] | None = None,
    *,
    hidden: Iterable[str] = (),
    tb: Any = None,
    label_file: Any = None,
) -> OOMReport:
    """Explain ``exc`` (or the ``RESOURCE_EXHAUSTED`` error it was raised from).

    Args:
        exc: the exception a cell raised.
        namespace: where to look for owners of live arrays (default: IPython's user namespace).
        hidden: names of ``namespace`` to ignore.
        tb: the full traceback where the caller has it (IPython's ``sys.last_traceback`` also
            holds the cell's own frame, which the exception's ``__traceback__`` may lack).
        label_file: names a source file (default: ``In[5]`` for a cell of the running IPython
            shell, the path otherwise).

    Returns:
        An :class:`OOMReport`. Raises ``ValueError`` if ``exc`` is not an out-of-memory error.

    Example::

        try:
            jnp.zeros((2**38,), jnp.float32)
        except Exception as e:
            print(jaxmagic.explain_oom(e, globals()).to_text())
    """
    from jaxmagic.memories.live import memory

    oom = find_resource_exhausted(exc)
    if oom is None:
        raise ValueError(f"{type(exc).__name__} is not an out-of-memory (RESOURCE_EXHAUSTED) error")
    message = str(oom).strip()
    first = message.splitlines()[0] if message else type(oom).__name__
    asked = requested_bytes(message)
    (where, source), outer = _user_frames(tb if tb is not None else exc.__traceback__, label_file)
    report = memory(namespace, hidden=hidden, top=10)
    if namespace is None:
        from jaxmagic.memories.live import _user_namespace

        namespace = _user_namespace()[0]
    # the first call on the line that is a jitted function's (``step`` in ``float(step(s, b))``)
    calls = _calls_in(outer)
    resolved = [(c, f) for c in calls if (f := resolve_call(c, namespace)) is not None]
    call, failing = resolved[0] if resolved else (calls[0] if calls else None, None)
    program = _plan(failing) if failing is not None else None
    limits = [d.stats.get("bytes_limit") for d in report.devices if d.stats and d.stats.get("bytes_limit")]
    limit = min(limits) if limits else None
    fixes = tuple(report.suggestions)
    freeable = sum(a.nbytes for a in report.arrays if a.kind != "unowned")
    findings = []
    if asked is not None and limit is not None and asked > limit:
        findings.append(
            f"the allocation alone ({fmt_bytes(asked)}) is larger than the device "
            f"({fmt_bytes(limit)}): freeing live arrays cannot help; the computation must shrink"
        )
    elif asked is not None and asked > freeable:
        findings.append(
            f"the allocation ({fmt_bytes(asked)}) is more than all named live arrays together "
            f"({fmt_bytes(freeable)}): freeing them will not be enough; the computation must shrink"
        )
    if program is not None and program.memory:
        m = program.memory
        biggest = max(
            (
                ("outputs", m["output_bytes"]),
                ("temporaries", m["temp_bytes"]),
                ("arguments", m["argument_bytes"]),
            ),
            key=lambda t: t[1],
        )
        findings.insert(
            0,
            f"{program.name}'s program needs {fmt_bytes(m['peak_bytes'])} per device, most of "
            f"it {biggest[0]} ({fmt_bytes(biggest[1])}): shrink those first",
        )
    if call:
        findings.append(
            f"see its memory before running it: %jaxplan {call} (compiles only; "
            "--device h100 tells whether it fits)"
        )
    from jaxmagic.memories.remedies import rank_remedies

    remedies = rank_remedies(fixes, failing, program)
    return OOMReport(
        error=first,
        requested=asked,
        where=where,
        source=source,
        call=call,
        memory=report,
        program=program,
        fixes=fixes,
        remedies=tuple(remedies),
        limit=limit,
        findings=tuple(findings),
    )
