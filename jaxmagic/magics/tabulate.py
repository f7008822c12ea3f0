"""``%jaxtabulate model(x)``: per-layer parameters, FLOPs, bytes and output shapes."""

from __future__ import annotations

from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class, no_var_expand
from IPython.core.magic_arguments import argument, magic_arguments

from jaxmagic.magics._args import evaluate_call, parse, show


@magics_class
class TabulateMagics(Magics):
    """Per-layer cost."""

    @magic_arguments()
    @argument("call", nargs="*", help="the model call, e.g. model(x); arguments may be jax.ShapeDtypeStruct")
    @argument(
        "-o", "--output", action="store_true", help="return the LayerCostReport instead of displaying it"
    )
    @argument("-q", "--quiet", action="store_true", help="display nothing")
    @argument(
        "--time",
        action="store_true",
        help="also measure device time per layer: run the call a few times under a jax.profiler "
        "trace, on a copy of the model's state (the model is not changed)",
    )
    @no_var_expand
    @line_magic
    def jaxtabulate(self, line: str = "") -> Any:
        """Per-layer cost of one Flax NNX model call (Linen modules through ``nnx.bridge.ToNNX``),
        without running it on data: one row per submodule call with path, input and output
        types, parameters (count, bytes), FLOPs and bytes accessed (XLA's cost analysis of that
        call compiled alone) and output bytes; with ``--time`` the device time of each call,
        inclusive and self.

        Example: ``%jaxtabulate model(jnp.ones((8, 784)))``, ``%jaxtabulate --time model(x)``.
        """
        args, expr = parse(self.jaxtabulate, line)
        fn, call_args, call_kwargs = evaluate_call(self.shell, "jaxtabulate", expr)
        from jaxmagic.layercost import LayerCallError, tabulate

        try:
            report = tabulate(fn, *call_args, time=args.time, **call_kwargs)
        except (TypeError, LayerCallError) as e:
            raise UsageError(f"%jaxtabulate: {e}") from None
        return show(report, args)
