"""Profiler overhead, side by side in one run (ratios, medians of interleaved repeats).

    .venv/bin/python bench/profile_overhead.py [--repeats 15]

Measures:
  * a dispatch-bound cell (3000 calls of a tiny jitted function), plain vs inside Profiler;
  * a compute-bound cell (matmuls), plain vs profiled;
  * building the report for a block that compiled 50 functions;
  * `%load_ext jaxmagic` in a fresh interpreter where jax is not imported yet.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

import jax
import jax.numpy as jnp

from jaxmagic.profile import Profiler


def timed(fn, profiled: bool) -> float:
    if profiled:
        t = time.perf_counter()
        with Profiler():
            fn()
        return time.perf_counter() - t
    t = time.perf_counter()
    fn()
    jax.block_until_ready(jax.live_arrays())  # same end condition as the profiler's sync
    return time.perf_counter() - t


def compare(name: str, fn, repeats: int) -> float:
    fn()  # compile outside the measurement
    plain, prof = [], []
    for _ in range(repeats):  # interleaved so machine noise hits both sides alike
        plain.append(timed(fn, False))
        prof.append(timed(fn, True))
    p, q = statistics.median(plain), statistics.median(prof)
    print(f"{name:<28} plain {p * 1e3:8.2f} ms   profiled {q * 1e3:8.2f} ms   ratio {q / p:.3f}")
    return q / p


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=15)
    args = ap.parse_args()
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}, {len(jax.devices())} devices")

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

    r1 = compare("dispatch-bound (3000 calls)", dispatch_bound, args.repeats)
    r2 = compare("compute-bound (6 matmul x3)", compute_bound, args.repeats)

    def make(k):
        def fn(v):
            return jnp.sin(v) * k + v.sum()

        fn.__name__ = fn.__qualname__ = f"fn{k:02d}"  # 50 distinct functions
        return jax.jit(fn)

    fns = [make(k) for k in range(50)]
    with Profiler() as prof:
        for f in fns:
            f(jnp.ones(16))
    builds = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        report = prof.report()
        builds.append(time.perf_counter() - t)
    t = time.perf_counter()
    html, _ = report.to_html(), report.to_text()
    render = time.perf_counter() - t
    print(
        f"report build, 50 functions   median {statistics.median(builds) * 1e3:.1f} ms "
        f"(+ render text+html {render * 1e3:.1f} ms, {len(html) // 1024} KiB html, "
        f"{len([f for f in report.functions if f.kind == 'jit'])} jit functions)"
    )

    code = (
        "import time; t=time.perf_counter(); from IPython.testing.globalipapp import start_ipython; "
        "ip=start_ipython(); t0=time.perf_counter(); ip.run_line_magic('load_ext','jaxmagic'); "
        "t1=time.perf_counter(); import sys; print(t1-t0, 'jax' in sys.modules)"
    )
    loads = []
    for _ in range(5):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        secs, jax_loaded = out.stdout.split()
        loads.append(float(secs))
    print(
        f"%load_ext jaxmagic (fresh process)  median {statistics.median(loads) * 1e3:.1f} ms, "
        f"jax imported: {jax_loaded}"
    )
    print(
        f"targets: dispatch ratio <= 1.05 -> {'OK' if r1 <= 1.05 else 'MISSED'}; "
        f"compute ratio <= 1.02 -> {'OK' if r2 <= 1.02 else 'MISSED'}; "
        f"build < 50 ms -> {'OK' if statistics.median(builds) < 0.05 else 'MISSED'}; "
        f"load < 300 ms -> {'OK' if statistics.median(loads) < 0.3 else 'MISSED'}"
    )


if __name__ == "__main__":
    main()
