"""Record every module call of one model run, in call order: NNX submodules by wrapping their
class's ``__call__`` for the duration, Linen submodules (inside ``nnx.bridge.ToNNX``) through
``flax.linen.intercept_methods``. With ``scoped`` each call also runs under
``jax.named_scope("jm_call_<k>")`` (``k``: its index in call order), so the compiled program's
op metadata says which call each XLA op came from (``--time``)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import jax

SCOPE_PREFIX = "jm_call_"


@dataclass
class Call:
    """One module call as recorded (inputs and outputs as shapes)."""

    path: tuple
    module: Any  # the (abstract) NNX module or bound Linen module called
    args: tuple
    kwargs: dict
    outputs: Any
    depth: int
    # a Linen submodule: (unbound copy, its variables as shapes, names of its rng streams)
    linen: tuple[Any, Any, tuple[str, ...]] | None = None


def abstract(tree: Any) -> Any:
    """Arrays (and tracers) as ``jax.ShapeDtypeStruct``; other leaves as they are."""
    return jax.tree.map(
        lambda t: (
            jax.ShapeDtypeStruct(t.shape, t.dtype) if hasattr(t, "shape") and hasattr(t, "dtype") else t
        ),
        tree,
    )


class _Stack:
    def __init__(self, calls: list[Call], scoped: bool):
        self.calls, self.scoped = calls, scoped
        self.open: list[tuple[int, tuple, bool]] = []  # (id, path, is_linen), outermost first

    def nnx_base(self) -> tuple:
        """The path of the innermost NNX module being called (a ToNNX wrapping Linen code)."""
        return next((path for _, path, linen in reversed(self.open) if not linen), ())

    def run(self, key: int, path: tuple, module: Any, linen: Any, fn: Any, args: tuple, kwargs: dict) -> Any:
        call = Call(path, module, abstract(args), abstract(kwargs), None, len(self.open), linen)
        index = len(self.calls)
        self.calls.append(call)
        self.open.append((key, path, linen is not None))
        try:
            if self.scoped:
                with jax.named_scope(f"{SCOPE_PREFIX}{index}"):
                    out = fn(*args, **kwargs)
            else:
                out = fn(*args, **kwargs)
        except Exception as e:
            if not getattr(e, "_jaxmagic_layer", None):
                e._jaxmagic_layer = path  # type: ignore[attr-defined]
                e._jaxmagic_layer_type = type(module).__name__  # type: ignore[attr-defined]
            raise
        finally:
            self.open.pop()
        call.outputs = abstract(out)
        return out


def _linen_interceptor(stack: _Stack) -> Any:
    def intercept(next_fun: Any, args: tuple, kwargs: dict, context: Any) -> Any:
        module = context.module
        if context.method_name != "__call__" or not stack.open:
            return next_fun(*args, **kwargs)
        try:
            rel = tuple(module.path)
        except Exception:  # an unbound module: not a layer of this call
            return next_fun(*args, **kwargs)
        if not rel or stack.open[-1][0] == id(module):  # the wrapped root (the ToNNX row) or super()
            return next_fun(*args, **kwargs)
        try:
            unbound, variables = module.unbind()
            rngs = tuple(module.scope.rngs) if module.scope is not None else ()
            linen = (unbound, abstract(variables), rngs)
        except Exception:  # cost of this call alone cannot be had: shown n/a
            linen = (None, {}, ())
        return stack.run(id(module), stack.nnx_base() + rel, module, linen, next_fun, args, kwargs)

    return intercept


@contextlib.contextmanager
def recording(
    classes: set[type],
    calls: list[Call],
    paths: dict[int, tuple],
    *,
    scoped: bool = False,
    linen: bool = False,
) -> Iterator[None]:
    """Record calls of NNX ``classes`` (and, with ``linen``, of Linen submodules) into ``calls``.

    ``paths``: ``id(module) -> path`` of the NNX modules of the model being run. The class
    ``__call__`` wrappers are removed on exit, also when the call raises.
    """
    originals = {cls: cls.__dict__.get("__call__") for cls in classes}
    # Resolved before any class is patched: a subclass that inherits __call__ wraps the
    # base's original, not the base's wrapper.
    targets = {cls: cls.__call__ for cls in classes}
    stack = _Stack(calls, scoped)

    def make(original: Any) -> Any:
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            path = paths.get(id(self))
            if path is None or (stack.open and stack.open[-1][0] == id(self)):  # super().__call__
                return original(self, *args, **kwargs)
            return stack.run(
                id(self), path, self, None, lambda *a, **k: original(self, *a, **k), args, kwargs
            )

        return __call__

    with contextlib.ExitStack() as exits:
        if linen:
            from flax import linen as nn

            exits.enter_context(nn.intercept_methods(_linen_interceptor(stack)))
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
