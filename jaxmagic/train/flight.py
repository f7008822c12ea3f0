"""Flight recorder basics: FLOPs per step (for MFU).

MFU = FLOPs per step (from the compiled train call's XLA cost analysis) × steps/s ÷ the device's
peak FLOP/s; the peak comes from ``jaxmagic.devicepeak``, which the profiler's ``--trace`` shares.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from jaxmagic.train.step import readable

# platform -> its cost analysis counts a loop body once per trip (True) or once (False). CPU is
# known (tests/test_trainer_flight.py checks the FLOPs against a hand count); others are probed.
_per_trip: dict[str, bool] = {"cpu": False}


def _flops(analysis: Any) -> float | None:
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0] if analysis else None
    if not isinstance(analysis, dict):
        return None
    v = analysis.get("flops")
    return float(v) if v is not None and v > 0 else None


def _probe(device: Any) -> bool:
    """Whether ``device``'s backend counts a loop body once per trip in a compiled program's
    cost analysis: a 4-trip scan of an 8×8 matmul, compiled once (numpy inputs: it is the only
    program this compiles)."""
    c = jax.device_put(np.ones((8, 8), np.float32), device)
    xs = jax.device_put(np.ones((4, 8, 8), np.float32), device)

    def scan(c: Any, xs: Any) -> Any:
        return jax.lax.scan(lambda a, x: (a @ x, None), c, xs)[0]

    compiled = jax.jit(readable(scan, "Trainer.probe_cost_analysis")).lower(c, xs).compile()
    flops = _flops(compiled.cost_analysis())
    return flops is not None and flops > 1.5 * 2 * 8**3


def convention_known(device: Any) -> bool:
    """True when :func:`counts_per_trip` needs no probe (already probed in this process)."""
    return device.platform in _per_trip


def counts_per_trip(device: Any) -> bool:
    """Does the backend's cost analysis count a loop body once per trip (else once)? Probed once
    per process and backend, and cached: cheaper than a second cost analysis of every train
    call's unoptimised program (0.1 s for a small MLP, more for big ones)."""
    if device.platform not in _per_trip:
        _per_trip[device.platform] = _probe(device)
    return _per_trip[device.platform]


def flops_per_step(compiled: Any, steps: int, per_trip: bool) -> float | None:
    """FLOPs of one step of a ``steps``-step scanned call, from the compiled call's cost analysis.

    XLA's cost analysis counts a loop body once on some backends and once per trip on others
    (``per_trip``, from :func:`counts_per_trip`), so the answer is per step either way.
    ``None`` where the backend has no cost analysis.
    """
    try:
        per_call = _flops(compiled.cost_analysis())
    except Exception:  # a backend without cost analysis
        return None
    if per_call is not None and per_trip and steps > 1:
        per_call /= steps
    return per_call
