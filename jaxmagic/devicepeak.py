"""A device's peak FLOP/s, shared by the trainer (MFU) and ``%%jaxprofile --trace`` (utilisation).

Known accelerators have a peak by device kind (dense bf16, the usual MFU convention, from the
vendors' data sheets). Any other device, a CPU always (its peak depends on its cores, vector
units and what else runs on it), is measured once per process with a float32 matmul and cached.
Callers measure outside any timed region: the trainer before its first step, the profiler when it
builds a report, never inside the user's cell.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any

# dense bf16 peak FLOP/s by device_kind prefix (vendor data sheets)
KNOWN_PEAK = {
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
MATMUL_N, MATMUL_REPEATS = 512, 7
_measured: dict[str, float | None] = {}  # "platform:kind" -> FLOP/s (None: could not measure)


@dataclass(frozen=True)
class Peak:
    """One device's peak FLOP/s and where the number comes from."""

    flops: float
    measured: bool  # True: timed here by a matmul; False: known by device kind
    device_kind: str

    def describe(self) -> str:
        """``measured once per process: best of 7 float32 512×512 matmuls on cpu`` style text."""
        if self.measured:
            return (
                f"measured once per process: best of {MATMUL_REPEATS} float32 "
                f"{MATMUL_N}×{MATMUL_N} matmuls on {self.device_kind}"
            )
        return f"dense bf16 peak of {self.device_kind} (data sheet)"


def _kind(device: Any) -> str:
    return str(getattr(device, "device_kind", ""))


def _key(device: Any) -> str:
    return f"{getattr(device, 'platform', '?')}:{_kind(device)}"


def _measure(device: Any, name: str) -> float:
    """FLOP/s of an ``n``×``n`` float32 matmul on ``device``: the best of the repeats."""
    import jax
    import numpy as np

    n = MATMUL_N
    # numpy input: the matmul is the only program this compiles
    a = jax.device_put(np.ones((n, n), np.float32), device)

    def matmul(x: Any) -> Any:
        return x @ x

    matmul.__name__ = matmul.__qualname__ = name  # what profiles and compile logs show
    mm = jax.jit(matmul)
    mm(a).block_until_ready()
    times = []
    for _ in range(MATMUL_REPEATS):
        t = time.perf_counter()
        mm(a).block_until_ready()
        times.append(time.perf_counter() - t)
    best = min(times) if min(times) > 0 else statistics.median(times)
    return 2.0 * n**3 / best


def peak_known(device: Any) -> bool:
    """True when ``peak_flops(device)`` needs no measurement (known by kind, or measured before)."""
    return any(_kind(device).startswith(p) for p in KNOWN_PEAK) or _key(device) in _measured


def peak(device: Any, *, name: str = "jaxmagic.measure_peak_flops") -> Peak | None:
    """``device``'s peak: by device kind, else measured once per process and cached.

    Args:
        device: a ``jax.Device``.
        name: what the measuring matmul is called in profiles and compile logs.

    Returns:
        A ``Peak``, or ``None`` when the kind is unknown and the device cannot run the matmul.

    Example::

        devicepeak.peak(jax.devices()[0]).flops
    """
    kind = _kind(device)
    for prefix, flops in KNOWN_PEAK.items():
        if kind.startswith(prefix):
            return Peak(flops, measured=False, device_kind=kind)
    key = _key(device)
    if key not in _measured:
        try:
            _measured[key] = _measure(device, name)
        except Exception:  # not a device JAX can run on: the peak stays unknown (shown n/a)
            _measured[key] = None
    flops = _measured[key]
    return None if flops is None else Peak(flops, measured=True, device_kind=kind or "?")


def peak_flops(device: Any, *, name: str = "jaxmagic.measure_peak_flops") -> float | None:
    """``peak(device).flops``, or ``None`` when the peak is unknown."""
    p = peak(device, name=name)
    return None if p is None else p.flops
