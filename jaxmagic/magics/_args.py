"""The one convention every jaxmagic magic follows (IPython's own, as in ``%timeit``).

- Flags may stand before or after the expression: ``%jaxpr -o f(x)`` and ``%jaxpr f(x) -o``
  are the same. ``--`` ends the flags, for an expression that itself ends in something
  that looks like a flag. A trailing ``;`` is IPython's "show nothing" and is not part of
  the expression.
- ``-o`` returns the result object (IPython shows it as ``Out[n]``) and does not also
  display it; ``-q`` displays nothing.
- Unknown flags are a ``UsageError`` that names the valid ones; ``%magic?`` documents all.
- The expression is evaluated in the user's namespace by :func:`evaluate`.
"""

from __future__ import annotations

import ast
import os
import re
import shlex
from collections.abc import Callable
from typing import Any, NamedTuple

from IPython.core.error import UsageError

# A token: runs of non-space characters and quoted strings ("data, model" is one token).
_TOKEN = re.compile(r"""(?:"[^"]*"|'[^']*'|[^\s"'])+""")
_LONG_FLAG = re.compile(r"--[A-Za-z][\w-]*(=.*)?$")


class Line(NamedTuple):
    """A magic's line split into parsed flags and the raw expression text."""

    args: Any
    expr: str


def parse(magic: Callable, line: str, *, expression: bool = True) -> Line:
    """Parse ``line`` for ``magic`` (declared with ``magic_arguments``) by the convention above.

    Returns the argparse namespace and the expression exactly as typed (quotes and spacing
    kept), less a trailing ``;``. With ``expression=False`` (a cell magic's line) every
    token is a flag or a flag's value.
    """
    parser = magic.parser
    if not expression:
        try:
            argv = shlex.split(line)
        except ValueError as e:  # an unbalanced quote
            raise UsageError(f"%{parser.prog.lstrip('%')}: {e} in {line!r}") from None
        return Line(_parse_flags(magic, argv), "")
    takes_value, known = set(), set()
    for action in parser._actions:
        known.update(action.option_strings)
        if action.option_strings and action.nargs != 0:
            takes_value.update(action.option_strings)
    tokens = [(m.start(), m.end(), m.group()) for m in _TOKEN.finditer(line)]

    def flag_run(i: int) -> int | None:
        """Index after the flag (and its value) starting at token ``i``, if it is one."""
        text = tokens[i][2]
        name = text.split("=", 1)[0]
        if not (name in known or _LONG_FLAG.match(text)):
            return None
        if name in takes_value and "=" not in text and name in _required_value(parser):
            return i + 2 if i + 1 < len(tokens) else i + 1
        return i + 1

    lead: list[str] = []
    i, explicit = 0, False
    while i < len(tokens) and tokens[i][2].startswith("-"):
        if tokens[i][2] == "--":
            i, explicit = i + 1, True
            break
        end = flag_run(i)
        if end is None:
            end = i + 1  # an unknown short flag: argparse names the valid ones
        lead += [t[2] for t in tokens[i:end]]
        i = end
    start = tokens[i][0] if i < len(tokens) else len(line)
    stop, trail = len(line), []
    if not explicit:
        # Trailing flags: the shortest tail of tokens that is a run of flags.
        for j in range(i + 1, len(tokens)):
            if not tokens[j][2].startswith("-"):
                continue
            k, ok = j, True
            while k < len(tokens):
                end = flag_run(k) if tokens[k][2].startswith("-") else None
                if end is None:
                    ok = False
                    break
                k = end
            if ok:
                stop, trail = tokens[j][0], [t[2] for t in tokens[j:]]
                break
    expr = line[start:stop].strip()
    if expr.endswith(";"):
        expr = expr[:-1].rstrip()
    return Line(_parse_flags(magic, [_unquote(t) for t in lead + trail]), expr)


def _parse_flags(magic: Callable, argv: list[str]) -> Any:
    """Parse flag tokens (quotes already removed); errors name the valid flags."""
    try:
        return magic.parser.parse_args(argv)
    except UsageError as e:
        parser = magic.parser
        valid = " ".join(sorted({s for a in parser._actions for s in a.option_strings}))
        name = parser.prog.lstrip("%")
        raise UsageError(f"{e}\nvalid flags: {valid} (see %{name}? for help)") from None


def _required_value(parser: Any) -> set[str]:
    """Option strings whose value is not optional (``nargs="?"`` flags take ``--flag=value``)."""
    return {
        s for a in parser._actions if a.option_strings and a.nargs not in (0, "?") for s in a.option_strings
    }


def _unquote(token: str) -> str:
    """A flag or value as meant: one pair of enclosing quotes removed (``"data, model"``,
    ``--spec='data, model'``); quotes inside a value stay (``(P('data'),)`` is Python)."""
    flag, eq, value = token.partition("=") if token.startswith("--") else ("", "", token)
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        value = value[1:-1]
    return flag + eq + value


def show(result: Any, args: Any, display_obj: Any = None) -> Any:
    """``-o``: return ``result`` (IPython displays it once, as ``Out[n]``). Otherwise display
    ``display_obj`` (default ``result``) unless ``-q``, and return nothing."""
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


def article(word: str) -> str:
    """``a`` or ``an`` before ``word`` (for messages: "is an attribute")."""
    return "an" if word[:1].lower() in "aeiou" else "a"


def evaluate(shell: Any, name: str, expr: str, what: str = "an expression") -> Any:
    """Evaluate ``expr`` in the user's namespace; every failure is a ``UsageError`` naming
    ``%name`` and the expression."""
    if not expr.strip():
        raise UsageError(f"%{name}: missing EXPR: give {what}, e.g. %{name} x (see %{name}?)")
    try:
        code = compile(expr, f"<%{name}>", "eval")
    except SyntaxError as e:
        raise UsageError(f"%{name}: {expr!r} is not a Python expression: {e.msg}") from None
    try:
        return eval(code, shell.user_global_ns, shell.user_ns)  # noqa: S307 - the user's own code
    except Exception as e:
        raise UsageError(f"%{name}: could not evaluate {expr!r}: {type(e).__name__}: {e}") from None


def evaluate_path_or_expression(shell: Any, name: str, expr: str, what: str = "an expression") -> Any:
    """Like :func:`evaluate`, but a bare filesystem path (``/tmp/ckpt``, ``runs/mlp``,
    ``~/ckpt``) that is not a Python expression of the namespace is returned as a string."""
    text = expr.strip()
    looks_like_path = text.startswith(("/", "~", "./", "../")) or os.path.exists(os.path.expanduser(text))
    try:
        return evaluate(shell, name, text, what)
    except UsageError:
        if text and looks_like_path and not any(c.isspace() for c in text):
            return text
        raise


def callee_text(expr: str) -> str | None:
    """The callee of a call expression as the user wrote it (``model.generate_step``)."""
    try:
        call = ast.parse(expr.strip(), mode="eval").body
    except SyntaxError:
        return None
    return ast.unparse(call.func) if isinstance(call, ast.Call) else None


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
        kind = type(call).__name__.lower()
        raise UsageError(f"%{name} needs a call like f(x, y); {expr!r} is {article(kind)} {kind}, not a call")
    capture = "__jaxmagic_capture_call__"
    pieces = ast.Expression(
        ast.Tuple([call.func, ast.Call(ast.Name(capture, ast.Load()), call.args, call.keywords)], ast.Load())
    )
    ast.fix_missing_locations(pieces)
    local_ns = dict(shell.user_ns)
    local_ns[capture] = lambda *a, **k: (list(a), k)
    try:
        fn, (call_args, call_kwargs) = eval(
            compile(pieces, f"<%{name}>", "eval"), shell.user_global_ns, local_ns
        )
    except Exception as e:
        raise UsageError(f"%{name}: could not evaluate {expr!r}: {type(e).__name__}: {e}") from None
    if not callable(fn):
        kind = type(fn).__name__
        raise UsageError(f"%{name}: {ast.unparse(call.func)} is {article(kind)} {kind}, not a function")
    return fn, call_args, call_kwargs
