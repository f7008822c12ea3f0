"""Per-layer cost: record every submodule call of one abstract run, then compile each call
alone for XLA's cost analysis.

1. ``nnx.eval_shape`` runs the model once on abstract values (no compute, the user's model
   untouched) with ``__call__`` of each submodule class wrapped for the duration; each call
   records its module path, inputs and outputs as shapes.
2. Each recorded call is compiled on its own (``jax.jit`` over the split state, shapes only)
   and ``cost_analysis()`` gives its FLOPs and bytes accessed. Rows are inclusive: a parent
   counts its children; ``self`` is the parent's own work.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np

from jaxmagic._format import shape_str


class LayerCallError(ValueError):
    """The model (or one of its layers) raised when called on the given inputs."""


@dataclass
class _Call:
    path: tuple
    module: Any  # the abstract copy made by nnx.eval_shape
    args: tuple
    kwargs: dict
    outputs: Any
    depth: int


def _abstract(tree: Any) -> Any:
    return jax.tree.map(
        lambda t: (
            jax.ShapeDtypeStruct(t.shape, t.dtype) if hasattr(t, "shape") and hasattr(t, "dtype") else t
        ),
        tree,
    )


def _types(tree: Any) -> str:
    leaves = [x for x in jax.tree.leaves(tree) if hasattr(x, "shape") and hasattr(x, "dtype")]
    return ", ".join(shape_str(x.shape, x.dtype) for x in leaves[:4]) + (", …" if len(leaves) > 4 else "")


def _bytes(tree: Any) -> int:
    return sum(
        int(np.prod(x.shape)) * np.dtype(x.dtype).itemsize
        for x in jax.tree.leaves(tree)
        if hasattr(x, "shape") and hasattr(x, "dtype")
    )


@contextlib.contextmanager
def _recording(classes: set[type], calls: list[_Call], paths: dict[int, tuple]):
    """Wrap ``__call__`` of ``classes`` (restored on exit, also when the call raises)."""
    originals = {cls: cls.__dict__.get("__call__") for cls in classes}
    # Resolved before any class is patched: a subclass that inherits __call__ wraps the
    # base's original, not the base's wrapper.
    targets = {cls: cls.__call__ for cls in classes}
    stack: list[int] = []  # ids of the modules being called, outermost first

    def make(original: Any) -> Any:
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            path = paths.get(id(self))
            if path is None or (stack and stack[-1] == id(self)):  # super().__call__: one call
                return original(self, *args, **kwargs)
            stack.append(id(self))
            call = _Call(path, self, _abstract(args), _abstract(kwargs), None, len(stack) - 1)
            calls.append(call)
            try:
                out = original(self, *args, **kwargs)
            except Exception as e:
                if not getattr(e, "_jaxmagic_layer", None):
                    e._jaxmagic_layer = path  # type: ignore[attr-defined]
                raise
            finally:
                stack.pop()
            call.outputs = _abstract(out)
            return out

        return __call__

    for cls in classes:
        cls.__call__ = make(targets[cls])
    try:
        yield
    finally:
        for cls, original in originals.items():
            if original is None:
                del cls.__call__
            else:
                cls.__call__ = original


def _cost(module: Any, args: tuple, kwargs: dict) -> dict[str, float | None]:
    from flax import nnx

    graphdef, state = nnx.split(module)

    def run(state: Any, args: tuple, kwargs: dict) -> Any:
        return nnx.merge(graphdef, state)(*args, **kwargs)

    arrays = jax.tree.map(lambda x: x, (args, kwargs))
    dyn, static = [], []
    flat, treedef = jax.tree.flatten(arrays)
    for x in flat:
        (dyn if isinstance(x, jax.ShapeDtypeStruct) else static).append(x)

    def closed(state: Any, dyn: list) -> Any:
        it, out = iter(dyn), []
        for x in flat:
            out.append(next(it) if isinstance(x, jax.ShapeDtypeStruct) else x)
        a, k = jax.tree.unflatten(treedef, out)
        return run(state, a, k)

    compiled = jax.jit(closed).lower(_abstract(state), dyn).compile()
    analysis = compiled.cost_analysis()
    if isinstance(analysis, list):  # older jax: one dict per program
        analysis = analysis[0] if analysis else {}
    analysis = analysis or {}

    def get(key: str) -> float | None:
        v = analysis.get(key)
        return float(v) if v is not None and v >= 0 else None

    return {"flops": get("flops"), "bytes_accessed": get("bytes accessed")}


def tabulate(model: Any, *args: Any, **kwargs: Any):
    """Per-layer cost of ``model(*args, **kwargs)`` for a Flax NNX module.

    One row per submodule call (a layer called twice gives two rows): path, module type,
    input and output types, parameters (count, bytes), FLOPs and bytes accessed from XLA's
    cost analysis of that call compiled alone, and output (activation) bytes. The first row
    is the whole call. Nothing runs on real data and the model is not changed.

    Raises ``TypeError`` for a non-NNX model and ``LayerCallError`` (naming the layer) when the
    call raises, e.g. on inputs of the wrong shape.

    Example::

        jaxmagic.tabulate(model, jnp.ones((8, 784)))
    """
    from flax import nnx

    from jaxmagic.layercost.report import LayerCostReport, LayerRow

    if not isinstance(model, nnx.Module):
        raise TypeError(f"tabulate needs a Flax NNX module (nnx.Module); got {type(model).__name__}")
    classes = {type(m) for _, m in nnx.iter_modules(model)}
    params = {
        path: (
            sum(int(np.prod(v.shape)) for v in jax.tree.leaves(nnx.state(m, nnx.Param))),
            _bytes(nnx.state(m, nnx.Param)),
        )
        for path, m in nnx.iter_modules(model)
    }
    calls: list[_Call] = []

    def run(m: Any, args: tuple, kwargs: dict) -> Any:
        paths = {id(sub): path for path, sub in nnx.iter_modules(m)}
        with _recording(classes, calls, paths):
            return m(*args, **kwargs)

    try:
        nnx.eval_shape(run, model, args, kwargs)
    except Exception as e:
        path = getattr(e, "_jaxmagic_layer", None)
        where = f"layer {_path_str(path)!r} ({_type_at(model, path)})" if path else "the model"
        raise LayerCallError(
            f"{where} raised {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        ) from e
    real = dict(nnx.iter_modules(model))
    rows = []
    for call in calls:
        cost = _cost(real.get(call.path, call.module), call.args, call.kwargs)
        count, nbytes = params.get(call.path, (0, 0))
        rows.append(
            LayerRow(
                path=_path_str(call.path),
                depth=call.depth,
                module=type(call.module).__name__,
                inputs=_types((call.args, call.kwargs)),
                outputs=_types(call.outputs),
                params=count,
                param_bytes=nbytes,
                flops=cost["flops"],
                bytes_accessed=cost["bytes_accessed"],
                output_bytes=_bytes(call.outputs),
            )
        )
    return LayerCostReport(model=type(model).__name__, rows=tuple(rows))


def _path_str(path: tuple | None) -> str:
    return "/".join(str(p) for p in path) if path else "(model)"


def _type_at(model: Any, path: tuple) -> str:
    from flax import nnx

    for p, m in nnx.iter_modules(model):
        if p == path:
            return type(m).__name__
    return "?"
