"""``%jaxmemory`` (what is alive and who holds it) and ``%jaxplan`` (will a step fit)."""

from __future__ import annotations

from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class, no_var_expand
from IPython.core.magic_arguments import argument, magic_arguments

from jaxmagic.magics._args import parse, show


@magics_class
class MemoryMagics(Magics):
    """Device-memory views."""

    @magic_arguments()
    @argument("--top", type=int, default=20, help="list the N largest arrays (default 20; all are in to_dict())")
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
            report = memory(self.shell.user_ns, top=args.top, device=args.device,
                            hidden=getattr(self.shell, "user_ns_hidden", ()))
        except (ValueError, TypeError) as e:
            raise UsageError(f"%jaxmemory: {e}") from None
        return show(report, args)
