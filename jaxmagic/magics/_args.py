"""Argument handling shared by jaxmagic's magics (IPython's magic_arguments underneath)."""

from __future__ import annotations

import ast
import shlex
from typing import Any, Callable

from IPython.core.error import UsageError
from IPython.core.magic_arguments import parse_argstring


def parse(magic: Callable, argstring: str) -> Any:
    """``parse_argstring`` whose errors name the valid flags."""
    try:
        return parse_argstring(magic, argstring)
    except UsageError as e:
        flags = sorted({s for a in magic.parser._actions for s in a.option_strings})
        name = magic.parser.prog.lstrip("%")
        raise UsageError(f"{e}\nvalid flags: {' '.join(flags)} (see %{name}? for help)") from None


def show(result: Any, args: Any, display_obj: Any = None) -> Any:
    """The ``-o`` / ``-q`` convention: return ``result`` with ``-o``, else display it (or
    ``display_obj``) unless ``-q``."""
    if args.output:
        return result
    if not args.quiet:
        from IPython.display import display

        display(display_obj if display_obj is not None else result)
    return None


def cell_label(shell: Any, filename: str) -> str | None:
    """``In[5]`` for code compiled from a cell of ``shell``; ``None`` for any other file."""
    try:
        named = shell.compile.format_code_name(filename)
    except Exception:
        return None
    return named[1] if named else None


def split_flags(line: str, takes_value: set[str]) -> tuple[str, str]:
    """Split ``line`` into its leading flags and the raw rest (a Python statement).

    The statement keeps its exact text (quotes, spacing). Flags in ``takes_value`` consume
    the next token unless written ``--flag=value``.
    """
    rest = line.lstrip()
    flags: list[str] = []
    while rest.startswith("-"):
        token, _, tail = rest.partition(" ")
        if token == "--":
            rest = tail.lstrip()
            break
        flags.append(token)
        rest = tail.lstrip()
        if token in takes_value and rest:
            value, _, tail = rest.partition(" ")
            flags.append(value)
            rest = tail.lstrip()
    return " ".join(shlex.quote(f) for f in flags), rest


def evaluate_call(shell: Any, name: str, expr: str) -> tuple[Any, list, dict]:
    """Evaluate ``f(a, b, k=c)`` in ``shell``'s namespace without calling ``f``.

    Returns ``(f, [a, b], {"k": c})``. Every failure (empty, not an expression, not a call,
    a name that is not defined, not callable) is a ``UsageError`` that says so; ``name`` is
    the magic's name for the messages.
    """
    expr = expr.strip()
    if not expr:
        raise UsageError(f"%{name} needs a call, e.g. %{name} f(x, y)")
    try:
        tree = ast.parse(expr, mode="eval")
    except SyntaxError as e:
        raise UsageError(f"%{name}: {expr!r} is not a Python expression: {e.msg}") from None
    call = tree.body
    if not isinstance(call, ast.Call):
        raise UsageError(f"%{name} needs a call like f(x, y); {expr!r} is a "
                         f"{type(call).__name__.lower()}, not a call")
    capture = "__jaxmagic_capture_call__"
    pieces = ast.Expression(ast.Tuple([
        call.func,
        ast.Call(ast.Name(capture, ast.Load()), call.args, call.keywords)], ast.Load()))
    ast.fix_missing_locations(pieces)
    local_ns = dict(shell.user_ns)
    local_ns[capture] = lambda *a, **k: (list(a), k)
    try:
        fn, (call_args, call_kwargs) = eval(compile(pieces, f"<%{name}>", "eval"),
                                            shell.user_global_ns, local_ns)
    except Exception as e:
        raise UsageError(f"%{name}: evaluating {expr!r} failed: {type(e).__name__}: {e}") from None
    if not callable(fn):
        raise UsageError(f"%{name}: {ast.unparse(call.func)} is a {type(fn).__name__}, not a function")
    return fn, call_args, call_kwargs
