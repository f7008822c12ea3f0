"""Shared by the overhead benches: the standard cells and one interleaved A/B measurement."""

from __future__ import annotations

import statistics
from collections.abc import Callable

import jax
import jax.numpy as jnp


def interleaved(
    name: str,
    fn: Callable,
    plain: Callable,
    other: Callable,
    repeats: int,
    label: str,
    *,
    warm: bool = True,
    base: str = "plain",
) -> float:
    """Median seconds of ``plain(fn)`` and ``other(fn)`` over interleaved repeats (machine noise
    hits both sides alike); prints one line (``base`` names the first side) and returns the
    ratio other / plain."""
    if warm:
        fn()  # compile outside the measurement
    a, b = [], []
    for _ in range(repeats):
        a.append(plain(fn))
        b.append(other(fn))
    p, q = statistics.median(a), statistics.median(b)
    print(f"{name:<32} {base} {p * 1e3:8.2f} ms   {label} {q * 1e3:8.2f} ms   ratio {q / p:.3f}")
    return q / p


def standard_cells() -> tuple[Callable, Callable]:
    """``(dispatch_bound, compute_bound)``: 3000 calls of a tiny jitted function, and 6 matmul
    chains of 768x768 (both compile once, outside any measurement that warms first)."""
    tiny = jax.jit(lambda x: x + 1.0)
    x = jnp.ones(8)

    def dispatch_bound():
        y = x
        for _ in range(3000):
            y = tiny(y)
        return y

    mm = jax.jit(lambda a: jnp.tanh(a @ a) @ a)
    a = jnp.ones((768, 768)) / 768

    def compute_bound():
        y = a
        for _ in range(6):
            y = mm(y)
        return y

    return dispatch_bound, compute_bound
