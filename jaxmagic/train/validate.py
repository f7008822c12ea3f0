"""Checks made before ``fit`` takes a step, for mistakes JAX would report from deep inside the
trainer (or not at all): a ``loss_fn`` that is not traceable, a metric whose inputs the batch
does not provide, evaluation-driven features without evaluation data."""

from __future__ import annotations

import inspect
import linecache
import traceback
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
from flax import nnx

from jaxmagic._frames import is_library_file
from jaxmagic.train.callbacks import Callback, EarlyStopping
from jaxmagic.train.step import StepFns, _metric_kwargs, check_loss, readable, split_loss

# what each error means in the user's terms
_NOT_TRACEABLE: dict[type, str] = {
    jax.errors.TracerArrayConversionError: "np.asarray()/np.array() of a traced array",
    jax.errors.TracerBoolConversionError: "bool() of a traced array (an `if` or `and` on it)",
    jax.errors.TracerIntegerConversionError: "int() or list indexing with a traced array",
    jax.errors.ConcretizationTypeError: "float(), int(), .item() or a Python condition on a traced array",
}


def abstract_outputs(
    fns: StepFns, params: Any, rest: Any, batch: Any, *, loss_fn: Callable, metrics: Mapping[str, Any]
) -> Any:
    """``loss_fn``'s abstract output for ``batch``, checked: traceable, a float scalar loss, and
    every metric's inputs available. Raises ``TypeError``/``ValueError`` naming the user's line."""
    out = _traceable(lambda: fns.abstract_loss(params, rest, batch), loss_fn, metrics)
    check_loss(out)
    loss, aux = split_loss(out)
    check_metric_inputs(metrics, loss, aux, batch)
    if metrics:  # trace the metrics too: their errors also surface before the first step
        _traceable(
            lambda: jax.eval_shape(readable(fns._metrics, "Trainer.check_metrics"), loss, aux, batch),
            loss_fn,
            metrics,
        )
    return out


def _traceable(run: Callable[[], Any], loss_fn: Callable, metrics: Mapping[str, Any]) -> Any:
    try:
        return run()
    except tuple(_NOT_TRACEABLE) as e:
        raise TypeError(not_traceable_message(e, loss_fn, metrics)) from None


def not_traceable_message(error: BaseException, loss_fn: Callable, metrics: Mapping[str, Any]) -> str:
    """``loss_fn must stay traceable: `float(loss)` at file.py:12 ...`` for a tracer conversion error."""
    roles = {getattr(loss_fn, "__code__", None): "loss_fn"}
    roles.update({getattr(fn, "__code__", None): f"metric {name!r}" for name, fn in metrics.items()})
    roles.pop(None, None)
    user = [
        (f, line)
        for f, line in traceback.walk_tb(error.__traceback__)
        if not is_library_file(f.f_code.co_filename)
    ]
    role = next((roles[f.f_code] for f, _ in user if f.f_code in roles), "loss_fn")
    what = next((text for cls, text in _NOT_TRACEABLE.items() if isinstance(error, cls)), "a traced value")
    if user:
        frame, line = user[-1]
        code = linecache.getline(frame.f_code.co_filename, line).strip() or "this line"
        site = f"`{code}` at {frame.f_code.co_filename}:{line}"
    else:
        site = "a conversion to a Python value"
    return (
        f"{role} must stay traceable: {site} needs a concrete number, but {role} runs inside "
        f"jax.jit, on abstract arrays, where {what} cannot work. Keep values as jax arrays: return the "
        "loss (or (loss, aux) to report more, with metrics=) and read numbers from the History after "
        "training."
    )


def _inputs_described(aux: Any, batch: Any) -> str:
    parts = ["loss and values (the loss)"]
    if isinstance(batch, dict):
        parts.append("the batch's keys " + ", ".join(map(str, batch)))
    elif isinstance(batch, (tuple, list)) and len(batch) == 2:
        parts.append("labels (batch[1])")
    if isinstance(aux, dict):
        parts.append("the aux dict's keys " + ", ".join(map(str, aux)))
    elif aux is not None:
        parts.append("logits (the aux loss_fn returns)")
    return "; ".join(parts)


def check_metric_inputs(metrics: Mapping[str, Any], loss: Any, aux: Any, batch: Any) -> None:
    """Raise ``ValueError`` when an ``nnx.metrics`` object needs an input the trainer cannot give it."""
    given = _metric_kwargs(loss, aux, batch)
    for name, metric in metrics.items():
        if not isinstance(metric, nnx.metrics.Metric) or isinstance(metric, nnx.metrics.MultiMetric):
            continue
        params = inspect.signature(metric.update).parameters.values()
        needed = [
            p.name
            for p in params
            if p.default is p.empty and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
        missing = [n for n in needed if n not in given]
        if missing:
            raise ValueError(
                f"metric {name!r} ({type(metric).__name__}) is updated as "
                f"update({', '.join(n + '=...' for n in needed)}) and nothing provides "
                f"{' or '.join(map(repr, missing))}: it gets {_inputs_described(aux, batch)}. Map them: name the "
                f"batch key {missing[0]!r}, or return (loss, {{'logits': logits, {missing[-1]!r}: ...}}) from "
                f"loss_fn (aux dict entries are passed by name), or pass a function: "
                f"metrics={{{name!r}: lambda aux, batch: ...}}."
            )


def check_eval_users(
    callbacks: Sequence[Callback], *, has_eval: bool, keep_best: str | None, eval_names: Sequence[str]
) -> None:
    """Raise ``ValueError`` for features that act on evaluations when none will run or when the
    metric they watch does not exist."""
    users = [
        (f"EarlyStopping({cb.monitor!r})", cb.monitor) for cb in callbacks if isinstance(cb, EarlyStopping)
    ]
    if keep_best:
        users.append((f"keep_best={keep_best!r}", keep_best))
    for who, name in users:
        if not has_eval:
            raise ValueError(
                f"{who} acts on evaluations, but fit() has no eval_data: pass eval_data= "
                "(with eval_every= for an iterable of batches), or drop it"
            )
        if name not in eval_names:
            raise ValueError(
                f"{who} watches {name!r}, which evaluation does not produce; "
                f"evaluations give {', '.join(eval_names)}"
            )
