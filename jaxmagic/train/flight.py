"""Flight recorder basics: FLOPs per step (for MFU).

MFU = FLOPs per step (from the compiled train call's XLA cost analysis) × steps/s ÷ the device's
peak FLOP/s; the peak comes from ``jaxmagic.devicepeak``, which the profiler's ``--trace`` shares.
"""

from __future__ import annotations

from typing import Any


def _flops(analysis: Any) -> float | None:
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0] if analysis else None
    if not isinstance(analysis, dict):
        return None
    v = analysis.get("flops")
    return float(v) if v is not None and v > 0 else None


def flops_per_step(lowered: Any, compiled: Any, steps: int) -> float | None:
    """FLOPs of one step of a ``steps``-step scanned call, from the compiled call's cost analysis.

    XLA's cost analysis counts a loop body once on some backends and once per trip on others;
    the unoptimized lowering (body once) tells which, so the answer is per step either way.
    ``None`` where the backend has no cost analysis.
    """
    try:
        per_call = _flops(compiled.cost_analysis())
        body_once = _flops(lowered.cost_analysis())
    except Exception:  # a backend without cost analysis
        return None
    if per_call is None:
        return body_once
    if steps > 1 and body_once and per_call > 1.5 * body_once:  # counted once per trip
        per_call /= steps
    return per_call
