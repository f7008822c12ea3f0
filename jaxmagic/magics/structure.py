"""``%jaxtree``, ``%jaxsharding`` and ``%jaxdevices``: thin adapters over jaxmagic.tree,
jaxmagic.sharding and jaxmagic.devices (no jax import at module import time)."""

from __future__ import annotations

from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments

from jaxmagic.magics._args import parse as _parse

_USER_ERRORS = (ValueError, TypeError, KeyError, FileNotFoundError)


class _Base(Magics):
    def _eval(self, expr: str, what: str = "EXPR") -> Any:
        if not expr.strip():
            raise UsageError(f"missing {what}: give an expression to evaluate")
        try:
            return eval(expr, self.shell.user_global_ns, self.shell.user_ns)  # noqa: S307 - the user's own code
        except Exception as e:
            raise UsageError(f"could not evaluate {expr!r}: {type(e).__name__}: {e}") from None

    def _show(self, result: Any, args: Any, display_obj: Any = None) -> Any:
        if not args.quiet:
            from IPython.display import display

            display(display_obj if display_obj is not None else result)
        return result if args.output else None


@magics_class
class StructureMagics(_Base):
    @magic_arguments()
    @argument("expr", nargs="*", help="expression: a PyTree, NNX module/state, Linen variables, Optax state, or a checkpoint path")
    @argument("--depth", type=int, default=None, help="fold the table at N path components")
    @argument("--kind", default=None, help="only leaves of this kind (Param, BatchStat, RngState, OptState, ...)")
    @argument("--grep", default=None, help="only leaves whose path matches this regular expression")
    @argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
    @argument("--deep", action="store_true", help="always include the treescope deep view")
    @argument("-o", "--output", action="store_true", help="return the TreeSummary")
    @argument("-q", "--quiet", action="store_true", help="display nothing")
    @line_magic
    def jaxtree(self, line: str = "") -> Any:
        """Summarise the structure of a tree: paths, kinds, shapes, bytes, shardings, totals.

        Example: ``%jaxtree model --kind Param --depth 1``
        """
        args = _parse(self.jaxtree, line)
        expr = " ".join(args.expr)
        obj = self._eval(expr)
        from jaxmagic.trees import tree

        try:
            result = tree(obj, depth=args.depth, kind=args.kind, grep=args.grep, step=args.step,
                          name=expr, deep=True if args.deep else "auto")
        except _USER_ERRORS as e:
            raise UsageError(f"%jaxtree {expr}: {e}") from None
        return self._show(result, args)

    @magic_arguments()
    @argument("expr", nargs="*", help="expression: a jax.Array, NamedSharding, Mesh, PartitionSpec, PyTree/NNX state or Compiled")
    @argument("--mesh", default=None, help="expression for the mesh (with a PartitionSpec)")
    @argument("--shape", default=None, help="array shape, e.g. 1024,4096 (with a Mesh, sharding or spec)")
    @argument("--spec", default=None, help="PartitionSpec text, e.g. \"data, model\" (with a Mesh)")
    @argument("--dtype", default="float32", help="element type for byte counts when only a shape is given")
    @argument("--dims", default=None, help="the two array dimensions drawn as the grid, e.g. 0,2")
    @argument("--static", action="store_true", help="show the static report instead of the explorer widget")
    @argument("-o", "--output", action="store_true", help="return the ShardingReport")
    @argument("-q", "--quiet", action="store_true", help="display nothing")
    @line_magic
    def jaxsharding(self, line: str = "") -> Any:
        """Show where every shard lives on the mesh, interactively (edit a spec, pick dims).

        Example: ``%jaxsharding state`` or ``%jaxsharding mesh --shape 8,16 --spec "data, model"``
        """
        args = _parse(self.jaxsharding, line)
        expr = " ".join(args.expr)
        obj = self._eval(expr) if expr.strip() else None
        mesh = self._eval(args.mesh, "--mesh") if args.mesh else None
        try:
            shape = tuple(int(s) for s in args.shape.replace("(", "").replace(")", "").split(",") if s.strip()) if args.shape else None
            dims = tuple(int(s) for s in args.dims.split(",")) if args.dims else None
        except ValueError:
            raise UsageError(f"--shape and --dims take comma-separated integers, got {args.shape or args.dims!r}") from None
        if obj is None and args.spec is None:
            raise UsageError("missing EXPR: give an array, a tree, a sharding, a mesh (with --shape and --spec) or a spec")
        from jaxmagic.shardings import sharding

        try:
            result = sharding(obj, mesh=mesh, spec=args.spec, shape=shape, dtype=args.dtype, dims=dims,
                              name=expr or "array")
        except _USER_ERRORS as e:
            raise UsageError(f"%jaxsharding {expr}: {e}") from None
        view = None
        if not args.static and not args.quiet and result.arrays:
            view = result.explore()
        return self._show(result, args, view)

    @magic_arguments()
    @argument("-o", "--output", action="store_true", help="return the DevicesReport")
    @argument("-q", "--quiet", action="store_true", help="display nothing")
    @line_magic
    def jaxdevices(self, line: str = "") -> Any:
        """List JAX devices: id, platform, kind, process, local or not, memory stats."""
        args = _parse(self.jaxdevices, line)
        from jaxmagic.shardings.devices import devices

        return self._show(devices(), args)
