"""When training diverges: what went non-finite first, and a replay of that step under checkify.

When the non-finite guard stops a run, the trainer keeps a :class:`Divergence`: the first bad
step, its loss, the layers whose gradients or optimizer updates were non-finite at that step
(the recorder's probe: one unapplied step from the last finite state, on the same batch), the last checkpoint, and
what a replay needs — that one batch (a slice of the call's device input) and references to
the last finite state, which the model holds too. Nothing is copied on the way.

:func:`replay` re-runs that step under ``checkify`` (``jaxmagic.check.check_call``, the engine
of ``%jaxcheck``) and returns a :class:`DivergenceReport` naming the operation that produced
the first NaN/inf and the user's source line. The replay runs on the kept state, never on the
model: it changes nothing the user holds, whatever they did to the model since.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from jaxmagic._result import Result


def _names(names: list[str], limit: int = 6) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


@dataclasses.dataclass
class Divergence:
    """The first non-finite step of a run and what a replay of it needs.

    Attributes:
      step: the first non-finite step (1-based); the model holds the state after ``step - 1``.
      loss: that step's loss (NaN/inf, or finite when only gradients or updates were not).
      grad_layers: layers whose gradients were non-finite at that step, in model order.
      update_layers: layers whose optimizer updates were non-finite at that step.
      layers: every trained layer (to tell "all layers" from some).
      checkpoint_step / checkpoint_path: the last checkpoint on disk (all are finite: only
        finished, checked steps are saved), or ``None``.
      found_by: ``"step"`` (the per-step guard) or ``"call"`` (a call's end-of-call check, then
        that call re-run step by step).
    """

    step: int
    loss: float
    grad_layers: list[str]
    update_layers: list[str]
    layers: list[str]
    checkpoint_step: int | None = None
    checkpoint_path: str | None = None
    found_by: str = "step"
    fit: int = 0  # which fit() of the trainer (a later fit makes the kept state stale)
    note: str = ""  # when no single step could be named
    batch: Any = dataclasses.field(default=None, repr=False)  # the step's batch, on device
    state: dict[str, Any] | None = dataclasses.field(default=None, repr=False)  # params/rest/opt

    @property
    def last_finite_step(self) -> int:
        return self.step - 1

    def what(self) -> str:
        """``gradients non-finite in l1`` / ``the loss only`` / ... for messages."""
        if self.note:
            return self.note
        parts = []
        every = len(self.layers) > 1
        for kind, names in (("gradients", self.grad_layers), ("updates", self.update_layers)):
            if not names:
                continue
            if every and len(names) == len(self.layers):
                parts.append(f"{kind} non-finite in all {len(names)} layers ({_names(names)})")
            else:
                parts.append(f"{kind} non-finite in {_names(names)}")
            if kind == "gradients":
                break  # non-finite gradients make non-finite updates: the gradients are the news
        if not parts:
            parts.append(
                "gradients and updates finite, the loss not"
                if not math.isfinite(self.loss)
                else "the new state non-finite (an optimizer or layer-state update)"
            )
        return "; ".join(parts)

    def message(self) -> str:
        """The run's message: what happened, where the model stands, the last checkpoint."""
        msg = (
            f"loss became {self.loss:.6g} at step {self.step}"
            if not math.isfinite(self.loss)
            else f"step {self.step} went non-finite (loss {self.loss:.6g})"
        )
        msg += f" ({self.what()}); training stopped and the model holds the last finite state, after step {self.step - 1}"
        if self.checkpoint_step is not None:
            msg += f"; last checkpoint: step {self.checkpoint_step}"
        msg += f". trainer.replay_diverged() re-runs step {self.step} under checkify to find the operation"
        return msg

    def to_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "loss": self.loss if math.isfinite(self.loss) else str(self.loss),
            "last_finite_step": self.last_finite_step,
            "grad_layers": list(self.grad_layers),
            "update_layers": list(self.update_layers),
            "what": self.what(),
            "checkpoint_step": self.checkpoint_step,
            "checkpoint_path": self.checkpoint_path,
            "found_by": self.found_by,
        }


def batch_of(feed: Any, index: int, data: Any, gather: bool) -> Any:
    """The batch of step ``index`` of a call's device input (a slice; gathered for indices)."""
    if gather:
        rows = jax.tree.leaves(feed)[0][index]
        return jax.tree.map(lambda d: d[rows], data)
    return jax.tree.map(lambda x: x[index], feed)


def diagnosed(layers: tuple[str, ...], probe: dict[str, Any]) -> tuple[float, list[str], list[str]]:
    """``(loss, grad_layers, update_layers)`` from a probe of the bad step (host values): the
    layers whose gradients or updates hold a NaN or an inf (their sum of squares is not finite;
    so is one of a value beyond ~1.8e19, as good as diverged)."""
    bad_g = [n for n, v in zip(layers, np.asarray(probe["grad_sq"])) if not np.isfinite(v)]
    bad_u = [n for n, v in zip(layers, np.asarray(probe["update_sq"])) if not np.isfinite(v)]
    return float(probe["loss"]), bad_g, bad_u


def _cell_where() -> Callable[[str], str | None] | None:
    """``filename -> "In[5]"`` inside IPython (found through ``sys.modules``: the trainer never
    imports IPython), else ``None``."""
    ipython = sys.modules.get("IPython")
    get = getattr(ipython, "get_ipython", None)
    shell = get() if get is not None else None
    if shell is None or not hasattr(shell, "compile"):
        return None

    def where(filename: str) -> str | None:
        try:
            named = shell.compile.format_code_name(filename)
        except Exception:
            return None
        return named[1] if named else None

    return where


@dataclasses.dataclass(frozen=True)
class DivergenceReport(Result):
    """The diverged step replayed under ``checkify``: what went non-finite, and where.

    Attributes:
      divergence: the run's :class:`Divergence` (step, loss, layers, checkpoint) as a dict.
      check: the ``jaxmagic.check.CheckReport`` of the replayed step (``findings``: the
        operations that produced NaN/inf, each with the user's source line).
      notes: how the replay ran (e.g. the model was changed since, the replay did not use it).
    """

    divergence: dict[str, Any]
    check: Any
    notes: tuple[str, ...] = ()

    @property
    def finding(self) -> Any:
        """The first faulting operation found (a ``jaxmagic.check.Finding``), or ``None``."""
        return self.check.findings[0] if self.check.findings else None

    @property
    def operation(self) -> str | None:
        """The primitive that produced the first NaN/inf (``log``, ``div``, ``mul``, ...)."""
        f = self.finding
        return f.primitive if f is not None else None

    @property
    def source(self) -> str | None:
        """The user's source line of that operation."""
        f = self.finding
        return f.source if f is not None else None

    def summary(self) -> str:
        d = self.divergence
        f = self.finding
        where = (
            f"{f.title} by {f.primitive or 'an operation'} at {f.location()}"
            if f
            else "no faulting operation found"
        )
        return f"step {d['step']}: {where} ({d['what']})"

    def to_text(self, width: int = 100) -> str:
        from jaxmagic.render.flight import divergence_text

        return divergence_text(self, width=width)

    def to_html(self) -> str:
        from jaxmagic.render.flight import divergence_html

        return divergence_html(self)

    def to_dict(self) -> dict[str, Any]:
        f = self.finding
        return {
            "divergence": dict(self.divergence),
            "operation": f.primitive if f else None,
            "location": f.location() if f else None,
            "source": f.source if f else None,
            "check": self.check.to_dict(),
            "notes": list(self.notes),
        }


def model_changed(model_params: Any, kept: Any) -> bool:
    """Whether the model's trained variables differ from the kept state (by value)."""
    a, b = jax.tree.leaves(model_params), jax.tree.leaves(kept)
    if len(a) != len(b):
        return True
    for x, y in zip(a, b):
        if x is y:
            continue
        if np.shape(x) != np.shape(y) or not np.array_equal(np.asarray(x), np.asarray(y), equal_nan=True):
            return True
    return False


def replay(
    d: Divergence,
    step_fn: Callable,
    *,
    changed: bool,
    where: Callable[[str], str | None] | None = None,
) -> DivergenceReport:
    """Re-run the diverged step (``step_fn(params, rest, opt, batch)``) from the kept state on
    its batch under checkify; nothing is donated or written back."""
    from jaxmagic.check import check_call

    assert d.state is not None
    for x in jax.tree.leaves((d.state, d.batch)):
        if getattr(x, "is_deleted", lambda: False)():
            raise RuntimeError(
                f"the state of step {d.last_finite_step} is gone (its buffers were reused); "
                "replay_diverged() works until the next fit()"
            )
    check = check_call(
        step_fn,
        d.state["params"],
        d.state["rest"],
        d.state["opt"],
        d.batch,
        checks=("nan", "div"),
        where=where if where is not None else _cell_where(),
        call_name="Trainer.replay_step",
    )
    notes = []
    if changed:
        notes.append(
            "the model was changed after the divergence: the replay used the state the trainer kept "
            f"from step {d.last_finite_step}, and left the model as it is"
        )
    if not check.findings:
        notes.append(
            "checkify found no NaN produced in this step: the non-finite value may come from an inf "
            "that only later turns into NaN, or from the optimizer state (see the layers above)"
        )
    return DivergenceReport(divergence=d.to_dict(), check=check, notes=tuple(notes))


def summary_line(d: dict[str, Any]) -> str:
    """One line for the History text: ``diverged at step 7: gradients non-finite in l1``."""
    ck = f"; last checkpoint step {d['checkpoint_step']}" if d.get("checkpoint_step") is not None else ""
    return f"diverged at step {d['step']} (loss {d['loss']}): {d['what']}{ck}"
