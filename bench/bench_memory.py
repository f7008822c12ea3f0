"""Speed target of issue 9: ``jaxmagic.memory()`` over 10,000 live arrays and a namespace
holding a 1,000-layer NNX model (+ its Adam optimizer) in < 1 s.

    XLA_FLAGS=--xla_force_host_platform_device_count=8 python bench/bench_memory.py

Baseline in the same run: ``jax.live_arrays()`` with per-array bytes (what a user can do today
without owners), so the ratio shows what the owner search costs on top of listing.
"""

from __future__ import annotations

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import time  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402

import jaxmagic  # noqa: E402


def timed(fn, repeat=5):
    """Median wall time and median CPU time of this process (the machine is shared: CPU time
    is what the call costs without other jobs competing for the cores)."""
    walls, cpus = [], []
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    walls.sort()
    cpus.sort()
    timed.cpu = cpus[len(cpus) // 2]
    return walls[len(walls) // 2], out


class Deep(nnx.Module):
    def __init__(self, n, rngs):
        self.layers = nnx.List([nnx.Linear(16, 16, rngs=rngs) for _ in range(n)])


def main() -> None:
    model = Deep(1000, nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)
    loose = [jnp.full((8,), i, jnp.float32) for i in range(10_000 - len(jax.live_arrays()) - 1000)]
    history = {i: jnp.ones(4) for i in range(1000)}
    ns = {"model": model, "optimizer": optimizer, "loose": loose, "Out": history, "_": history[999]}
    jax.block_until_ready(jax.live_arrays())
    n_live = len(jax.live_arrays())

    def baseline():
        return sum(a.nbytes for a in jax.live_arrays())

    t_base, _ = timed(baseline)
    t_mem, report = timed(lambda: jaxmagic.memory(ns))
    cpu_mem = timed.cpu
    t_text, text = timed(lambda: report.to_text())
    t_html, html = timed(lambda: report.to_html())
    owned = sum(a.kind != "unowned" for a in report.arrays)
    print(
        f"jax {jax.__version__}, {jax.device_count()} {jax.default_backend()} devices; "
        f"{n_live} live arrays, namespace: 1000-layer NNX model + Adam ({report.objects_searched} objects searched)"
    )
    print(
        f"  jaxmagic.memory()            {t_mem * 1e3:8.1f} ms wall, {cpu_mem * 1e3:.1f} ms CPU   "
        f"target < 1000 ms   ({owned} of {len(report.arrays)} arrays owned)"
    )
    print(
        f"  + to_text / to_html          {t_text * 1e3:8.1f} ms / {t_html * 1e3:.1f} ms "
        f"(HTML {len(html) / 1e3:.0f} kB, top {report.top})"
    )
    print(f"  baseline: live_arrays+nbytes {t_base * 1e3:8.1f} ms   ratio {t_mem / t_base:.1f}x")
    print(f"  load average {open('/proc/loadavg').read().split()[0]} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
