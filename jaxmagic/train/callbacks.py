"""Training callbacks: the hooks the trainer calls, and the built-in ones.

Hooks run on the host, at the metric cadence: the trainer fuses several steps per device
call and reads their metrics one call later, so ``on_steps`` receives a block of
consecutive steps at once (``on_step`` is called for each of them by default). To stop
training from a callback, call ``trainer.request_stop("why")``; it takes effect at the
next call boundary.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from jaxmagic.train.history import History
    from jaxmagic.train.trainer import Trainer


class Callback:
    """Base class: override the hooks you need. Every hook's default does nothing.

    Example:
      >>> class PrintEval(Callback):
      ...     def on_eval(self, trainer, step, logs):
      ...         print(step, logs["eval_loss"])
    """

    def on_train_begin(self, trainer: Trainer, info: dict[str, Any]) -> None:
        """Once per ``fit``, after validation and before the first step; ``info`` describes the run."""

    def on_steps(self, trainer: Trainer, steps: np.ndarray, logs: dict[str, np.ndarray]) -> None:
        """A block of finished steps: ``steps`` (1-based step numbers) and one array per metric."""
        for i, step in enumerate(steps):
            self.on_step(trainer, int(step), {k: float(v[i]) for k, v in logs.items()})

    def on_step(self, trainer: Trainer, step: int, logs: dict[str, float]) -> None:
        """One finished step with its metrics (called from ``on_steps``)."""

    def on_eval(self, trainer: Trainer, step: int, logs: dict[str, float]) -> None:
        """After an evaluation; ``logs`` keys are ``eval_loss`` and ``eval_<metric>``."""

    def on_epoch_end(self, trainer: Trainer, epoch: int, logs: dict[str, float]) -> None:
        """After an epoch of array data (``epoch`` counts from 1); train means and eval metrics."""

    def on_checkpoint(self, trainer: Trainer, step: int, path: str) -> None:
        """After a checkpoint save was started (saves are asynchronous)."""

    def on_train_end(self, trainer: Trainer, history: History) -> None:
        """Once per ``fit``, also after an interrupt, a stop or an error (``history.status`` says which)."""


class CallbackList(Callback):
    """Calls each callback in order."""

    def __init__(self, callbacks: Sequence[Callback]):
        for cb in callbacks:
            if not isinstance(cb, Callback):
                raise TypeError(
                    f"callbacks must be jaxmagic.train.Callback instances, got {type(cb).__name__}"
                )
        self.callbacks = list(callbacks)

    def _each(self, name: str, *args: Any) -> None:
        for cb in self.callbacks:
            getattr(cb, name)(*args)

    def on_train_begin(self, *a: Any) -> None:
        self._each("on_train_begin", *a)

    def on_steps(self, *a: Any) -> None:
        self._each("on_steps", *a)

    def on_eval(self, *a: Any) -> None:
        self._each("on_eval", *a)

    def on_epoch_end(self, *a: Any) -> None:
        self._each("on_epoch_end", *a)

    def on_checkpoint(self, *a: Any) -> None:
        self._each("on_checkpoint", *a)

    def on_train_end(self, *a: Any) -> None:
        self._each("on_train_end", *a)


class EarlyStopping(Callback):
    """Stop when an evaluation metric has not improved for ``patience`` evaluations.

    Args:
      monitor: an evaluation metric, e.g. ``"eval_loss"`` or ``"eval_accuracy"``.
      mode: ``"min"`` or ``"max"``.
      patience: evaluations without improvement before stopping.
      min_delta: the least change that counts as an improvement.

    Example:
      >>> trainer.fit((X, y), epochs=50, batch_size=64, eval_data=(Xv, yv),
      ...             callbacks=[EarlyStopping("eval_loss", patience=3)])
    """

    def __init__(
        self, monitor: str = "eval_loss", *, mode: str = "min", patience: int = 3, min_delta: float = 0.0
    ):
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        self.monitor, self.mode, self.patience, self.min_delta = (
            monitor,
            mode,
            int(patience),
            float(min_delta),
        )
        self.best: float | None = None
        self.best_step: int | None = None
        self.wait = 0

    def on_train_begin(self, trainer: Trainer, info: dict[str, Any]) -> None:
        self.best, self.best_step, self.wait = None, None, 0

    def on_eval(self, trainer: Trainer, step: int, logs: dict[str, float]) -> None:
        if self.monitor not in logs:
            raise KeyError(
                f"EarlyStopping monitors {self.monitor!r}, but evaluation logs only have {sorted(logs)}"
            )
        value = logs[self.monitor]
        better = self.best is None or (
            value < self.best - self.min_delta if self.mode == "min" else value > self.best + self.min_delta
        )
        if better:
            self.best, self.best_step, self.wait = value, step, 0
            return
        self.wait += 1
        if self.wait >= self.patience:
            trainer.request_stop(
                f"early stopping: {self.monitor} did not improve for {self.patience} "
                f"evaluations (best {self.best:.4g} at step {self.best_step})"
            )


class LearningRateLogger(Callback):
    """Record the learning rate of an optax schedule as the metric ``lr`` for every step.

    The schedule is evaluated on the host, once per block of steps (vectorised), so it costs
    nothing on the device.

    Args:
      schedule: the optax schedule passed to the optimizer (``step -> lr``).

    Example:
      >>> sched = optax.warmup_cosine_decay_schedule(0.0, 1e-3, 100, 1000)
      >>> Trainer(model, optax.adam(sched), loss_fn).fit(data, steps=1000,
      ...         callbacks=[LearningRateLogger(sched)])
    """

    def __init__(self, schedule: Callable[[Any], Any]):
        self.schedule = schedule

    def on_steps(self, trainer: Trainer, steps: np.ndarray, logs: dict[str, np.ndarray]) -> None:
        # optax counts from 0: step n was taken with schedule(n - 1)
        lr = np.asarray(self.schedule(np.asarray(steps) - 1), dtype=np.float64)
        lr = np.broadcast_to(lr, np.shape(steps))
        trainer.history.add_step_values("lr", steps, lr)
        logs["lr"] = lr
        if len(lr):  # shown live: progress views read `progress.last` (they run after user callbacks)
            trainer.progress.last["lr"] = float(lr[-1])


class MetricLogger(Callback):
    """Append metrics to a CSV or JSON-lines file (chosen by the extension: ``.csv`` / ``.jsonl``).

    JSON lines: one object per training step (every ``every``-th) and per evaluation, with
    ``kind`` (``train`` / ``eval``), ``step`` and the metric values. CSV: the same in long
    form, one row per value: ``kind,step,name,value``.

    Args:
      path: the file (appended to, so a resumed run continues it).
      every: log every n-th training step.

    Example:
      >>> trainer.fit(data, steps=500, callbacks=[MetricLogger("metrics.jsonl", every=10)])
    """

    def __init__(self, path: str | os.PathLike, *, every: int = 1):
        self.path = os.fspath(path)
        ext = os.path.splitext(self.path)[1].lower()
        if ext not in (".csv", ".jsonl", ".json"):
            raise ValueError(f"MetricLogger writes .csv or .jsonl files, got {self.path!r}")
        self.format = "csv" if ext == ".csv" else "jsonl"
        self.every = max(1, int(every))
        self._f: Any = None

    def _write(self, row: dict[str, Any]) -> None:
        if self._f is None:
            return
        if self.format == "jsonl":
            self._f.write(
                json.dumps(
                    {
                        k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                        for k, v in row.items()
                    }
                )
                + "\n"
            )
            return
        # CSV in long form (kind, step, name, value): train and eval rows share one header
        w = csv.writer(self._f)
        for k, v in row.items():
            if k not in ("kind", "step"):
                w.writerow([row["kind"], row["step"], k, repr(float(v))])

    def on_train_begin(self, trainer: Trainer, info: dict[str, Any]) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        self._f = open(self.path, "a", newline="")
        if self.format == "csv" and self._f.tell() == 0:
            csv.writer(self._f).writerow(["kind", "step", "name", "value"])

    def on_steps(self, trainer: Trainer, steps: np.ndarray, logs: dict[str, np.ndarray]) -> None:
        for i, step in enumerate(steps):
            if int(step) % self.every == 0:
                self._write({"kind": "train", "step": int(step), **{k: float(v[i]) for k, v in logs.items()}})

    def on_eval(self, trainer: Trainer, step: int, logs: dict[str, float]) -> None:
        self._write({"kind": "eval", "step": int(step), **{k: float(v) for k, v in logs.items()}})
        if self._f is not None:
            self._f.flush()

    def on_train_end(self, trainer: Trainer, history: History) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None
