"""Pure, jittable training / evaluation / prediction steps over split NNX state.

The model is split once (``graphdef`` + state); each compiled call merges a copy inside
the trace, so no graph traversal happens in the hot loop. One call runs ``length`` steps
with ``lax.scan``; the whole train state is donated.

Non-finite guard: a step whose loss or gradient norm is not finite is *not applied*, and
every later step in the call is skipped too; the carry records the first bad step. The
state the host sees is therefore always the last finite one, without keeping copies.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jaxmagic._format import shape_str

TrainState = dict  # {"params", "rest", "opt", "step", "bad"}


def readable(fn: Callable, name: str) -> Callable:
    """``fn`` under the name profiles and compile logs show (``Trainer.train_steps``), so a
    user who profiles ``fit`` sees what ran instead of an internal name like ``call``."""

    @functools.wraps(fn)
    def named(*args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    named.__name__ = named.__qualname__ = name
    return named


def split_loss(out: Any) -> tuple[Any, Any]:
    """``loss`` or ``(loss, aux)`` -> ``(loss, aux)``."""
    if isinstance(out, tuple) and len(out) == 2:
        return out
    return out, None


def check_loss(out: Any) -> None:
    """Raise ``TypeError`` unless ``loss_fn`` returned a float scalar (abstractly evaluated)."""
    if isinstance(out, tuple) and len(out) != 2:
        raise TypeError(f"loss_fn must return loss or (loss, aux); it returned a tuple of {len(out)}")
    loss, _ = split_loss(out)
    shape, dtype = getattr(loss, "shape", None), getattr(loss, "dtype", None)
    if shape is None:
        raise TypeError(f"loss_fn must return a scalar float array, got {type(loss).__name__}")
    if tuple(shape) != ():
        raise TypeError(
            f"loss_fn must return a scalar loss, got {shape_str(shape, dtype)}; reduce it "
            "(e.g. .mean()) inside loss_fn"
        )
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"loss_fn must return a floating-point loss, got {shape_str(shape, dtype)}")


def _metric_kwargs(loss: Any, aux: Any, batch: Any) -> dict[str, Any]:
    kw: dict[str, Any] = {"loss": loss, "values": loss}
    if isinstance(batch, dict):
        kw.update(batch)
    elif isinstance(batch, (tuple, list)) and len(batch) == 2:
        kw.setdefault("labels", batch[1])
    if isinstance(aux, dict):
        kw.update(aux)
    elif aux is not None:
        kw["logits"] = aux
    return kw


class StepFns:
    """The pure functions the trainer compiles.

    Args:
      graphdef: the model's graph definition (``nnx.split(model, nnx.Param, ...)[0]``).
      loss_fn: ``loss_fn(model, batch) -> loss | (loss, aux)``.
      tx: an optax ``GradientTransformation``.
      metrics: name -> ``fn(aux, batch) -> scalar`` or an ``nnx.metrics.Metric``.
      gather: inputs are example indices into on-device data instead of batches.
    """

    def __init__(
        self,
        graphdef: Any,
        loss_fn: Callable,
        tx: optax.GradientTransformation,
        metrics: Mapping[str, Any],
        *,
        gather: bool,
    ):
        self.graphdef, self.loss_fn, self.tx, self.gather = graphdef, loss_fn, tx, gather
        self.metric_fns: dict[str, Callable] = {}
        for name, m in metrics.items():
            if isinstance(m, (nnx.Module, nnx.metrics.Metric)):
                mg, ms = nnx.split(m)
                self.metric_fns[name] = self._nnx_metric(mg, ms)
            elif callable(m):
                self.metric_fns[name] = m
            else:
                raise TypeError(
                    f"metric {name!r} must be a function (aux, batch) -> scalar or an "
                    f"nnx.metrics.Metric, got {type(m).__name__}"
                )
        self.eval_batch = readable(self.eval_batch, "Trainer.evaluate")  # type: ignore[method-assign]

    @staticmethod
    def _nnx_metric(mg: Any, ms: Any) -> Callable:
        def fn(aux: Any, batch: Any, loss: Any = None) -> Any:
            m = nnx.merge(mg, ms, copy=True)
            m.reset()
            m.update(**_metric_kwargs(loss, aux, batch))
            return m.compute()

        fn.wants_loss = True  # type: ignore[attr-defined]
        return fn

    def _metrics(self, loss: Any, aux: Any, batch: Any) -> dict[str, Any]:
        out = {"loss": loss.astype(jnp.float32)}
        for name, fn in self.metric_fns.items():
            val = fn(aux, batch, loss) if getattr(fn, "wants_loss", False) else fn(aux, batch)
            out[name] = jnp.asarray(val, jnp.float32).reshape(())
        return out

    def _merge(self, params: Any, rest: Any, *, train: bool) -> nnx.Module:
        model = nnx.merge(self.graphdef, params, rest, copy=True)
        if train:
            model.train()
        else:
            model.eval()
        return model

    def _loss(self, params: Any, rest: Any, batch: Any) -> tuple[Any, tuple[Any, Any]]:
        model = self._merge(params, rest, train=True)
        loss, aux = split_loss(self.loss_fn(model, batch))
        return loss, (aux, nnx.state(model, nnx.Not(nnx.Param)))

    def abstract_loss(self, params: Any, rest: Any, batch: Any) -> Any:
        """``loss_fn``'s abstract output (for input validation before any step)."""

        def check_loss_fn(p: Any, r: Any, b: Any) -> Any:
            out = self.loss_fn(self._merge(p, r, train=True), b)
            check_loss(out)  # on tracers: a clear message instead of JAX's "not a valid JAX type"
            return out

        return jax.eval_shape(readable(check_loss_fn, "Trainer.check_loss_fn"), params, rest, batch)

    def one_step(self, carry: TrainState, batch: Any) -> tuple[TrainState, dict[str, Any]]:
        params, rest, opt = carry["params"], carry["rest"], carry["opt"]
        (loss, (aux, new_rest)), grads = jax.value_and_grad(self._loss, has_aux=True)(params, rest, batch)
        # a sum is finite iff every element is (barring overflow of finite values near 1e38)
        grad_sum = sum(jnp.sum(g, dtype=jnp.float32) for g in jax.tree.leaves(grads))
        ok = jnp.isfinite(loss) & jnp.isfinite(grad_sum) & (carry["bad"] < 0)

        def apply(_: Any) -> tuple[Any, Any, Any]:
            updates, new_opt = self.tx.update(grads, opt, params)
            return optax.apply_updates(params, updates), new_opt, new_rest

        def skip(_: Any) -> tuple[Any, Any, Any]:
            return params, opt, rest

        # A real conditional, not a select over the whole state: the optimizer update runs only
        # for finite steps, and a finite step pays no extra pass over params and optimizer state.
        new_params, new_opt, kept_rest = jax.lax.cond(ok, apply, skip, None)
        logs = self._metrics(loss, aux, batch)
        new = {
            "params": new_params,
            "rest": kept_rest,
            "opt": new_opt,
            "step": carry["step"] + ok.astype(jnp.int32),
            "bad": jnp.where(ok | (carry["bad"] >= 0), carry["bad"], carry["step"] + 1),
        }
        return new, logs

    def train_call(self, carry: TrainState, feed: Any, data: Any) -> tuple[TrainState, dict[str, Any]]:
        """``len(feed)`` steps fused with ``lax.scan``; ``feed`` is stacked batches or indices."""
        if not self.gather:
            return jax.lax.scan(self.one_step, carry, feed)

        def body(c: TrainState, idx: Any) -> tuple[TrainState, dict[str, Any]]:
            # gather one batch per step: the same speed as gathering the whole call up front
            # (measured), with a batch instead of a call's worth of batches in temporary memory
            return self.one_step(c, jax.tree.map(lambda d: d[idx], data))

        return jax.lax.scan(body, carry, feed)

    def eval_batch(self, params: Any, rest: Any, batch: Any) -> dict[str, Any]:
        model = self._merge(params, rest, train=False)
        loss, aux = split_loss(self.loss_fn(model, batch))
        return self._metrics(loss, aux, batch)

    @staticmethod
    def predict_batch(graphdef: Any, predict_fn: Callable, params: Any, rest: Any, batch: Any) -> Any:
        model = nnx.merge(graphdef, params, rest, copy=True)
        model.eval()
        return predict_fn(model, batch)
