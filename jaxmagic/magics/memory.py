"""``%jaxmemory`` (what is alive and who holds it) and ``%jaxplan`` (will a step fit)."""

from __future__ import annotations

from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class, no_var_expand
from IPython.core.magic_arguments import argument, magic_arguments

from jaxmagic.magics._args import cell_label, evaluate, evaluate_call, parse, show


@magics_class
class MemoryMagics(Magics):
    """Device-memory views."""

    @magic_arguments()
    @argument(
        "--top", type=int, default=20, help="list the N largest arrays (default 20; all are in to_dict())"
    )
    @argument("--device", default=None, help="only this device, e.g. 0 or cpu:3")
    @argument("-o", "--output", action="store_true", help="return the MemoryReport instead of displaying it")
    @argument("-q", "--quiet", action="store_true", help="display nothing")
    @no_var_expand
    @line_magic
    def jaxmemory(self, line: str = "") -> Any:
        """Every live device array grouped by the name that holds it (variables, the output
        history ``Out[n]``/``_``, or no name), bytes per device, and what ``del``/``%reset -f out``
        would free. Example: ``%jaxmemory --top 5``."""
        args, expr = parse(self.jaxmemory, line)
        if expr:
            raise UsageError(f"%jaxmemory takes no expression, got {expr!r} (see %jaxmemory?)")
        from jaxmagic.memories import memory

        try:
            report = memory(top=args.top, device=args.device)  # this shell's namespaces
        except (ValueError, TypeError) as e:
            raise UsageError(f"%jaxmemory: {e}") from None
        return show(report, args)

    @magic_arguments()
    @argument(
        "call",
        nargs="*",
        help="the call to plan, e.g. step(state, batch); arguments may be jax.ShapeDtypeStruct",
    )
    @argument("--mesh", default=None, help="expression for a jax.sharding.Mesh to lay the arguments out on")
    @argument(
        "--specs",
        default=None,
        help="expression: one PartitionSpec (or None, or a pytree of specs) "
        "per positional argument, e.g. specs or '(None, P(\"data\"))'; needs --mesh",
    )
    @argument(
        "--device",
        default=None,
        help="compare the peak with a device: h100, h200, a100-80g, a100-40g, "
        "tpu-v5e, tpu-v5p, ... or a size such as 80GiB",
    )
    @argument(
        "--batch-sweep",
        action="store_true",
        help="also find the largest batch (dimension 0 of the last "
        "positional argument) that fits --device, by compiling only",
    )
    @argument("-o", "--output", action="store_true", help="return the PlanReport instead of displaying it")
    @argument("-q", "--quiet", action="store_true", help="display nothing")
    @no_var_expand
    @line_magic
    def jaxplan(self, line: str = "") -> Any:
        """Will a call fit? Compile it without running it and show, per device: memory
        (arguments, outputs, temporaries, aliased, code → peak), FLOPs, bytes accessed and
        the collectives XLA inserted with their mesh axes, bytes and source lines.

        Example: ``%jaxplan --mesh mesh --specs "(None, P('data'))" --device h100 step(state, batch)``
        (state replicated, batch split over ``data``).
        """
        args, expr = parse(self.jaxplan, line)
        fn, call_args, call_kwargs = evaluate_call(self.shell, "jaxplan", expr)
        mesh = evaluate(self.shell, "jaxplan", args.mesh, "a mesh") if args.mesh else None
        specs = (
            evaluate(self.shell, "jaxplan", args.specs, "a tuple of PartitionSpecs") if args.specs else None
        )
        from jaxmagic.ir import NotTraceableError
        from jaxmagic.memories.plan import plan

        try:
            report = plan(
                fn,
                *call_args,
                mesh=mesh,
                specs=specs,
                device=args.device,
                batch_sweep=args.batch_sweep,
                label_file=lambda f: cell_label(self.shell, f),
                **call_kwargs,
            )
        except (NotTraceableError, TypeError, ValueError) as e:
            raise UsageError(f"%jaxplan: {e}") from None
        return show(report, args)


# --- OOM explained: a post_run_cell listener --------------------------------------------------
# A listener, not set_custom_exc: IPython has shown the traceback, untouched, before
# post_run_cell runs, in the terminal and in a kernel alike, and the exception stays the
# cell's error (sys.last_value, the kernel's error reply). set_custom_exc would replace
# IPython's traceback printing and allows one handler per shell.

_MARK = "_jaxmagic_oom_listener"


def _oom_listener(shell: Any) -> Any:
    def post_run_cell(result: Any) -> None:
        exc = getattr(result, "error_in_exec", None)
        if (
            exc is None
            or "RESOURCE_EXHAUSTED" not in str(exc)
            and exc.__cause__ is None
            and exc.__context__ is None
        ):
            return  # the common case costs one str()
        try:
            from jaxmagic.memories.oom import explain_oom, find_resource_exhausted

            if find_resource_exhausted(exc) is None:
                return
            import sys

            from IPython.display import display

            tb = sys.last_traceback if getattr(sys, "last_value", None) is exc else None
            display(
                explain_oom(exc, tb=tb, label_file=lambda f: cell_label(shell, f))
            )  # this shell's namespaces
        except Exception as e:  # never turn one error into two
            print(f"jaxmagic: could not explain the out-of-memory error ({type(e).__name__}: {e})")

    setattr(post_run_cell, _MARK, True)
    return post_run_cell


def install_oom_listener(shell: Any) -> None:
    """Explain ``RESOURCE_EXHAUSTED`` errors under their traceback; replaces any earlier one."""
    uninstall_oom_listener(shell)
    shell.events.register("post_run_cell", _oom_listener(shell))


def uninstall_oom_listener(shell: Any) -> None:
    """Remove every listener :func:`install_oom_listener` added (also ones from before a reload)."""
    callbacks = shell.events.callbacks.get("post_run_cell", [])
    for cb in [cb for cb in callbacks if getattr(cb, _MARK, False)]:
        shell.events.unregister("post_run_cell", cb)
