"""Turn JAX's cache-miss explanations (``jax_explain_cache_misses``) into plain words.

JAX logs, for example::

    TRACING CACHE MISS at /tmp/cell.py:19:16 (<module>):
      for f defined at /tmp/cell.py:17
      all previously seen cache keys differ. For the closest previous key:
      different input types:
      * at x, now f32[4] and before f32[3]

which becomes the reason ``x changed from f32[3] to f32[4]`` of kind ``shape``.
"""

from __future__ import annotations

import ast
import functools
import linecache
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

_HEADER = re.compile(r"TRACING CACHE MISS at (?P<file>.+?):(?P<line>\d+)(?::\d+)? \((?P<scope>[^)]*)\)")
_NEVER_SEEN = re.compile(r"never seen function:\s*\n\s*(?P<name>\S+) id=\d+ defined at (?P<def>\S+)")
_FOR = re.compile(r"for (?P<name>\S+) defined at (?P<def>\S+)")
_TYPE_CHANGE = re.compile(
    r"\* at (?P<path>.+?), now (?P<now>\S+) and before (?P<before>\S+?)(?:https?://\S*)?$"
)
_STATIC = re.compile(
    r"\* at input path (?P<path>\S+), now .*?Static\(val=(?P<now>.*?)\) and before .*?Static\(val=(?P<before>.*?)\), so"
)
_TREE = re.compile(
    r"\* at input path (?P<path>\S+), now (?P<now>.+?) and before (?P<before>.+?)(?:, so (?P<why>.*))?$"
)
_GRAPHDEF = re.compile(r"\* at input path (?P<path>\S+?)\._graphdef, now ")
_WEAK = re.compile(r"\{weak_type=(True|False)\}")
_ANNOTATION = re.compile(r"\(\{[^)]*\}\)")  # sharding/vma annotations like f32[3]({})
_ARRAY = re.compile(r"^(?P<dtype>[a-z]+\d*)\[(?P<shape>[\d,]*)\]")


@dataclass(frozen=True)
class Miss:
    """One parsed cache miss."""

    function: str  # function name as JAX reports it
    defined_at: str | None  # "file:line" of its definition
    call_file: str | None  # where the call that missed came from
    call_line: int | None
    first: bool  # the function had never been traced before
    reasons: tuple[str, ...]  # plain-language reasons
    kinds: tuple[str, ...]  # "shape" | "dtype" | "weak_type" | "static" | "structure" | "graph" | "other"
    message: str = ""  # the log message it was parsed from


def _describe_type_change(path: str, before: str, now: str) -> tuple[str, str]:
    before, now = _ANNOTATION.sub("", before), _ANNOTATION.sub("", now)
    wb, wn = _WEAK.search(before), _WEAK.search(now)
    b, n = _WEAK.sub("", before), _WEAK.sub("", now)
    if b == n and (wb or wn):
        weak_before = wb is not None and wb.group(1) == "True"
        weak_now = wn is not None and wn.group(1) == "True"
        return (
            f"{path} changed weak type: {b} was {'weakly' if weak_before else 'strongly'} typed, "
            f"now {'weakly' if weak_now else 'strongly'} typed (a Python scalar vs a jnp value)",
            "weak_type",
        )
    mb, mn = _ARRAY.match(b), _ARRAY.match(n)
    kind = "other"
    if mb and mn:
        kind = "dtype" if mb["dtype"] != mn["dtype"] else "shape"
    weak = " (now a weakly typed Python scalar)" if wn is not None and wn.group(1) == "True" else ""
    return f"{path} changed from {b} to {n}{weak}", kind


def parse(message: str, rename: Callable[[str], str] = str) -> Miss | None:
    """Parse one ``TRACING CACHE MISS`` log message; ``None`` for other messages.

    ``rename`` turns JAX's input paths (``[0][2]``, ``model.states[0][3]``) into the user's
    names (see ``path_namer``)."""
    head = _HEADER.search(message)
    if head is None:
        return None
    never = _NEVER_SEEN.search(message)
    if never:
        return Miss(
            never["name"],
            never["def"],
            head["file"],
            int(head["line"]),
            True,
            ("first compile",),
            ("first",),
            message,
        )
    m = _FOR.search(message)
    name, defined = (m["name"], m["def"]) if m else ("?", None)
    reasons, kinds = [], []
    section = ""
    for raw in message.splitlines()[1:]:
        line = raw.strip()
        if line.startswith("different ") or line.startswith("never seen"):
            section = line.rstrip(":")
            continue
        if not line.startswith("*"):
            continue
        if g := _GRAPHDEF.match(line):
            reasons.append(
                f"the NNX graph of {rename(g['path'])} differs from the closest earlier "
                f"call (another Module/Optimizer object, or one whose structure changed)"
            )
            kinds.append("graph")
        elif s := _STATIC.match(line):
            reasons.append(f"static argument {rename(s['path'])} changed from {s['before']} to {s['now']}")
            kinds.append("static")
        elif section == "different input types" and (t := _TYPE_CHANGE.match(line)):
            text, kind = _describe_type_change(rename(t["path"]), t["before"], t["now"])
            reasons.append(text)
            kinds.append(kind)
        elif t := _TREE.match(line):
            why = f" ({t['why']})" if t["why"] else ""
            reasons.append(
                f"input structure at {rename(t['path'])} changed from {t['before']} to {t['now']}{why}"
            )
            kinds.append("structure")
        else:
            reasons.append(f"{section}: {line.lstrip('* ')}" if section else line.lstrip("* "))
            kinds.append("other")
    if not reasons:
        tail = [
            ln.strip() for ln in message.splitlines()[1:] if ln.strip() and not ln.strip().startswith("for ")
        ]
        reasons, kinds = ["; ".join(tail) or "unknown reason"], ["other"]
    return Miss(name, defined, head["file"], int(head["line"]), False, tuple(reasons), tuple(kinds), message)


def renamed(miss: Miss, rename: Callable[[str], str]) -> Miss:
    """``miss`` with its reasons re-parsed using the user's names."""
    again = parse(miss.message, rename) if miss.message else None
    return again if again is not None else replace(miss)


def param_names(defined_at: str | None) -> tuple[str, ...] | None:
    """Parameter names of the function defined at ``"file:line"`` (read from its source, so
    it works for cells, lambdas and methods); ``None`` if the source cannot be read."""
    if not defined_at or ":" not in defined_at:
        return None
    filename, _, line = defined_at.rpartition(":")
    source = "".join(linecache.getlines(filename))
    if not source or not line.isdigit():
        return None
    found = _functions_starting_at(source).get(int(line), ())
    if len(found) != 1:
        return None
    return found[0]


@functools.lru_cache(maxsize=32)
def _functions_starting_at(source: str) -> dict[int, tuple[tuple[str, ...], ...]]:
    """``{line: (parameter names of each function starting there)}`` for one source text,
    parsed once however many compiles of a report point into it (a code object's first line
    is its first decorator's line, so decorator lines count too)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return {}
    out: dict[int, list[tuple[str, ...]]] = {}
    for n in ast.walk(tree):
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            a = n.args
            names = tuple(p.arg for p in [*a.posonlyargs, *a.args, *a.kwonlyargs])
            for ln in {n.lineno, *(d.lineno for d in getattr(n, "decorator_list", ()))}:
                out.setdefault(ln, []).append(names)
    return {ln: tuple(v) for ln, v in out.items()}


_POSITIONAL = re.compile(r"^\[0\]\[(\d+)\](.*)$")
_KEYWORD = re.compile(r"^\[1\]\[['\"](\w+)['\"]\](.*)$")
_NNX_LEAF = re.compile(r"^(\w+)\.states\[0\]\[(\d+)\](.*)$")


def path_namer(
    params: Sequence[str] | None, nnx_leaves: Mapping[str, Sequence[tuple]] | None
) -> Callable[[str], str]:
    """A ``rename`` for ``parse``: ``[0][2]`` -> the 3rd parameter's name, ``[1]['k']`` -> ``k``,
    ``model.states[0][3]`` -> ``model.l1.kernel`` (the NNX path of that Variable)."""

    def rename(path: str) -> str:
        path = path.strip()
        if params and (m := _POSITIONAL.match(path)) and int(m[1]) < len(params):
            return params[int(m[1])] + m[2]
        if m := _KEYWORD.match(path):
            return m[1] + m[2]
        if nnx_leaves and (m := _NNX_LEAF.match(path)):
            leaves = nnx_leaves.get(m[1])
            if leaves and int(m[2]) < len(leaves):
                return f"{m[1]}.{leaves[int(m[2])][0]}{m[3]}"
        return path

    return rename
