"""``%jaxcheck``: run one call under checkify and report what plain JAX ignores silently."""

from __future__ import annotations

from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments

from jaxmagic.magics._args import evaluate_call, parse, split_flags


@magics_class
class CheckMagics(Magics):
    """The ``%jaxcheck`` magic."""

    @magic_arguments()
    @argument("-o", "--output", action="store_true", help="return the CheckReport")
    @argument("-q", "--quiet", action="store_true", help="do not display it")
    @argument("--checks", metavar="LIST", default="all",
              help="comma-separated checks to enable: index, nan, div, user (checkify.check "
                   "assertions) or all (default)")
    @line_magic
    def jaxcheck(self, line: str) -> Any:
        """Run one call under ``jax.experimental.checkify`` (jitted) and report what plain
        JAX ignores silently: out-of-bounds indices (clamped or dropped), NaNs produced,
        divisions by zero, failed ``checkify.check`` assertions; each with its source line.
        A clean call says so. The call really runs (once). Examples::

            %jaxcheck f(x, 10)
            %jaxcheck --checks nan,div loss(params, batch)
            report = %jaxcheck -o f(x, 10)
        """
        from jaxmagic.check import check_call, parse_checks
        from jaxmagic.ir import NotTraceableError

        flags, expr = split_flags(line, {"--checks"})
        args = parse(self.jaxcheck, flags)
        try:
            checks = parse_checks(args.checks)
        except ValueError as e:
            raise UsageError(f"%jaxcheck --checks: {e}") from None
        fn, call_args, call_kwargs = evaluate_call(self.shell, "jaxcheck", expr)
        try:
            report = check_call(fn, *call_args, checks=checks, where=self._cell_label,
                                **call_kwargs)
        except (NotTraceableError, TypeError) as e:
            raise UsageError(f"%jaxcheck: {e}") from None
        if args.output:
            return report
        if not args.quiet:
            from IPython.display import display

            display(report)
        return None

    def _cell_label(self, filename: str) -> str | None:
        """``In[5]`` for code that came from a cell of this shell; None otherwise."""
        try:
            named = self.shell.compile.format_code_name(filename)
        except Exception:
            return None
        return named[1] if named else None
