"""The training history beside the checkpoints: an append-only JSON-lines log.

A checkpoint holds only fixed-size metadata (step, data position, seed, scores), so its size
does not grow with the step count; the per-step metrics, evaluations, epochs and run records
live in ``jaxmagic-history.jsonl`` in the checkpoint directory. Each line holds what was
added since the line before (new steps with their metrics, new evaluations, epochs,
checkpoints and compiles) plus the current run records and configuration, which are small.

Lines are written when a checkpoint is saved, never in the step loop, and before the save
starts: the log always covers every committed checkpoint. A resume reads the log, cuts it at
the restored step and rewrites it (to a temporary file, then renamed), so the resumed run's
history equals an uninterrupted run's. A last line cut short by a crash is ignored.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
from typing import Any

import numpy as np

from jaxmagic.train.history import History, RunRecord, _clean

LOG_NAME = "jaxmagic-history.jsonl"


class HistoryLog:
    """Append a :class:`History` to ``directory / LOG_NAME`` piece by piece; read it back.

    Args:
      directory: the checkpoint directory.
      writer: whether this process writes (process 0 of a multi-process run).

    Example:
      >>> log = HistoryLog(ckpt_dir, writer=True)
      >>> log.append(trainer.history)   # at a checkpoint save
      >>> log.load().steps[-1]
      100
    """

    def __init__(self, directory: str | os.PathLike, *, writer: bool):
        self.path = pathlib.Path(directory) / LOG_NAME
        self.writer = writer
        self._written = {"steps": 0, "evals": 0, "epochs": 0, "checkpoints": 0, "compiles": 0, "runs": 0}

    def append(self, history: History) -> None:
        """Write what ``history`` gained since the last append (one line)."""
        if not self.writer:
            return
        line = self._delta(history)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(line)

    def rewrite(self, history: History) -> None:
        """Replace the log with ``history`` (after a resume cut it at the restored step)."""
        if not self.writer:
            return
        self._written = dict.fromkeys(self._written, 0)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(self._delta(history), encoding="utf-8")
        os.replace(tmp, self.path)

    def reset(self) -> None:
        """Remove a log left without checkpoints (they were deleted): a new history starts here."""
        if self.writer:
            self.path.unlink(missing_ok=True)
        self._written = dict.fromkeys(self._written, 0)

    def load(self) -> History | None:
        """The logged history, or ``None`` when there is no log."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        history = History()
        for raw in text.splitlines():
            try:
                delta = json.loads(raw)
            except json.JSONDecodeError:
                break  # a line cut short by a crash: everything before it is whole
            _apply(history, delta)
        return history

    def _delta(self, h: History) -> str:
        w = self._written
        n, first_run = len(h._steps), max(0, w["runs"] - 1)  # the last run logged may have changed
        delta = {
            "steps": h._steps[w["steps"] : n],
            "metrics": {k: v[w["steps"] : n] for k, v in h._metrics.items()},
            **{name: getattr(h, name)[w[name] :] for name in ("evals", "epochs", "checkpoints", "compiles")},
            "runs_from": first_run,
            "runs": [r.to_dict() for r in h.runs[first_run:]],
            "config": h.config,
        }
        w.update(
            steps=n,
            runs=len(h.runs),
            **{name: len(getattr(h, name)) for name in ("evals", "epochs", "checkpoints", "compiles")},
        )
        return json.dumps(_clean(delta), separators=(",", ":")) + "\n"


def _apply(h: History, delta: dict[str, Any]) -> None:
    steps = delta.get("steps") or []
    if steps:
        logs = {
            k: np.asarray([math.nan if x is None else x for x in v], np.float64)
            for k, v in (delta.get("metrics") or {}).items()
        }
        h.add_steps(np.asarray(steps, np.int64), logs)
    for name in ("evals", "epochs", "checkpoints", "compiles"):
        getattr(h, name).extend(dict(x) for x in delta.get(name) or [])
    h.runs[int(delta.get("runs_from", len(h.runs))) :] = [
        RunRecord.from_dict(r) for r in delta.get("runs") or []
    ]
    h.config = dict(delta.get("config") or {})
