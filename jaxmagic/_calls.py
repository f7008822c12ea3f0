"""One user call, made safe to trace and to run: the capture behind ``%jaxpr``, ``%jaxhlo`` and
``%jaxcheck`` never hands the user's objects to JAX or to the user's code.

NNX graph nodes among the callee and its arguments (modules, optimizers, ``nnx.Rngs``,
variables) are read once with ``nnx.split``, a read-only walk, and rebuilt as fresh copies
(``nnx.merge``) where the call happens: inside the trace for ``pure()``, outside it for
``on_copies()``. Whatever the call does to them (RNG counters advancing, BatchNorm statistics,
an optimizer step, an ``nnx.jit`` method writing its state back) happens to the copies, and a
failure half way leaves nothing behind. Array buffers are shared, never copied: JAX arrays are
immutable and nothing here executes with donation.

Which arguments are traced (``STATIC_RULE``): arrays and Python numbers are traced, as
``jax.jit`` would; Python ``bool``, ``str``, ``None``, callables and any other object are kept
static, so ``model(x, training=True)`` takes the Python branch the user meant. With
``static_numbers=True`` Python ints and floats are static too (the retry when a function uses
a number as a Python value, e.g. ``range(n)``).
"""

from __future__ import annotations

import functools
import inspect
import types
from collections.abc import Callable
from typing import Any

STATIC_RULE = (
    "arrays and Python numbers are traced; Python bool, str, None, callables and other objects are static"
)

_MAX_SIGNATURE = 160  # characters of the argument list in a title before it is cut with "…"


def _is_graph_node(x: Any) -> bool:
    try:
        from flax import nnx
    except ImportError:  # pragma: no cover - flax is a dependency
        return False
    return nnx.graph.is_graph_node(x)


def _is_array(x: Any) -> bool:
    import jax
    import numpy as np

    # ShapeDtypeStruct: an array known by shape and dtype only (%jaxplan before any data exists)
    return isinstance(x, (jax.Array, jax.ShapeDtypeStruct, np.ndarray, np.generic))


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float, complex)) and not isinstance(x, bool)


def unwrap(fn: Callable, args: tuple, kwargs: dict) -> tuple[Callable, tuple, dict]:
    """``(callee, args, kwargs)`` with bound methods and ``functools.partial`` opened up, so
    their receivers (``model`` in ``model.generate_step``, which ``nnx.jit`` binds with a
    partial) are arguments like any other."""
    args, kwargs = tuple(args), dict(kwargs)
    while True:
        if isinstance(fn, functools.partial):
            args, kwargs, fn = fn.args + args, {**fn.keywords, **kwargs}, fn.func
        elif isinstance(fn, types.MethodType):
            args, fn = (fn.__self__,) + args, fn.__func__
        else:
            return fn, args, kwargs


def has_own_trace(fn: Any) -> bool:
    """True for ``jax.jit`` / ``nnx.jit`` functions: they are traced through their own
    ``.trace`` so their static arguments, donation and shardings hold."""
    return callable(getattr(fn, "trace", None)) and callable(getattr(fn, "lower", None))


def name_of(fn: Any) -> str:
    """The name a user knows ``fn`` by: the function's, or the module's class name."""
    fn, _, _ = unwrap(fn, (), {})
    if _is_graph_node(fn):
        return type(fn).__name__
    inner = getattr(fn, "fun", None) or getattr(fn, "__wrapped__", None) or fn
    return getattr(inner, "__name__", None) or type(inner).__name__


class SafeCall:
    """``fn(*args, **kwargs)`` split into graph-node state, traced values and static values.

    Args:
        fn: a function, bound method, ``functools.partial``, ``jax.jit`` / ``nnx.jit``
            function or NNX module.
        args, kwargs: the call's arguments.
        static_numbers: keep Python ints and floats static as well.
    """

    def __init__(self, fn: Callable, args: tuple, kwargs: dict, *, static_numbers: bool = False):
        import jax

        self.callee, a, k = unwrap(fn, args, kwargs)
        leaves, self._tree = jax.tree_util.tree_flatten((self.callee, a, k), is_leaf=_is_graph_node)
        self._leaves = leaves
        self._nodes = [i for i, x in enumerate(leaves) if _is_graph_node(x)]
        self._dynamic = [
            i for i, x in enumerate(leaves) if _is_array(x) or (_is_number(x) and not static_numbers)
        ]
        self.static_numbers = static_numbers
        self.has_python_numbers = any(_is_number(x) for x in leaves)
        self._graphdef, self.state = None, None
        if self._nodes:
            from flax import nnx

            self._graphdef, self.state = nnx.split(tuple(leaves[i] for i in self._nodes))

    @property
    def dynamic_values(self) -> list:
        """The traced leaves (arrays, and Python numbers unless ``static_numbers``)."""
        return [self._leaves[i] for i in self._dynamic]

    def _rebuild(self, state: Any, dynamic: Any) -> tuple[Callable, tuple, dict]:
        import jax

        full = list(self._leaves)
        if self._nodes:
            from flax import nnx

            for i, node in zip(self._nodes, nnx.merge(self._graphdef, state)):
                full[i] = node
        for i, v in zip(self._dynamic, dynamic):
            full[i] = v
        return jax.tree_util.tree_unflatten(self._tree, full)

    def pure(self) -> tuple[Callable, tuple]:
        """``(f, inputs)``: ``f(*inputs)`` makes the call on copies merged inside the trace,
        returning only the call's value. ``inputs`` is ``(state, *traced values)``."""

        def call(state: Any, *dynamic: Any) -> Any:
            callee, a, k = self._rebuild(state, dynamic)
            return callee(*a, **k)

        return call, (self.state, *self.dynamic_values)

    def on_copies(self) -> tuple[Callable, tuple, dict]:
        """``(callee, args, kwargs)`` with every graph node replaced by a fresh copy (arrays
        shared), for APIs that trace by themselves (``jax.jit(...).trace``)."""
        return self._rebuild(self.state, self.dynamic_values)


def _kind(value: Any) -> str:
    """``array``, ``number``, ``node`` (NNX graph node), ``tree`` (a pytree holding arrays or
    nodes: dicts of params, ``nnx.State``, optax states) or ``static``."""
    import jax

    if _is_array(value):
        return "array"
    if _is_number(value):
        return "number"
    if _is_graph_node(value):
        return "node"
    leaves = jax.tree_util.tree_leaves(value, is_leaf=_is_graph_node)
    if (
        leaves
        and not (len(leaves) == 1 and leaves[0] is value)
        and any(_is_array(x) or _is_graph_node(x) or _is_number(x) for x in leaves)
    ):
        return "tree"
    return "static"


def _compact(value: Any, kind: str) -> str:
    """``f32[2,8]``, ``MiniGPT``, ``dict(3 leaves)``; a static value as ``=True`` (the caller
    joins it to the parameter name)."""
    import jax
    import numpy as np

    from jaxmagic._format import shape_str

    if kind == "array":
        return shape_str(value.shape, value.dtype)
    if kind == "node":
        return type(value).__name__
    if kind == "number":
        return shape_str((), jax.dtypes.canonicalize_dtype(np.asarray(value).dtype))
    if kind == "tree":
        n = len(jax.tree_util.tree_leaves(value, is_leaf=_is_graph_node))
        return f"{type(value).__name__}({n} leaves)"
    if callable(value) and not isinstance(value, type):
        return "=" + name_of(value)
    text = repr(value)
    return "=" + (text if len(text) <= 24 else text[:23] + "…")


def bound_arguments(fn: Callable, args: tuple, kwargs: dict) -> list[tuple[str | None, Any]]:
    """``[(parameter name or None, value)]`` in call order (receivers already bound stay out)."""
    target = fn
    if _is_graph_node(fn):
        target = type(fn).__call__.__get__(fn)
    try:
        sig = inspect.signature(target)
        bound = sig.bind(*args, **kwargs)
    except (TypeError, ValueError):
        return [(None, a) for a in args] + list(kwargs.items())
    out: list[tuple[str | None, Any]] = []
    for name, value in bound.arguments.items():
        kind = sig.parameters[name].kind
        if kind is inspect.Parameter.VAR_POSITIONAL:
            out += [(None, v) for v in value]
        elif kind is inspect.Parameter.VAR_KEYWORD:
            out += list(value.items())
        else:
            out.append((name, value))
    return out


def describe_args(
    fn: Callable,
    args: tuple,
    kwargs: dict,
    *,
    values: bool = True,
    static: frozenset[str] = frozenset(),
    limit: int = _MAX_SIGNATURE,
) -> str:
    """The argument list as the user wrote it: ``tokens: i32[2,8], training=True``.

    Traced values show their type; static ones (``STATIC_RULE``, and the parameters named in
    ``static``, e.g. a jitted function's ``static_argnums``) their value when ``values``,
    else their type name. Cut with ``…`` past ``limit`` characters.
    """
    parts = []
    for name, value in bound_arguments(fn, args, kwargs):
        kind = "static" if name in static else _kind(value)
        if values or kind in ("array", "node"):
            text = _compact(value, kind)
        else:
            text = type(value).__name__
        if text.startswith("="):
            parts.append(f"{name}{text}" if name else text[1:])
        else:
            parts.append(f"{name}: {text}" if name else text)
    out = ", ".join(parts)
    return out if len(out) <= limit else out[: limit - 1].rsplit(", ", 1)[0] + ", …"


def python_numbers(fn: Callable, args: tuple, kwargs: dict) -> str:
    """``n=3, scale=0.5``: the Python numbers among the call's top-level arguments."""
    return ", ".join(
        f"{name}={value!r}" if name else repr(value)
        for name, value in bound_arguments(fn, args, kwargs)
        if _is_number(value)
    )
