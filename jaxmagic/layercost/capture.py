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

from typing import Any

import jax
import numpy as np

from jaxmagic._format import shape_str
from jaxmagic.layercost.recording import Call, abstract, recording


class LayerCallError(ValueError):
    """The model (or one of its layers) raised when called on the given inputs."""


def _types(tree: Any) -> str:
    leaves = [x for x in jax.tree.leaves(tree) if hasattr(x, "shape") and hasattr(x, "dtype")]
    return ", ".join(shape_str(x.shape, x.dtype) for x in leaves[:4]) + (", …" if len(leaves) > 4 else "")


def _bytes(tree: Any) -> int:
    return sum(
        int(np.prod(x.shape)) * np.dtype(x.dtype).itemsize
        for x in jax.tree.leaves(tree)
        if hasattr(x, "shape") and hasattr(x, "dtype")
    )


def _count(tree: Any) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(tree) if hasattr(x, "shape"))


def split_arrays(args: tuple, kwargs: dict) -> tuple[list, Any]:
    """``(dynamic leaves, rebuild)``: the array leaves of ``(args, kwargs)`` to pass to a jitted
    function, and ``rebuild(dynamic) -> (args, kwargs)`` with the other leaves put back."""
    flat, treedef = jax.tree.flatten((args, kwargs))
    is_dyn = [isinstance(x, (jax.ShapeDtypeStruct, jax.Array)) for x in flat]

    def rebuild(dyn: list) -> tuple[tuple, dict]:
        it = iter(dyn)
        return jax.tree.unflatten(treedef, [next(it) if d else x for x, d in zip(flat, is_dyn)])

    return [x for x, d in zip(flat, is_dyn) if d], rebuild


def _cost_of(fn: Any, *operands: Any) -> dict[str, float | None]:
    compiled = jax.jit(fn).lower(*operands).compile()
    analysis = compiled.cost_analysis()
    if isinstance(analysis, list):  # older jax: one dict per program
        analysis = analysis[0] if analysis else {}
    analysis = analysis or {}

    def get(key: str) -> float | None:
        v = analysis.get(key)
        if v is None and analysis:  # XLA leaves zero-valued properties out (x -> x has no "flops")
            return 0.0
        return float(v) if v is not None and v >= 0 else None

    return {"flops": get("flops"), "bytes_accessed": get("bytes accessed")}


def _cost(module: Any, args: tuple, kwargs: dict) -> dict[str, float | None]:
    from flax import nnx

    graphdef, state = nnx.split(module)
    dyn, rebuild = split_arrays(abstract(args), abstract(kwargs))

    def closed(state: Any, dyn: list) -> Any:
        a, k = rebuild(dyn)
        return nnx.merge(graphdef, state)(*a, **k)

    return _cost_of(closed, abstract(state), dyn)


def _linen_cost(call: Call) -> dict[str, float | None]:
    """A Linen submodule's call compiled alone: ``apply`` of its unbound copy on its variables."""
    unbound, variables, rng_names = call.linen or (None, {}, ())
    if unbound is None:
        return {"flops": None, "bytes_accessed": None}
    dyn, rebuild = split_arrays(call.args, call.kwargs)

    def closed(variables: Any, dyn: list) -> Any:
        a, k = rebuild(dyn)
        rngs = {name: jax.random.key(i) for i, name in enumerate(rng_names)}
        return unbound.apply(variables, *a, rngs=rngs, mutable=True, **k)

    try:
        return _cost_of(closed, variables, dyn)
    except Exception:  # e.g. a method that needs its parent's context: shown n/a
        return {"flops": None, "bytes_accessed": None}


def _has_linen(model: Any) -> bool:
    from flax import nnx

    bridge = getattr(getattr(nnx, "bridge", None), "ToNNX", None)
    return bridge is not None and any(isinstance(m, bridge) for _, m in nnx.iter_modules(model))


def _call_error(model: Any, e: Exception) -> LayerCallError:
    path = getattr(e, "_jaxmagic_layer", None)
    kind = getattr(e, "_jaxmagic_layer_type", None) or _type_at(model, path)
    where = f"layer {_path_str(path)!r} ({kind})" if path else "the model"
    message = str(e).splitlines()[0] if str(e) else ""
    if type(e).__name__ == "ScopeCollectionNotFound":
        message += (
            " (a Linen module wrapped by nnx.bridge.ToNNX has no variables until it is "
            "initialised: call nnx.bridge.lazy_init(model, *inputs) first)"
        )
    return LayerCallError(f"{where} raised {type(e).__name__}: {message}")


def tabulate(model: Any, *args: Any, time: bool = False, trace_dir: str | None = None, **kwargs: Any):
    """Per-layer cost of ``model(*args, **kwargs)`` for a Flax NNX module.

    One row per submodule call (a layer called twice gives two rows), Linen submodules of an
    ``nnx.bridge.ToNNX`` included: path, module type, input and output types, parameters
    (count, bytes), FLOPs and bytes accessed from XLA's cost analysis of that call compiled
    alone, and output (activation) bytes. The first row is the whole call. Without ``time``
    nothing runs on real data; the model is never changed.

    Args:
        model: an ``nnx.Module`` (a Linen module: wrap it in ``nnx.bridge.ToNNX`` and
            ``nnx.bridge.lazy_init`` it).
        *args, **kwargs: the call's inputs (arrays or ``jax.ShapeDtypeStruct``).
        time: also measure device time per row: the whole call is compiled once with a
            ``jax.named_scope`` per module call and run under a ``jax.profiler`` trace on a
            split copy of the model's state (inputs given as shapes run on zeros).
        trace_dir: where ``time`` writes its trace (default: a temporary folder, removed).

    Raises ``TypeError`` for a non-NNX model and ``LayerCallError`` (naming the layer) when the
    call raises, e.g. on inputs of the wrong shape.

    Example::

        jaxmagic.tabulate(model, jnp.ones((8, 784)), time=True)
    """
    from flax import nnx

    from jaxmagic.layercost.report import LayerCostReport, LayerRow

    if not isinstance(model, nnx.Module):
        raise TypeError(f"tabulate needs a Flax NNX module (nnx.Module); got {type(model).__name__}")
    classes = {type(m) for _, m in nnx.iter_modules(model)}
    linen = _has_linen(model)
    params = {
        path: (_count(nnx.state(m, nnx.Param)), _bytes(nnx.state(m, nnx.Param)))
        for path, m in nnx.iter_modules(model)
    }
    calls: list[Call] = []

    dyn, rebuild = split_arrays(args, kwargs)  # Python values (train=True) stay static

    def run(m: Any, dyn: list) -> Any:
        paths = {id(sub): path for path, sub in nnx.iter_modules(m)}
        a, k = rebuild(dyn)
        with recording(classes, calls, paths, linen=linen):
            return m(*a, **k)

    try:
        nnx.eval_shape(run, model, dyn)
    except Exception as e:
        raise _call_error(model, e) from e
    timing = None
    if time:
        from jaxmagic.layercost.timing import measure

        timing = measure(model, calls, classes, args, kwargs, linen=linen, trace_dir=trace_dir)
    real = dict(nnx.iter_modules(model))
    rows = []
    for i, call in enumerate(calls):
        if call.linen is not None:
            cost = _linen_cost(call)
            variables = call.linen[1]
            count, nbytes = _count(variables.get("params", {})), _bytes(variables.get("params", {}))
        else:
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
                device_s=timing.device_s[i] if timing and timing.device_s else None,
                self_device_s=timing.self_s[i] if timing and timing.self_s else None,
            )
        )
    return LayerCostReport(
        model=type(model).__name__,
        rows=tuple(rows),
        timing=timing.describe() if timing else None,
    )


def _path_str(path: tuple | None) -> str:
    return "/".join(str(p) for p in path) if path else "(model)"


def _type_at(model: Any, path: tuple) -> str:
    from flax import nnx

    for p, m in nnx.iter_modules(model):
        if p == path:
            return type(m).__name__
    return "?"
