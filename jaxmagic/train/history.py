"""``History``: what a training run did — per-step metrics, evaluations, epochs, checkpoints,
compiles and timings. A result object (text, self-contained HTML, ``to_dict``)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from jaxmagic._format import fmt_count
from jaxmagic._result import Result
from jaxmagic.train.recorder import FlightLog


def _clean(v: Any) -> Any:
    """JSON-safe: numpy scalars to Python, non-finite floats to None."""
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    if isinstance(v, (np.floating, float)):
        v = float(v)
        return v if math.isfinite(v) else None
    if isinstance(v, np.integer):
        return int(v)
    return v


@dataclasses.dataclass
class RunRecord:
    """One ``fit`` (or one resume): where it started and ended, how it ended, and its timings.

    ``status`` is ``running`` while the fit runs, then ``completed``, ``stopped``,
    ``interrupted``, ``diverged`` or ``failed``; ``resumed`` marks a restore from a checkpoint.
    ``notes`` are things the run did that the user should know (e.g. a short batch dropped).
    """

    start_step: int
    end_step: int
    status: str = "running"
    message: str = ""
    steps: int = 0
    examples: int = 0
    train_seconds: float = 0.0
    compile_seconds: float = 0.0
    data_wait_seconds: float = 0.0  # of train_seconds, waiting for input
    flops_per_step: float | None = None  # per device, from the compiled call's cost analysis
    peak_flops: float | None = None  # of one device
    wall_seconds: float = 0.0
    started: float = 0.0
    notes: list[str] = dataclasses.field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunRecord:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


class History(Result):
    """Metrics and events of a trainer's runs, cumulative over ``fit`` calls and resumes.

    Attributes:
      steps: 1-based step numbers with recorded metrics (``np.ndarray``).
      metrics: name -> per-step values aligned with ``steps`` (``np.ndarray``; NaN where absent).
      evals: one dict per evaluation (``step``, ``epoch``, ``eval_*`` values).
      epochs: one dict per finished epoch (array data): train means and eval values.
      checkpoints: one dict per checkpoint save (``step``, ``path``, ``reason``).
      compiles: one dict per compilation (``what``, ``seconds``).
      runs: one :class:`RunRecord` per ``fit`` and per resume (steps, status, message, timings).
      config: how the last run was set up (batch size, steps per call, devices, ...).
      flight: the flight recorder's per-layer gradient, update and parameter norms and memory
        high-water, one record per compiled call (:class:`~jaxmagic.train.recorder.FlightLog`).
      divergence: the last divergence (step, layers that went non-finite, last checkpoint), or
        ``None``.

    Example:
      >>> history = trainer.fit((X, y), epochs=3, batch_size=64)
      >>> history.metric("loss")[-1], history.status
      (0.12, 'completed')
    """

    def __init__(self) -> None:
        self._steps: list[int] = []
        self._metrics: dict[str, list[float]] = {}
        self.evals: list[dict[str, Any]] = []
        self.epochs: list[dict[str, Any]] = []
        self.checkpoints: list[dict[str, Any]] = []
        self.compiles: list[dict[str, Any]] = []
        self.runs: list[RunRecord] = []
        self.config: dict[str, Any] = {}
        self.flight = FlightLog()
        self.divergence: dict[str, Any] | None = None

    # -- recording ------------------------------------------------------------------------
    def add_steps(self, steps: np.ndarray, logs: dict[str, np.ndarray]) -> None:
        n0 = len(self._steps)
        self._steps.extend(int(s) for s in steps)
        for name in set(self._metrics) | set(logs):
            col = self._metrics.setdefault(name, [math.nan] * n0)
            vals = logs.get(name)
            col.extend(np.asarray(vals, np.float64).tolist() if vals is not None else [math.nan] * len(steps))

    def add_step_values(self, name: str, steps: np.ndarray, values: np.ndarray) -> None:
        """Attach ``values`` of metric ``name`` to already recorded ``steps`` (e.g. the learning rate)."""
        col = self._metrics.setdefault(name, [math.nan] * len(self._steps))
        tail = max(0, len(self._steps) - 4 * len(steps) - 16)  # the steps were just recorded
        index = {s: i for i, s in enumerate(self._steps[tail:], tail)}
        for s, v in zip(np.asarray(steps).tolist(), np.asarray(values, np.float64).tolist()):
            i = index.get(int(s))
            if i is not None:
                col[i] = v

    # -- reading --------------------------------------------------------------------------
    @property
    def steps(self) -> np.ndarray:
        return np.asarray(self._steps, np.int64)

    @property
    def metrics(self) -> dict[str, np.ndarray]:
        return {k: np.asarray(v, np.float64) for k, v in self._metrics.items()}

    def metric(self, name: str) -> np.ndarray:
        """Per-step values of a training metric, or per-evaluation values of an ``eval_*`` one."""
        if name in self._metrics:
            return np.asarray(self._metrics[name], np.float64)
        if self.evals and any(name in e for e in self.evals):
            return np.asarray([e.get(name, math.nan) for e in self.evals], np.float64)
        known = sorted(self._metrics) + sorted({k for e in self.evals for k in e if k.startswith("eval_")})
        raise KeyError(f"no metric {name!r}; known: {known}")

    @property
    def status(self) -> str:
        """``completed``, ``stopped``, ``interrupted``, ``diverged``, ``failed`` or ``empty``."""
        return self.runs[-1].status if self.runs else "empty"

    @property
    def message(self) -> str:
        return self.runs[-1].message if self.runs else ""

    @property
    def last_step(self) -> int:
        return self.runs[-1].end_step if self.runs else (self._steps[-1] if self._steps else 0)

    def _totals(self) -> dict[str, float]:
        steps = sum(r.steps for r in self.runs)
        train_s = sum(r.train_seconds for r in self.runs)
        examples = sum(r.examples for r in self.runs)
        compile_s = sum(c["seconds"] for c in self.compiles)
        wait_s = sum(r.data_wait_seconds for r in self.runs)
        counted = [r for r in self.runs if r.flops_per_step and r.train_seconds > 0]
        flops_s = (
            sum(r.steps * r.flops_per_step for r in counted) / sum(r.train_seconds for r in counted)
            if counted
            else math.nan
        )
        peak = next((r.peak_flops for r in reversed(counted) if r.peak_flops), None)
        mem = [m for m in self.flight.memory_peak if m is not None]
        return {
            "steps": steps,
            "train_seconds": train_s,
            "compile_seconds": compile_s,
            "steps_per_second": steps / train_s if train_s > 0 else math.nan,
            "examples_per_second": examples / train_s if train_s > 0 else math.nan,
            "data_wait_seconds": wait_s,
            "data_wait_fraction": wait_s / train_s if train_s > 0 else math.nan,
            "flops_per_second": flops_s,
            "mfu": flops_s / peak if peak else math.nan,
            "memory_peak_bytes": max(mem) if mem else None,
        }

    # -- result protocol ------------------------------------------------------------------
    def summary(self) -> str:
        t = self._totals()
        parts = [f"{self.last_step} steps", self.status]
        if "loss" in self._metrics and self._metrics["loss"]:
            parts.append(f"loss {self._metrics['loss'][-1]:.4g}")
        if self.evals:
            parts.append(f"eval_loss {self.evals[-1].get('eval_loss', math.nan):.4g}")
        if math.isfinite(t["steps_per_second"]):
            parts.append(f"{fmt_count(t['steps_per_second'])} steps/s")
        return ", ".join(parts)

    def to_text(self, width: int = 100) -> str:
        from jaxmagic.render.training import history_text

        return history_text(self, width=width)

    def to_html(self) -> str:
        from jaxmagic.render.training import history_html

        return history_html(self)

    def to_dict(self) -> dict[str, Any]:
        return _clean(
            {
                "steps": list(self._steps),
                "metrics": {k: list(v) for k, v in self._metrics.items()},
                "evals": self.evals,
                "epochs": self.epochs,
                "checkpoints": self.checkpoints,
                "compiles": self.compiles,
                "runs": [r.to_dict() for r in self.runs],
                "config": self.config,
                "flight": self.flight.to_dict(),
                "divergence": self.divergence,
                "totals": self._totals(),
                "status": self.status,
            }
        )

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> History:
        """Rebuild a History from ``to_dict()`` output (used when resuming from a checkpoint)."""
        h = cls()
        h._steps = [int(s) for s in d.get("steps", [])]
        h._metrics = {
            k: [math.nan if v is None else float(v) for v in vals] for k, vals in d.get("metrics", {}).items()
        }
        for name in ("evals", "epochs", "checkpoints", "compiles"):
            setattr(h, name, [dict(x) for x in d.get(name, [])])
        h.runs = [RunRecord.from_dict(r) for r in d.get("runs", [])]
        h.config = dict(d.get("config", {}))
        h.flight = FlightLog.from_dict(d.get("flight"))
        h.divergence = dict(d["divergence"]) if d.get("divergence") else None
        return h

    def truncate(self, step: int) -> None:
        """Forget per-step records after ``step`` (a resumed run repeats them)."""
        keep = sum(1 for s in self._steps if s <= step)
        self._steps = self._steps[:keep]
        for k in self._metrics:
            self._metrics[k] = self._metrics[k][:keep]
        self.evals = [e for e in self.evals if e["step"] <= step]
        self.epochs = [e for e in self.epochs if e["step"] <= step]
        self.checkpoints = [c for c in self.checkpoints if c["step"] <= step]
        self.flight.truncate(step)
