"""``%jaxcompiles``: the session compile ledger (every compile since ``%load_ext jaxmagic``)."""

from __future__ import annotations

import json
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class, no_var_expand
from IPython.core.magic_arguments import argument, magic_arguments

from jaxmagic.magics._args import cell_label, parse, show


@magics_class
class LedgerMagics(Magics):
    """The compile ledger."""

    @magic_arguments()
    @argument("--since", type=int, default=None, metavar="CELL", help="only compiles from cell In[CELL] on")
    @argument("--reset", action="store_true", help="forget every compile recorded so far")
    @argument(
        "--json", default=None, metavar="PATH", help="also write the report's to_dict() as JSON to PATH"
    )
    @argument(
        "-o", "--output", action="store_true", help="return the CompileLedgerReport instead of displaying it"
    )
    @argument("-q", "--quiet", action="store_true", help="display nothing")
    @no_var_expand
    @line_magic
    def jaxcompiles(self, line: str = "") -> Any:
        """Every compile of this session, profiled cell or not, by call site and costliest first:
        count, trace / lower / backend-compile time, the persistent-cache outcome (hit, miss,
        below the minimum compile time, not configured) and fixes with what each would save.

        Example: ``%jaxcompiles --since 5``; ``%jaxcompiles --reset``.
        """
        args, expr = parse(self.jaxcompiles, line)
        if expr:
            raise UsageError(f"%jaxcompiles takes no expression, got {expr!r} (see %jaxcompiles?)")
        from jaxmagic.ledger import active

        ledger = active()
        if ledger is None:
            raise UsageError("%jaxcompiles: the compile ledger is not running; run %load_ext jaxmagic")
        if args.reset:
            forgotten = sum(g.count for g in ledger.groups.values())
            ledger.reset()
            if not args.quiet:
                print(f"compile ledger cleared ({forgotten} compiles forgotten)")
            return None
        report = ledger.report(since=args.since)
        if args.json:
            try:
                with open(args.json, "w", encoding="utf-8") as fh:
                    json.dump(report.to_dict(), fh, indent=1)
            except OSError as e:
                raise UsageError(f"%jaxcompiles: cannot write {args.json!r}: {e.strerror or e}") from None
        return show(report, args)


def install_ledger(shell: Any) -> None:
    """Start the session's compile ledger (replacing any earlier one: one listener after reloads)."""
    from jaxmagic.ledger import start

    start(label_file=lambda f: cell_label(shell, f))


def uninstall_ledger(shell: Any) -> None:
    """Remove the ledger's listeners and records."""
    from jaxmagic.ledger import stop

    stop()
