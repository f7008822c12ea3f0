"""``%%jaxprofile`` / ``%jaxprofile``: run code unchanged and report what JAX did."""

from __future__ import annotations

import ast
import os
import sys
from functools import partial
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class, output_can_be_silenced
from IPython.core.magic_arguments import argument, magic_arguments

from jaxmagic.magics._args import cell_label, parse, split_flags


@magics_class
class ProfileMagics(Magics):
    """The profiler magics."""

    @magic_arguments()
    @argument("-o", "--output", action="store_true",
              help="return the ProfileReport (the cell's own value is still displayed)")
    @argument("-q", "--quiet", action="store_true", help="do not display the report")
    @argument("--json", metavar="PATH", help="also write report.to_dict() as JSON to PATH")
    @argument("--no-jaxpr", action="store_true", help="leave jaxprs out of the report")
    @argument("--hlo", action="store_true", help="include each function's optimized HLO text")
    @argument("--trace", nargs="?", const="", default=None, metavar="DIR",
              help="also record a jax.profiler trace (in DIR, or a new temporary folder) and "
                   "show device time per function and a timeline; in line mode write --trace=DIR")
    @output_can_be_silenced
    @line_cell_magic
    def jaxprofile(self, line: str, cell: str | None = None) -> Any:
        """Run a cell (or one statement) exactly as without the magic and show what JAX did.

        Reports every function traced and compiled, trace / lower / compile time against
        the rest of the wall time (measured after all dispatched device work finished),
        each cache miss with its reason, jaxprs, XLA cost and memory analysis, and insights
        about JAX pitfalls. Examples::

            %%jaxprofile
            y = f(x)

            %jaxprofile -o f(x)
        """
        __tracebackhide__ = True
        flag_text, statement = split_flags(line, {"--json"}) if cell is None else (line, "")
        args = parse(self.jaxprofile, flag_text)
        if cell is None:
            source = statement
            if not source.strip():
                raise UsageError("%jaxprofile needs a statement, e.g. %jaxprofile f(x); "
                                 "use %%jaxprofile for a whole cell")
        else:
            source = cell
        if args.json:
            _check_writable(args.json)
        return self._profile(source, args, label="cell" if cell is not None else "line")

    def _profile(self, source: str, args: Any, *, label: str) -> Any:
        __tracebackhide__ = True
        from jaxmagic.profile import Profiler
        from jaxmagic.profile.tracing import TraceSession

        shell = self.shell
        transformed = shell.transform_cell(source)
        filename = shell.compile.cache(transformed, shell.execution_count, raw_code=source)
        tree = shell.compile.ast_parse(transformed, filename=filename)  # SyntaxError: no report
        body, last = _split_last_expression(tree)
        code_body = shell.compile(body, filename, "exec")
        code_last = shell.compile(last, filename, "eval") if last is not None else None

        result, error = None, None
        prof = Profiler()
        tracer = TraceSession(args.trace) if args.trace is not None else None
        try:
            with prof:
                if tracer is not None:
                    tracer.start()
                try:
                    exec(code_body, shell.user_global_ns, shell.user_ns)
                    if code_last is not None:
                        result = eval(code_last, shell.user_global_ns, shell.user_ns)
                finally:
                    if tracer is not None:
                        tracer.stop()
        except BaseException as e:
            error = e
        report = prof.report(cell_file=filename, jaxpr=not args.no_jaxpr, hlo=args.hlo,
                             label=label, error=_describe(error),
                             trace=tracer.summary() if tracer is not None else None,
                             cell_label=partial(cell_label, shell))
        if args.json:
            _write_json(report, args.json)
        from IPython.display import display

        if not args.quiet and not args.output:  # with -o the returned report is displayed
            display(report)
        if error is not None:
            raise error.with_traceback(error.__traceback__)
        if args.output:
            if result is not None:
                display(result)  # the cell's own value is still shown
            return report
        return result


def _split_last_expression(tree: ast.Module) -> tuple[ast.Module, ast.Expression | None]:
    """Split a module into the statements to exec and a final expression to eval (its value
    is the cell's displayed value, as in plain IPython)."""
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        last = ast.Expression(tree.body[-1].value)
        return ast.Module(tree.body[:-1], type_ignores=[]), last
    return tree, None


def _describe(error: BaseException | None) -> str | None:
    if error is None:
        return None
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:300]}" if text else type(error).__name__


def _check_writable(path: str) -> None:
    """Fail before the cell runs if ``--json`` cannot be written (nothing has run yet)."""
    target = os.path.abspath(os.path.expanduser(path))
    parent = os.path.dirname(target)
    if os.path.isdir(target):
        raise UsageError(f"--json {path}: is a directory; give a file path")
    if not os.path.isdir(parent):
        raise UsageError(f"--json {path}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK) or (os.path.exists(target) and not os.access(target, os.W_OK)):
        raise UsageError(f"--json {path}: not writable")


def _write_json(report: Any, path: str) -> None:
    try:
        with open(os.path.expanduser(path), "w") as fh:
            fh.write(report.to_json(indent=1))
    except OSError as e:  # the cell has run: keep its results, say what failed
        print(f"jaxprofile: could not write --json {path}: {e}", file=sys.stderr)
