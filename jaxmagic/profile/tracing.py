"""``--trace``: record a ``jax.profiler`` trace and read per-function device time from it.

The trace costs real overhead (measured with jax 0.10.2 on CPU: 2000 tiny jitted calls took
23 ms plain and 257 ms traced, ~11×), which is why the default profiler mode never traces.
The Perfetto JSON written next to the XPlane file is plain JSON, so it is parsed here without
TensorFlow/XProf; every XLA op event carries its ``hlo_module`` (``jit_f``) and ``run_id``
(one per execution).

Counts are exact when the whole cell is in the trace: ``stop`` waits for the device work the
cell dispatched (async dispatch) before stopping, and a trace the profiler cut short (it
keeps about a million events) is detected and its counts marked as lower bounds.
"""

from __future__ import annotations

import glob
import gzip
import json
import os
import re
import tempfile
import time
from collections import defaultdict
from typing import Any

TIMELINE_MAX = 400  # executions drawn in the inline timeline
# The profiler keeps about this many events (measured: a 20 s training cell stopped at
# ~1,000,000 events covering 2.5 s); at or above it, assume the trace was cut short.
TRUNCATION_EVENTS = 990_000
# ...and so was a trace whose events cover less than half of the time it ran, by over 0.5 s
# (a whole cell is covered: the Python tracer records every call, sleeps included).
TRUNCATION_SHARE, TRUNCATION_GAP_S = 0.5, 0.5


def _module_to_name(module: str) -> str:
    return (module[4:] if module.startswith("jit_") else module).rstrip("_")


def sanitize(name: str) -> str:
    """How a function name appears in its XLA module name (``<lambda>`` -> ``_lambda``:
    JAX replaces characters outside ``[\\w.-]`` by ``_``, XLA drops trailing ones)."""
    return re.sub(r"[^\w.\-]", "_", name).rstrip("_")


class TraceSession:
    """Start/stop a ``jax.profiler`` trace into ``directory`` (``""``/None: a new temporary
    folder) and summarise it."""

    def __init__(self, directory: str | None = None):
        self.directory = (
            os.path.abspath(os.path.expanduser(directory))
            if directory
            else tempfile.mkdtemp(prefix="jaxprofile-trace-")
        )
        self.error: str | None = None
        self._running = False
        self._started = self._stopped = 0.0

    def start(self) -> None:
        import jax

        os.makedirs(self.directory, exist_ok=True)
        try:
            jax.profiler.start_trace(self.directory, create_perfetto_trace=True)
            self._running = True
            self._started = time.perf_counter()
        except Exception as e:  # e.g. another trace already running (nested --trace)
            reason = (
                "another jax.profiler trace is already running (only one can run at a time)"
                if "already" in str(e).lower()
                else str(e)
            )
            self.error = f"--trace: no trace recorded: {reason}; the rest of the report is complete"

    def stop(self) -> None:
        """Wait for the device work dispatched so far, then stop the trace (executions still
        queued at stop time would be missing from it)."""
        import jax

        if self._running:
            self._running = False
            try:
                jax.block_until_ready([a for a in jax.live_arrays() if not a.is_deleted()])
            except Exception:  # a failed computation surfaces where its result is used
                pass
            self._stopped = time.perf_counter()
            try:
                jax.profiler.stop_trace()
            except Exception as e:
                self.error = f"--trace: no trace recorded: {e}; the rest of the report is complete"

    def summary(self) -> dict[str, Any]:
        """``{"dir", "device_s": {name: s}, "calls": {name: n}, "timeline": [...], "error",
        "truncated"}``; ``dir`` is ``None`` when no trace was written (``error`` says why),
        ``truncated`` a sentence when the counts are lower bounds."""
        out: dict[str, Any] = {
            "dir": self.directory,
            "device_s": {},
            "calls": {},
            "timeline": [],
            "error": self.error,
            "truncated": None,
        }
        path = self.trace_file()
        if self.error or path is None:
            out["dir"] = None
            out["error"] = self.error or "--trace: no trace recorded: no trace file was written"
            return out
        out.update(summarise(path, traced_s=self._stopped - self._started))
        return out

    def trace_file(self) -> str | None:
        """The Perfetto JSON file of the latest trace in ``directory``, if one was written."""
        files = sorted(
            glob.glob(os.path.join(self.directory, "**", "perfetto_trace.json.gz"), recursive=True),
            key=os.path.getmtime,
        )
        return files[-1] if files else None


_DISPATCH = re.compile(r"^PjitFunction\((?P<name>.*)\)$")


def _outermost_counts(spans: dict[tuple[str, Any], list[tuple[float, float]]]) -> dict[str, int]:
    """Calls per name from dispatch spans: a call records nested spans of the same name on
    its thread, so only spans not inside another one of that name are counted."""
    counts: dict[str, int] = defaultdict(int)
    for (name, _tid), items in spans.items():
        end = float("-inf")
        for start, stop in sorted(items):
            if start >= end:
                counts[name] += 1
                end = stop
            else:
                end = max(end, stop)
    return dict(counts)


def load_events(path: str) -> list[dict[str, Any]]:
    """The events of a ``perfetto_trace.json.gz`` file."""
    with gzip.open(path, "rt") as fh:
        data = json.load(fh)
    return data["traceEvents"] if isinstance(data, dict) else data


def summarise(path: str, traced_s: float | None = None) -> dict[str, Any]:
    """Calls, device time and an execution timeline per function from a Perfetto file.

    Calls come from the host's dispatch events (``PjitFunction(name)``), recorded when the
    call is made, so an execution still running when the trace stopped is counted too.
    Device time comes from XLA's op events (``hlo_module`` + ``run_id``): per device, the time
    covered by the function's ops (an op nested in another, like a loop body's ops inside the
    ``while`` op, is not counted twice), summed over the devices it ran on. ``traced_s``: how
    long the trace ran (host clock); with it a trace that ends early is reported in
    ``truncated`` (its counts are then lower bounds).

    Returns ``{"calls": {name: n}, "device_s": {name: s}, "device_runs": {name: n},
    "devices": {name: n}, "timeline": [...], "truncated": str | None}`` (names as the module
    spells them for ``device_s``/``device_runs``/``devices``, e.g. ``_lambda_`` for
    ``<lambda>``; ``devices``: the most devices one execution ran on).
    """
    events = load_events(path)
    runs: dict[tuple[str, str], list[float]] = {}
    spans: dict[tuple[str, Any], list[tuple[float, float]]] = defaultdict(list)
    run_devices: dict[tuple[str, str], set] = defaultdict(set)
    dispatch: dict[tuple[str, Any], list[tuple[float, float]]] = defaultdict(list)
    first, last = float("inf"), float("-inf")
    for e in events:
        if e.get("ph") != "X" or "ts" not in e:
            continue
        start, dur = float(e["ts"]), float(e.get("dur", 0.0))
        first, last = min(first, start), max(last, start + dur)
        if d := _DISPATCH.match(str(e.get("name", ""))):
            dispatch[(d["name"], e.get("tid"))].append((start, start + dur))
            continue
        args = e.get("args") or {}
        module = args.get("hlo_module")
        if not module:
            continue
        device = (e.get("pid"), args.get("device_ordinal"))
        spans[(module, device)].append((start, start + dur))
        key = (module, str(args.get("run_id", "")))
        run_devices[key].add(device)
        span = runs.setdefault(key, [start, start + dur])
        span[0], span[1] = min(span[0], start), max(span[1], start + dur)
    busy: dict[str, float] = defaultdict(float)
    for (module, _device), items in spans.items():
        busy[module] += _union(items)
    device_runs: dict[str, int] = defaultdict(int)
    devices: dict[str, int] = defaultdict(int)
    for module, run in runs:
        name = _module_to_name(module)
        device_runs[name] += 1
        devices[name] = max(devices[name], len(run_devices[(module, run)]))
    t0 = min((s for s, _ in runs.values()), default=0.0)
    timeline = sorted(
        (
            {"name": _module_to_name(m), "start_s": (s - t0) / 1e6, "dur_s": (t - s) / 1e6}
            for (m, _r), (s, t) in runs.items()
        ),
        key=lambda e: e["start_s"],
    )[:TIMELINE_MAX]
    covered_s = max(0.0, last - first) / 1e6 if last >= first else 0.0
    return {
        "calls": _outermost_counts(dispatch),
        "device_s": {_module_to_name(m): us / 1e6 for m, us in busy.items()},
        "device_runs": dict(device_runs),
        "devices": dict(devices),
        "timeline": timeline,
        "truncated": truncation(len(events), covered_s, traced_s),
    }


def _union(items: list[tuple[float, float]]) -> float:
    """Length of the union of ``(start, stop)`` intervals."""
    total, end = 0.0, float("-inf")
    for start, stop in sorted(items):
        if stop <= end:
            continue
        total += stop - max(start, end)
        end = stop
    return total


def truncation(n_events: int, covered_s: float, traced_s: float | None) -> str | None:
    """The sentence saying a trace was cut short, or ``None`` if it covers the whole cell."""
    cut = n_events >= TRUNCATION_EVENTS or (
        traced_s is not None
        and covered_s < TRUNCATION_SHARE * traced_s
        and traced_s - covered_s > TRUNCATION_GAP_S
    )
    if not cut:
        return None
    of = f" of {traced_s:.3g} s" if traced_s else ""
    return (
        f"--trace: trace truncated at {n_events:,} events covering {covered_s:.3g} s{of}: call "
        f"counts and device times are lower bounds (shown as ≥N); profile a shorter cell or "
        f"fewer steps for exact counts"
    )
