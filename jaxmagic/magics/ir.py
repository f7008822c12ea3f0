"""``%jaxpr`` / ``%jaxhlo``: the IR of one call."""

from __future__ import annotations

import ast
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments

from jaxmagic.magics._args import parse, split_flags


@magics_class
class IRMagics(Magics):
    """Magics that show the program JAX builds for one call."""

    @magic_arguments()
    @argument("-o", "--output", action="store_true", help="return the IRReport")
    @argument("-q", "--quiet", action="store_true", help="do not display it")
    @line_magic
    def jaxpr(self, line: str) -> Any:
        """Show the jaxpr of one call, e.g. ``%jaxpr f(x, y)`` (nothing is executed)."""
        return self._ir(self.jaxpr, "jaxpr", line, stage="jaxpr")

    @magic_arguments()
    @argument("--optimized", action="store_true",
              help="show the optimized HLO XLA compiled instead of StableHLO")
    @argument("-o", "--output", action="store_true", help="return the IRReport")
    @argument("-q", "--quiet", action="store_true", help="do not display it")
    @line_magic
    def jaxhlo(self, line: str) -> Any:
        """Show the StableHLO (or ``--optimized`` HLO) of one call, with XLA cost and memory
        analysis, e.g. ``%jaxhlo --optimized f(x)``."""
        return self._ir(self.jaxhlo, "jaxhlo", line, stage=None)

    def _ir(self, magic: Any, name: str, line: str, *, stage: str | None) -> Any:
        from jaxmagic.ir import NotTraceableError, inspect_call

        flags, expr = split_flags(line, set())
        args = parse(magic, flags)
        fn, call_args, call_kwargs = self._evaluate_call(name, expr)
        if stage is None:
            stage = "hlo" if args.optimized else "stablehlo"
        try:
            report = inspect_call(fn, *call_args, stage=stage, **call_kwargs)
        except (NotTraceableError, TypeError) as e:
            raise UsageError(f"%{name}: {e}") from None
        if args.output:
            return report
        if not args.quiet:
            from IPython.display import display

            display(report)
        return None

    def _evaluate_call(self, name: str, expr: str) -> tuple[Any, list, dict]:
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
        local_ns = dict(self.shell.user_ns)
        local_ns[capture] = lambda *a, **k: (list(a), k)
        try:
            fn, (call_args, call_kwargs) = eval(compile(pieces, f"<%{name}>", "eval"),
                                                self.shell.user_global_ns, local_ns)
        except Exception as e:
            raise UsageError(f"%{name}: evaluating {expr!r} failed: {type(e).__name__}: {e}") from None
        if not callable(fn):
            raise UsageError(f"%{name}: {ast.unparse(call.func)} is a {type(fn).__name__}, not a function")
        return fn, call_args, call_kwargs
