"""``%jaxdiff A B``: compare two profile reports (objects or ``%%jaxprofile --json`` files)."""

from __future__ import annotations

import json
import re
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class, no_var_expand
from IPython.core.magic_arguments import argument, magic_arguments

from jaxmagic.magics._args import evaluate_path_or_expression, parse, show

# Two operands: names, expressions without spaces, or quoted paths.
_OPERAND = re.compile(r"""(?:"[^"]*"|'[^']*'|[^\s"'])+""")


@magics_class
class DiffMagics(Magics):
    """Comparing runs."""

    @magic_arguments()
    @argument(
        "--json", default=None, metavar="PATH", help="also write the comparison's to_dict() as JSON to PATH"
    )
    @argument(
        "-o", "--output", action="store_true", help="return the ComparisonReport instead of displaying it"
    )
    @argument("-q", "--quiet", action="store_true", help="display nothing")
    @no_var_expand
    @line_magic
    def jaxdiff(self, line: str = "") -> Any:
        """Compare profile report B against A: per function compile and device time with B/A
        ratios, FLOPs and temporary memory, compiles that appeared or vanished, cache-miss
        reasons new in B, and for reports made with ``%%jaxprofile --hlo`` how each function's
        optimized HLO changed (fusions, ops by kind, collectives); largest impact first. A and B
        are ``ProfileReport`` objects (``%%jaxprofile -o``) or files written by
        ``%%jaxprofile --json``.

        Example: ``%jaxdiff before after`` or ``%jaxdiff runs/a.json runs/b.json``.
        """
        args, expr = parse(self.jaxdiff, line)
        operands = _OPERAND.findall(expr)
        if len(operands) != 2:
            raise UsageError(
                f"%jaxdiff needs two reports, A and B (names or --json files), got {len(operands)}: "
                f"{expr!r} (see %jaxdiff?)"
            )
        values = []
        for text in operands:
            if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
                values.append(text[1:-1])  # a quoted path
            else:
                values.append(evaluate_path_or_expression(self.shell, "jaxdiff", text, "a profile report"))
        from jaxmagic.diff import compare

        try:
            report = compare(values[0], values[1], labels=(operands[0], operands[1]))
        except (TypeError, ValueError) as e:
            raise UsageError(f"%jaxdiff: {e}") from None
        if args.json:
            try:
                with open(args.json, "w", encoding="utf-8") as fh:
                    json.dump(report.to_dict(), fh, indent=1)
            except OSError as e:
                raise UsageError(f"%jaxdiff: cannot write {args.json!r}: {e.strerror or e}") from None
        return show(report, args)
