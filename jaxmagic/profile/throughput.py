"""Achieved FLOP/s and bytes/s per function under ``--trace``, and utilisation of the device's peak.

FLOPs and bytes per execution come from the compiled program's XLA cost analysis (per device for
a program partitioned over several devices), executions and device time from the trace. So

    FLOP/s = flops × executions × devices / device_s

where ``device_s`` is the device time summed over the devices one execution ran on: the rate of
one device, comparable with one device's peak. Each number that cannot be had honestly is
``None`` with the reason, never a guess.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Throughput:
    """What one function achieved on the device while traced (``None``: not known, see ``note``)."""

    flops_per_s: float | None
    bytes_per_s: float | None
    utilization: float | None  # flops_per_s / the device's peak FLOP/s
    executions: int | None
    devices: int
    note: str | None = None  # why a number is missing
    flops: float | None = None  # per execution and device, as used for flops_per_s
    bytes_accessed: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "flops": self.flops,
            "bytes_accessed": self.bytes_accessed,
            "flops_per_s": self.flops_per_s,
            "bytes_per_s": self.bytes_per_s,
            "utilization": self.utilization,
            "executions": self.executions,
            "devices": self.devices,
            "note": self.note,
        }


def _positive(value: Any) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if v > 0 and v == v and v != float("inf") else None


def achieved(
    *,
    flops: Any,
    bytes_accessed: Any,
    executions: int | None,
    devices: int,
    device_s: float | None,
    programs: int,
    shared_name: bool,
    peak_flops: float | None,
    loops: int = 0,
) -> Throughput:
    """The throughput of one function from its cost analysis and its traced device time.

    Args:
        flops / bytes_accessed: per execution, from ``cost_analysis()`` (``None``, ``-1`` or
            anything not a positive number: unknown).
        executions: executions whose device time is in ``device_s``.
        devices: the devices one execution ran on.
        device_s: device time, summed over those devices.
        programs: programs compiled for the function in the profiled code (more than one: the
            executions ran different programs, so no one FLOP count fits them).
        shared_name: another function of the report has the same XLA module name, so the
            trace cannot tell their device time apart.
        peak_flops: one device's peak FLOP/s, ``None`` if unknown.
        loops: ``while`` ops in the optimized program. XLA's cost analysis counts a loop body
            once, not once per iteration, on some backends (CPU here), so the FLOPs of a program
            with a loop are not known per execution.
    """
    n_devices = max(1, int(devices or 1))
    seconds = _positive(device_s)
    note = None
    if seconds is None or not executions:
        note = "no device time in the trace"
    elif shared_name:
        note = "another function has the same name: the trace does not tell their device time apart"
    elif programs == 0:
        note = (
            "compiled before the profiled code, so its cost analysis was not seen: run "
            "jax.clear_caches() before profiling to compile it inside"
        )
    elif programs > 1:
        note = f"{programs} programs compiled: the executions did not all run the same program"
    elif loops:
        note = (
            "the program has a loop (while/scan): XLA's cost analysis may count its body once, not "
            "once per iteration, so its FLOPs and bytes per execution are not known"
        )
    if note is not None:
        return Throughput(None, None, None, executions, n_devices, note)
    per_device_s = seconds / (executions * n_devices)  # type: ignore[operator]
    f, b = _positive(flops), _positive(bytes_accessed)
    flops_s = None if f is None else f / per_device_s
    bytes_s = None if b is None else b / per_device_s
    missing = [w for w, v in (("FLOPs", f), ("bytes accessed", b)) if v is None]
    if missing:
        note = f"the cost analysis has no {' or '.join(missing)}"
    peak = _positive(peak_flops)
    util = None if flops_s is None or peak is None else flops_s / peak
    if flops_s is not None and peak is None:
        note = "the device's peak FLOP/s is not known"
    return Throughput(flops_s, bytes_s, util, executions, n_devices, note, f, b)
