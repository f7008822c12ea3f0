"""``%%jaxprofile`` / ``%jaxprofile``: run code unchanged and report what JAX did."""

from __future__ import annotations

import ast
import asyncio
import inspect
import os
import sys
from functools import partial
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, magics_class, no_var_expand
from IPython.core.magic_arguments import argument, magic_arguments

from jaxmagic.magics._args import cell_label, parse


@magics_class
class ProfileMagics(Magics):
    """The profiler magics."""

    @magic_arguments()
    @argument(
        "-o",
        "--output",
        action="store_true",
        help="return the ProfileReport (the cell's own value is still displayed)",
    )
    @argument("-q", "--quiet", action="store_true", help="do not display the report")
    @argument("--json", metavar="PATH", help="also write report.to_dict() as JSON to PATH")
    @argument("--no-jaxpr", action="store_true", help="leave jaxprs out of the report")
    @argument("--hlo", action="store_true", help="include each function's optimized HLO text")
    @argument(
        "--trace",
        nargs="?",
        const="",
        default=None,
        metavar="DIR",
        help="also record a jax.profiler trace (in DIR, or a new temporary folder) and "
        "show device time per function and a timeline; in line mode write --trace=DIR",
    )
    @no_var_expand
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
        args, statement = parse(self.jaxprofile, line, expression=cell is None)
        if cell is None:
            source = statement
            if not source.strip():
                raise UsageError(
                    "%jaxprofile needs a statement, e.g. %jaxprofile f(x); use %%jaxprofile for a whole cell"
                )
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
        # Name the code after the cell it is in (shell.execution_count may already point at
        # the next cell), so tracebacks and reports say In[n] of this cell.
        filename = shell.compile.cache(transformed, _calling_cell_number(shell), raw_code=source)
        try:
            tree = shell.compile.ast_parse(transformed, filename=filename)
        except SyntaxError as e:
            return _show_syntax_error(shell, e, filename)
        body, last = _split_last_expression(tree)
        code_body = _compile(shell, body, filename, "exec")
        code_last = _compile(shell, last, filename, "eval") if last is not None else None

        result, error = None, None
        prof = Profiler()
        tracer = TraceSession(args.trace) if args.trace is not None else None
        try:
            with prof:
                if tracer is not None:
                    tracer.start()
                try:
                    _run(shell, code_body)
                    if code_last is not None:
                        result = _run(shell, code_last)
                finally:
                    if tracer is not None:
                        tracer.stop()
        except BaseException as e:
            error = e
        report = prof.report(
            cell_file=filename,
            jaxpr=not args.no_jaxpr,
            hlo=args.hlo,
            label=label,
            error=_describe(error),
            trace=tracer.summary() if tracer is not None else None,
            cell_label=partial(cell_label, shell),
            extra_roots=_value_root(shell, result, args, transformed),
        )
        if args.json:
            _write_json(report, args.json)
        from IPython.display import display

        if not args.quiet and not args.output:  # with -o the returned report is displayed
            display(report)
        if error is not None:
            raise error.with_traceback(_user_frames(error.__traceback__, filename))
        if _ends_with_semicolon(transformed):
            result = None  # IPython's "show nothing" for a cell ending in ';'
        if args.output:
            if result is not None:
                display(result)  # the cell's own value is still shown
            return report
        return result


def _value_root(shell: Any, result: Any, args: Any, source: str) -> tuple:
    """The cell's displayed value as an owner for the memory section: IPython stores it as
    ``Out[n]`` once the magic returns (with ``-o`` it is only shown, and then freed)."""
    if result is None or _ends_with_semicolon(source):
        return ()
    from jaxmagic.memories.live import RESET_OUT
    from jaxmagic.memories.owners import Root

    if args.output:
        return (Root("the cell's value (shown, not kept)", "history", result),)
    return (Root(f"Out[{shell.execution_count}]", "history", result, RESET_OUT),)


def _ends_with_semicolon(source: str) -> bool:
    from IPython.core.displayhook import DisplayHook

    try:
        return DisplayHook.semicolon_at_end_of_expression(source)
    except Exception:  # tokenize errors: the cell compiled, so it has no trailing ';' issue
        return False


def _calling_cell_number(shell: Any) -> int:
    """The number of the cell whose code called this magic (``In[n]``)."""
    frame = sys._getframe(1)
    while frame is not None:
        label = cell_label(shell, frame.f_code.co_filename)
        if label and label.startswith("In[") and label[3:-1].isdigit():
            return int(label[3:-1])
        frame = frame.f_back
    return shell.execution_count


def _compile(shell: Any, tree: ast.AST, filename: str, mode: str) -> Any:
    """Compile like IPython does, top-level ``await`` allowed (as in an unprofiled cell)."""
    flags = shell.compile.flags | ast.PyCF_ALLOW_TOP_LEVEL_AWAIT
    return compile(tree, filename, mode, flags, dont_inherit=True)


def _run(shell: Any, code: Any) -> Any:
    """Run compiled cell code; a cell with top-level ``await`` runs to completion on an event
    loop of this thread (the kernel's own loop is blocked while the magic runs)."""
    __tracebackhide__ = True
    value = eval(code, shell.user_global_ns, shell.user_ns)  # noqa: S307 - the user's cell
    if not code.co_flags & inspect.CO_COROUTINE:
        return value
    outer = asyncio.events._get_running_loop()
    if outer is None:
        return shell.loop_runner(value)
    asyncio.events._set_running_loop(None)
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(value)
    finally:
        loop.close()
        asyncio.events._set_running_loop(outer)


def _user_frames(tb: Any, filename: str) -> Any:
    """The traceback from the first frame of the cell's own code on (no jaxmagic frames)."""
    first = tb
    while first is not None and first.tb_frame.f_code.co_filename != filename:
        first = first.tb_next
    return first if first is not None else tb


def _show_syntax_error(shell: Any, error: SyntaxError, filename: str) -> None:
    """Show a cell's SyntaxError as IPython does for an unprofiled cell (no jaxmagic frames,
    nothing run, no report) and mark the execution as failed."""
    try:
        raise error.with_traceback(None)
    except SyntaxError:
        shell.showsyntaxerror(filename)
    exec_result = getattr(shell.displayhook, "exec_result", None)
    if exec_result is not None:
        exec_result.error_in_exec = error
    return None


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
