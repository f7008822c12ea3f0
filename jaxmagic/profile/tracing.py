"""``--trace``: record a ``jax.profiler`` trace and read per-function device time from it.

The trace costs real overhead (DESIGN.md §3: ~11× on a dispatch-bound cell), which is why
the default profiler mode never traces. The Perfetto JSON written next to the XPlane file
is plain JSON, so it is parsed here without TensorFlow/XProf; every XLA op event carries
its ``hlo_module`` (``jit_f``) and ``run_id`` (one per execution).
"""

from __future__ import annotations

import glob
import gzip
import json
import os
import re
import tempfile
from collections import defaultdict
from typing import Any

TIMELINE_MAX = 400  # executions drawn in the inline timeline


def _module_to_name(module: str) -> str:
    return module[4:] if module.startswith("jit_") else module


def sanitize(name: str) -> str:
    """How XLA spells a function name in a module name (``<lambda>`` -> ``_lambda_``)."""
    return re.sub(r"[^A-Za-z0-9_.\-]", "_", name)


class TraceSession:
    """Start/stop a ``jax.profiler`` trace into ``directory`` (``""``/None: a new temporary
    folder) and summarise it."""

    def __init__(self, directory: str | None = None):
        self.directory = os.path.abspath(os.path.expanduser(directory)) if directory else \
            tempfile.mkdtemp(prefix="jaxprofile-trace-")
        self.error: str | None = None
        self._running = False

    def start(self) -> None:
        import jax

        os.makedirs(self.directory, exist_ok=True)
        try:
            jax.profiler.start_trace(self.directory, create_perfetto_trace=True)
            self._running = True
        except Exception as e:  # e.g. another trace already running (nested --trace)
            self.error = f"trace not recorded: {e}"

    def stop(self) -> None:
        import jax

        if self._running:
            self._running = False
            try:
                jax.profiler.stop_trace()
            except Exception as e:
                self.error = f"trace not recorded: {e}"

    def summary(self) -> dict[str, Any]:
        """``{"dir", "device_s": {name: s}, "calls": {name: n}, "timeline": [...], "error"}``."""
        out: dict[str, Any] = {"dir": self.directory, "device_s": {}, "calls": {}, "timeline": [],
                               "error": self.error}
        files = sorted(glob.glob(os.path.join(self.directory, "**", "perfetto_trace.json.gz"),
                                 recursive=True), key=os.path.getmtime)
        if self.error or not files:
            out["error"] = self.error or "trace not recorded: no trace file was written"
            return out
        out.update(summarise(files[-1]))
        return out


def summarise(path: str) -> dict[str, Any]:
    """Per-module device time, execution count and an execution timeline from a Perfetto file."""
    with gzip.open(path, "rt") as fh:
        data = json.load(fh)
    events = data["traceEvents"] if isinstance(data, dict) else data
    runs: dict[tuple[str, str], list[float]] = {}
    busy: dict[str, float] = defaultdict(float)
    for e in events:
        args = e.get("args") or {}
        module = args.get("hlo_module")
        if e.get("ph") != "X" or not module:
            continue
        start, dur = float(e["ts"]), float(e.get("dur", 0.0))
        busy[module] += dur
        key = (module, str(args.get("run_id", "")))
        span = runs.setdefault(key, [start, start + dur])
        span[0], span[1] = min(span[0], start), max(span[1], start + dur)
    calls: dict[str, int] = defaultdict(int)
    for module, _run in runs:
        calls[module] += 1
    t0 = min((s for s, _ in runs.values()), default=0.0)
    timeline = sorted(({"name": _module_to_name(m), "start_s": (s - t0) / 1e6, "dur_s": (t - s) / 1e6}
                       for (m, _r), (s, t) in runs.items()), key=lambda e: e["start_s"])[:TIMELINE_MAX]
    return {"device_s": {_module_to_name(m): us / 1e6 for m, us in busy.items()},
            "calls": {_module_to_name(m): n for m, n in calls.items()},
            "timeline": timeline}

