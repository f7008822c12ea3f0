"""Flight recorder basics: FLOPs per step, device peak FLOP/s (for MFU).

MFU = FLOPs per step (from the compiled train call's XLA cost analysis) × steps/s ÷ the device's
peak FLOP/s. The peak is known by device kind for common accelerators (dense bf16, the usual MFU
convention) and otherwise measured once per process with a float32 matmul (on CPU always: a
CPU's peak depends on its cores, vector units and what else runs on it), then cached.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import jax
import numpy as np

from jaxmagic.train.step import readable

# dense bf16 peak FLOP/s by device_kind prefix (vendor data sheets)
_KNOWN_PEAK = {
    "NVIDIA H100": 989e12,
    "NVIDIA H200": 989e12,
    "NVIDIA A100": 312e12,
    "TPU v4": 275e12,
    "TPU v5 lite": 197e12,
    "TPU v5e": 197e12,
    "TPU v5p": 459e12,
    "TPU v6 lite": 918e12,
    "TPU v6e": 918e12,
}
_measured: dict[str, float] = {}


def _measure(device: Any, n: int = 512, repeats: int = 7) -> float:
    """FLOP/s of an ``n``×``n`` float32 matmul on ``device``: the best of ``repeats`` runs."""
    # numpy input: the matmul is the only program this compiles (one entry in History.compiles)
    a = jax.device_put(np.ones((n, n), np.float32), device)
    mm = jax.jit(readable(lambda x: x @ x, "Trainer.measure_peak_flops"))
    mm(a).block_until_ready()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        mm(a).block_until_ready()
        times.append(time.perf_counter() - t)
    best = min(times) if min(times) > 0 else statistics.median(times)
    return 2.0 * n**3 / best


def peak_known(device: Any) -> bool:
    """True when ``peak_flops(device)`` needs no measurement (known by name, or cached)."""
    kind = str(getattr(device, "device_kind", ""))
    return any(kind.startswith(p) for p in _KNOWN_PEAK) or f"{device.platform}:{kind}" in _measured


def peak_flops(device: Any) -> float:
    """The device's peak FLOP/s: by device kind, else measured once by a matmul and cached."""
    kind = str(getattr(device, "device_kind", ""))
    for prefix, flops in _KNOWN_PEAK.items():
        if kind.startswith(prefix):
            return flops
    key = f"{device.platform}:{kind}"
    if key not in _measured:
        _measured[key] = _measure(device)
    return _measured[key]


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
