"""Pure, jittable training / evaluation / prediction steps over split NNX state.

The model is split once (``graphdef`` + state); each compiled call merges a copy inside
the trace, so no graph traversal happens in the hot loop. One call runs ``length`` steps
with ``lax.scan``; the whole train state is donated.

Non-finite guard, two designs (``guard=``); either way the state the host sees is the last
finite one, without a copy the host has to manage:

- ``"call"``: the steps run unchecked; at the end of the call one check covers every step's
  loss and the final parameters (a NaN gradient reaches the parameters in the step it appears
  and stays). A call that fails it returns its *input* state, marked (``bad`` = its first
  step), and the host re-runs it with :meth:`StepFns.checked_call` (loss, gradients and new
  state checked at every step) to find the step. The cost: the input state stays alive during
  the call (one more copy of the train state in device memory); no per-step pass over the
  gradients.
- ``"step"``: every step checks its loss and gradients (one reduction over the gradients per
  step) and a bad step is not applied, nor any later one of the call; ``bad`` records it.

A call whose input is already marked does nothing (the host launched it before it read the
mark). The flight recorder's per-layer norms come from :meth:`StepFns.probe`, a separate
program: on XLA:CPU any second reader of the weight gradients inside the scan (even of one
element) slowed every step by 5-12% (measured), where one unapplied probe step per hundred
steps costs about 1%.
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
from jaxmagic.train.recorder import all_finite

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


GUARDS = ("call", "step")


class StepFns:
    """The pure functions the trainer compiles.

    Args:
      graphdef: the model's graph definition (``nnx.split(model, wrt, ...)[0]``).
      loss_fn: ``loss_fn(model, batch) -> loss | (loss, aux)``.
      tx: an optax ``GradientTransformation``.
      metrics: name -> ``fn(aux, batch) -> scalar`` or an ``nnx.metrics.Metric``.
      gather: inputs are example indices into on-device data instead of batches.
      wrt: the filter of the trained variables (the rest of the state is carried, not trained).
      layers: the trained state's layers (for the recorder and divergence reports).
      guard: ``"call"`` or ``"step"`` (see the module docstring).
    """

    def __init__(
        self,
        graphdef: Any,
        loss_fn: Callable,
        tx: optax.GradientTransformation,
        metrics: Mapping[str, Any],
        *,
        gather: bool,
        wrt: Any = nnx.Param,
        layers: Any = None,
        guard: str = "call",
    ):
        if guard not in GUARDS:
            raise ValueError(f"guard must be one of {GUARDS}, got {guard!r}")
        self.graphdef, self.loss_fn, self.tx, self.gather = graphdef, loss_fn, tx, gather
        self.wrt, self.layers, self.guard = wrt, layers, guard
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
        return loss, (aux, nnx.state(model, nnx.Not(self.wrt)))

    def _grads(self, params: Any, rest: Any, batch: Any) -> tuple[Any, Any, Any, Any]:
        """``(loss, aux, new_rest, grads)`` of one batch."""
        (loss, (aux, new_rest)), grads = jax.value_and_grad(self._loss, has_aux=True)(params, rest, batch)
        return loss, aux, new_rest, grads

    def _apply(self, params: Any, opt: Any, grads: Any) -> tuple[Any, Any]:
        updates, new_opt = self.tx.update(grads, opt, params)
        return optax.apply_updates(params, updates), new_opt

    def abstract_loss(self, params: Any, rest: Any, batch: Any) -> Any:
        """``loss_fn``'s abstract output (for input validation before any step)."""

        def check_loss_fn(p: Any, r: Any, b: Any) -> Any:
            out = self.loss_fn(self._merge(p, r, train=True), b)
            check_loss(out)  # on tracers: a clear message instead of JAX's "not a valid JAX type"
            return out

        return jax.eval_shape(readable(check_loss_fn, "Trainer.check_loss_fn"), params, rest, batch)

    # -- one step, three ways ---------------------------------------------------------------
    def _plain_step(self, carry: TrainState, batch: Any) -> tuple[TrainState, Any]:
        """No check (``guard="call"``: the call checks once, at its end)."""
        params, rest, opt = carry["params"], carry["rest"], carry["opt"]
        loss, aux, new_rest, grads = self._grads(params, rest, batch)
        new_params, new_opt = self._apply(params, opt, grads)
        new = {**carry, "params": new_params, "rest": new_rest, "opt": new_opt, "step": carry["step"] + 1}
        return new, self._metrics(loss, aux, batch)

    def _guarded_step(self, carry: TrainState, batch: Any) -> tuple[TrainState, Any]:
        """Loss and gradients checked; a bad step (and every later one) is not applied."""
        params, rest, opt = carry["params"], carry["rest"], carry["opt"]
        loss, aux, new_rest, grads = self._grads(params, rest, batch)
        # a sum is finite iff every element is (barring overflow of finite values near 1e38)
        grad_sum = sum(jnp.sum(g, dtype=jnp.float32) for g in jax.tree.leaves(grads))
        ok = jnp.isfinite(loss) & jnp.isfinite(grad_sum) & (carry["bad"] < 0)

        def apply(_: Any) -> tuple[Any, Any, Any]:
            return *self._apply(params, opt, grads), new_rest

        def skip(_: Any) -> tuple[Any, Any, Any]:
            return params, opt, rest

        # A real conditional, not a select over the whole state: the optimizer update runs only
        # for finite steps, and a finite step pays no extra pass over params and optimizer state.
        new_params, new_opt, kept_rest = jax.lax.cond(ok, apply, skip, None)
        new = {
            "params": new_params,
            "rest": kept_rest,
            "opt": new_opt,
            "step": carry["step"] + ok.astype(jnp.int32),
            "bad": jnp.where(ok | (carry["bad"] >= 0), carry["bad"], carry["step"] + 1),
        }
        return new, self._metrics(loss, aux, batch)

    def _checked_step(self, carry: TrainState, batch: Any) -> tuple[TrainState, Any]:
        """Everything checked: loss, gradients and the new state (re-running a call that went
        non-finite, to find its first bad step; speed does not matter here)."""
        params, rest, opt = carry["params"], carry["rest"], carry["opt"]
        loss, aux, new_rest, grads = self._grads(params, rest, batch)
        new_params, new_opt = self._apply(params, opt, grads)
        ok = jnp.isfinite(loss) & all_finite((grads, new_params, new_opt, new_rest)) & (carry["bad"] < 0)
        kept = jax.lax.cond(ok, lambda: (new_params, new_rest, new_opt), lambda: (params, rest, opt))
        new = {
            "params": kept[0],
            "rest": kept[1],
            "opt": kept[2],
            "step": carry["step"] + ok.astype(jnp.int32),
            "bad": jnp.where(ok | (carry["bad"] >= 0), carry["bad"], carry["step"] + 1),
        }
        return new, self._metrics(loss, aux, batch)

    def _batch(self, item: Any, data: Any) -> Any:
        # gather one batch per step: the same speed as gathering the whole call up front
        # (measured), with a batch instead of a call's worth of batches in temporary memory
        return jax.tree.map(lambda d: d[item], data) if self.gather else item

    def _scan(self, step: Callable, carry: TrainState, feed: Any, data: Any) -> tuple[TrainState, Any]:
        return jax.lax.scan(lambda c, item: step(c, self._batch(item, data)), carry, feed)

    def train_call(self, carry: TrainState, feed: Any, data: Any) -> tuple[TrainState, dict[str, Any]]:
        """``len(feed)`` steps fused with ``lax.scan``; ``feed`` is stacked batches or indices.

        Returns ``(state, logs)``: the state and per-step metrics (``[n]`` each)."""
        step = self._guarded_step if self.guard == "step" else self._plain_step
        new, logs = self._scan(step, carry, feed, data)
        if self.guard == "call":
            # every step's loss and the final parameters: a NaN gradient reaches the parameters in
            # the step it appears and stays (NaN is sticky), so one look at the end sees it
            ok = jnp.all(jnp.isfinite(logs["loss"])) & all_finite(new["params"]) & (carry["bad"] < 0)
            marked = {**carry, "bad": jnp.where(carry["bad"] >= 0, carry["bad"], carry["step"] + 1)}
            new = jax.lax.cond(ok, lambda: new, lambda: marked)
        return new, logs

    def checked_call(self, carry: TrainState, feed: Any, data: Any) -> tuple[TrainState, dict[str, Any]]:
        """The call again, every step checked: the state after its last finite step, ``bad``
        set to its first non-finite step (``-1`` if none is)."""
        return self._scan(self._checked_step, carry, feed, data)

    # -- the flight recorder and divergence --------------------------------------------------
    def probe(self, params: Any, rest: Any, opt: Any, feed: Any, data: Any, index: Any) -> dict[str, Any]:
        """Step ``index`` of a call's input, from ``params``/``rest``/``opt``, not applied: its
        loss and, per layer, the sums of squares of the gradients, of the optimizer's updates and
        of the parameters (:meth:`~jaxmagic.train.recorder.Layers.probe_sums`)."""
        batch = self._batch(jax.tree.map(lambda f: f[index], feed), data)
        loss, _, _, grads = self._grads(params, rest, batch)
        updates, _ = self.tx.update(grads, opt, params)
        return {"loss": loss.astype(jnp.float32), **self.layers.probe_sums(grads, updates, params)}

    def replay_step(self, params: Any, rest: Any, opt: Any, batch: Any) -> tuple[Any, Any, Any]:
        """One whole training step, for ``checkify``: ``(loss, grads, updates)``."""
        loss, _, _, grads = self._grads(params, rest, batch)
        updates, _ = self.tx.update(grads, opt, params)
        return loss, grads, updates

    def eval_batch(self, params: Any, rest: Any, batch: Any) -> dict[str, Any]:
        model = self._merge(params, rest, train=False)
        loss, aux = split_loss(self.loss_fn(model, batch))
        return self._metrics(loss, aux, batch)

    @staticmethod
    def predict_batch(graphdef: Any, predict_fn: Callable, params: Any, rest: Any, batch: Any) -> Any:
        model = nnx.merge(graphdef, params, rest, copy=True)
        model.eval()
        return predict_fn(model, batch)
