"""``%jaxtree``, ``%jaxsharding`` and ``%jaxdevices``: thin adapters over jaxmagic.tree,
jaxmagic.sharding and jaxmagic.devices (no jax import at module import time)."""

from __future__ import annotations

from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class, no_var_expand
from IPython.core.magic_arguments import argument, magic_arguments

from jaxmagic.magics._args import (
    cell_label,
    evaluate,
    evaluate_call,
    evaluate_path_or_expression,
    parse,
    show,
)

_USER_ERRORS = (ValueError, TypeError, KeyError, FileNotFoundError)


@magics_class
class StructureMagics(Magics):
    """Structure, sharding and device views."""

    @magic_arguments()
    @argument(
        "expr",
        nargs="*",
        help="expression: a PyTree, NNX module/state, Linen variables, Optax state, or a checkpoint path",
    )
    @argument("--depth", type=int, default=None, help="fold the table at N path components")
    @argument(
        "--kind", default=None, help="only leaves of this kind (Param, BatchStat, RngState, OptState, ...)"
    )
    @argument("--grep", default=None, help="only leaves whose path matches this regular expression")
    @argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
    @argument("--deep", action="store_true", help="always include the treescope deep view")
    @argument("-o", "--output", action="store_true", help="return the TreeSummary instead of displaying it")
    @argument("-q", "--quiet", action="store_true", help="display nothing")
    @no_var_expand
    @line_magic
    def jaxtree(self, line: str = "") -> Any:
        """Summarise the structure of a tree: paths, kinds, shapes, bytes, shardings, totals.

        Examples: ``%jaxtree model --kind Param --depth 1``, ``%jaxtree /tmp/ckpt --step 100``
        (a bare path is read as a checkpoint directory).
        """
        args, expr = parse(self.jaxtree, line)
        obj = evaluate_path_or_expression(
            self.shell, "jaxtree", expr, "a tree, a module or a checkpoint path"
        )
        from jaxmagic.trees import tree

        try:
            result = tree(
                obj,
                depth=args.depth,
                kind=args.kind,
                grep=args.grep,
                step=args.step,
                name=expr,
                deep=True if args.deep else "auto",
            )
        except _USER_ERRORS as e:
            raise UsageError(f"%jaxtree {expr}: {e}") from None
        return show(result, args)

    @magic_arguments()
    @argument(
        "expr",
        nargs="*",
        help="expression: a jax.Array, NamedSharding, Mesh, PartitionSpec, PyTree/NNX state or Compiled",
    )
    @argument("--mesh", default=None, help="expression for the mesh (with a PartitionSpec)")
    @argument("--shape", default=None, help="array shape, e.g. 1024,4096 (with a Mesh, sharding or spec)")
    @argument("--spec", default=None, help='PartitionSpec text, e.g. "data, model" (with a Mesh)')
    @argument("--dtype", default="float32", help="element type for byte counts when only a shape is given")
    @argument("--dims", default=None, help="the two array dimensions drawn as the grid, e.g. 0,2")
    @argument("--static", action="store_true", help="show the static report instead of the explorer widget")
    @argument(
        "--plan",
        default=None,
        metavar="CALL",
        help='plan mode: lay out the inputs of a call, e.g. --plan "step(state, batch)", and show its '
        "per-device peak memory and collectives for the layout, planned again on every spec edit "
        "(compiled, never run); needs --mesh unless the inputs are on one",
    )
    @argument(
        "--specs",
        default=None,
        help="with --plan: expression, one PartitionSpec (or None, or a pytree of specs) per "
        "positional argument, e.g. '(None, P(\"data\"))'",
    )
    @argument(
        "-o", "--output", action="store_true", help="return the ShardingReport instead of displaying it"
    )
    @argument("-q", "--quiet", action="store_true", help="display nothing")
    @no_var_expand
    @line_magic
    def jaxsharding(self, line: str = "") -> Any:
        """Show where every shard lives on the mesh, interactively (edit a spec, pick dims).

        Example: ``%jaxsharding state`` or ``%jaxsharding mesh --shape 8,16 --spec "data, model"``;
        plan mode: ``%jaxsharding --plan "step(state, batch)" --mesh mesh --specs specs``.
        """
        args, expr = parse(self.jaxsharding, line)
        if args.plan is not None:
            return self._plan_mode(args, expr)
        if args.specs is not None:
            raise UsageError("%jaxsharding: --specs goes with --plan CALL (for one array, use --spec)")
        given = bool(expr)
        obj = evaluate(self.shell, "jaxsharding", expr) if given else None
        mesh = evaluate(self.shell, "jaxsharding", args.mesh) if args.mesh else None
        try:
            shape = (
                tuple(int(s) for s in args.shape.replace("(", "").replace(")", "").split(",") if s.strip())
                if args.shape
                else None
            )
            dims = tuple(int(s) for s in args.dims.split(",")) if args.dims else None
        except ValueError:
            raise UsageError(
                f"--shape and --dims take comma-separated integers, got {args.shape or args.dims!r}"
            ) from None
        if not given and args.spec is None:
            raise UsageError(
                "%jaxsharding: missing EXPR: give an array, a tree, a sharding, a mesh "
                "(with --shape and --spec) or a spec, e.g. %jaxsharding x (see %jaxsharding?)"
            )
        if given and obj is None:
            raise UsageError(
                f"%jaxsharding: {expr} is None; give an array, a tree of arrays, a sharding, a mesh or a spec"
            )
        from jaxmagic.shardings import sharding

        try:
            result = sharding(
                obj, mesh=mesh, spec=args.spec, shape=shape, dtype=args.dtype, dims=dims, name=expr or "array"
            )
        except _USER_ERRORS as e:
            raise UsageError(f"%jaxsharding {expr}: {e}") from None
        view = None
        if not (args.static or args.quiet or args.output) and result.arrays:
            view = result.explore()
        return show(result, args, view)

    def _plan_mode(self, args: Any, expr: str) -> Any:
        if expr or args.shape or args.spec:
            raise UsageError(
                f"%jaxsharding --plan takes the call and --mesh/--specs only, not {expr or '--shape/--spec'!r}"
            )
        fn, call_args, call_kwargs = evaluate_call(self.shell, "jaxsharding", args.plan)
        mesh = evaluate(self.shell, "jaxsharding", args.mesh, "a mesh") if args.mesh else None
        specs = (
            evaluate(self.shell, "jaxsharding", args.specs, "a tuple of PartitionSpecs")
            if args.specs
            else None
        )
        try:
            dims = tuple(int(s) for s in args.dims.split(",")) if args.dims else None
        except ValueError:
            raise UsageError(f"--dims takes comma-separated integers, got {args.dims!r}") from None
        from jaxmagic.shardings import sharding

        try:
            result = sharding(
                fn=fn,
                args=call_args,
                kwargs=call_kwargs,
                mesh=mesh,
                specs=specs,
                dims=dims,
                label_file=lambda f: cell_label(self.shell, f),
            )
        except _USER_ERRORS as e:  # NotTraceableError and SpecError are ValueErrors
            raise UsageError(f"%jaxsharding --plan {args.plan}: {e}") from None
        view = result.explore() if not (args.static or args.quiet or args.output) else None
        return show(result, args, view)

    @magic_arguments()
    @argument("-o", "--output", action="store_true", help="return the DevicesReport instead of displaying it")
    @argument("-q", "--quiet", action="store_true", help="display nothing")
    @no_var_expand
    @line_magic
    def jaxdevices(self, line: str = "") -> Any:
        """List JAX devices: id, platform, kind, process, local or not, memory stats."""
        args, expr = parse(self.jaxdevices, line)
        if expr:
            raise UsageError(f"%jaxdevices takes no expression, got {expr!r} (see %jaxdevices?)")
        from jaxmagic.shardings.devices import devices

        return show(devices(), args)
