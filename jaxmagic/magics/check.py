"""``%jaxcheck``: run one call under checkify and report what plain JAX ignores silently."""

from __future__ import annotations

from functools import partial
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class, no_var_expand
from IPython.core.magic_arguments import argument, magic_arguments

from jaxmagic.magics._args import callee_text, cell_label, evaluate_call, parse, show


@magics_class
class CheckMagics(Magics):
    """The ``%jaxcheck`` magic."""

    @magic_arguments()
    @argument("call", nargs="*", help="the call to run under checkify, e.g. f(x, 10)")
    @argument("-o", "--output", action="store_true", help="return the CheckReport instead of displaying it")
    @argument("-q", "--quiet", action="store_true", help="display nothing")
    @argument(
        "--checks",
        metavar="LIST",
        default="all",
        help="comma-separated checks to enable: index, nan, div, user (checkify.check "
        "assertions) or all (default)",
    )
    @no_var_expand
    @line_magic
    def jaxcheck(self, line: str) -> Any:
        """Run one call under ``jax.experimental.checkify`` (jitted) and report what plain
        JAX ignores silently: out-of-bounds indices (clamped, filled or dropped), NaNs and
        infs produced, divisions by zero, failed ``checkify.check`` assertions; each with its
        source line. A clean call says so. The call really runs, once, on copies of the NNX
        objects it is given (nothing they hold changes); arrays and Python numbers are
        traced, bools, strings and other Python values stay static. Examples::

            %jaxcheck f(x, 10)
            %jaxcheck --checks nan,div loss(params, batch)
            report = %jaxcheck -o f(x, 10)
        """
        from jaxmagic.check import check_call, parse_checks
        from jaxmagic.ir import NotTraceableError

        args, expr = parse(self.jaxcheck, line)
        try:
            checks = parse_checks(args.checks)
        except ValueError as e:
            raise UsageError(f"%jaxcheck --checks: {e}") from None
        fn, call_args, call_kwargs = evaluate_call(self.shell, "jaxcheck", expr)
        try:
            report = check_call(
                fn,
                *call_args,
                checks=checks,
                where=partial(cell_label, self.shell),
                call_name=callee_text(expr),
                **call_kwargs,
            )
        except (NotTraceableError, TypeError) as e:
            raise UsageError(f"%jaxcheck: {e}") from None
        return show(report, args)
