"""``%jaxpr`` / ``%jaxhlo``: the IR of one call."""

from __future__ import annotations

from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class, no_var_expand
from IPython.core.magic_arguments import argument, magic_arguments

from jaxmagic.magics._args import callee_text, evaluate_call, parse, show


@magics_class
class IRMagics(Magics):
    """Magics that show the program JAX builds for one call."""

    @magic_arguments()
    @argument("call", nargs="*", help="the call to inspect, e.g. f(x, y) or model(x)")
    @argument("-o", "--output", action="store_true", help="return the IRReport instead of displaying it")
    @argument("-q", "--quiet", action="store_true", help="display nothing")
    @no_var_expand
    @line_magic
    def jaxpr(self, line: str) -> Any:
        """Show the jaxpr of one call, e.g. ``%jaxpr f(x, y)`` or ``%jaxpr model.step(x)``.

        Nothing is executed, and the NNX objects the call is given are traced as copies
        (their values and RNG counts never change). Arrays and Python numbers are traced;
        bools, strings and other Python values stay static, as ``training=True`` would.
        """
        return self._ir(self.jaxpr, "jaxpr", line, stage="jaxpr")

    @magic_arguments()
    @argument("call", nargs="*", help="the call to inspect, e.g. f(x, y) or model(x)")
    @argument(
        "--optimized", action="store_true", help="show the optimized HLO XLA compiled instead of StableHLO"
    )
    @argument("-o", "--output", action="store_true", help="return the IRReport instead of displaying it")
    @argument("-q", "--quiet", action="store_true", help="display nothing")
    @no_var_expand
    @line_magic
    def jaxhlo(self, line: str) -> Any:
        """Show the StableHLO (or ``--optimized`` HLO) of one call, with XLA cost and memory
        analysis, e.g. ``%jaxhlo --optimized f(x)``."""
        return self._ir(self.jaxhlo, "jaxhlo", line, stage=None)

    def _ir(self, magic: Any, name: str, line: str, *, stage: str | None) -> Any:
        from jaxmagic.ir import NotTraceableError, inspect_call

        args, expr = parse(magic, line)
        fn, call_args, call_kwargs = evaluate_call(self.shell, name, expr)
        if stage is None:
            stage = "hlo" if args.optimized else "stablehlo"
        try:
            report = inspect_call(fn, *call_args, stage=stage, call_name=callee_text(expr), **call_kwargs)
        except (NotTraceableError, TypeError) as e:
            raise UsageError(f"%{name}: {e}") from None
        return show(report, args)
