"""Profiler overhead, side by side in one run (ratios, medians of interleaved repeats).

    .venv/bin/python bench/profile_overhead.py [--repeats 15]

Measures:
  * a dispatch-bound cell (3000 calls of a tiny jitted function), plain vs inside Profiler;
  * a compute-bound cell (matmuls), plain vs profiled;
  * the dispatch-bound cell profiled without and with the memory section (live-array snapshots);
  * one live-array snapshot with 10,000 live arrays (taken twice per profiled cell);
  * building the report for a block that compiled 50 functions;
  * `%load_ext jaxmagic` in a fresh interpreter where jax is not imported yet.
"""

from __future__ import annotations

import argparse
import inspect
import statistics
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
from abtest import interleaved, standard_cells  # noqa: I001 - bench/ is on sys.path when run as a script

from jaxmagic.profile import Profiler


def timed(fn, profiled: bool, memory: bool = True) -> float:
    # the cell's result stays referenced until timing ends, as a cell's variable would: an
    # output dropped at once is freed unwaited, and both sides then time only the dispatch
    if profiled:
        t = time.perf_counter()
        with Profiler(memory=memory):
            out = fn()
        elapsed = time.perf_counter() - t
    else:
        t = time.perf_counter()
        out = fn()
        jax.block_until_ready(jax.live_arrays())  # same end condition as the profiler's sync
        elapsed = time.perf_counter() - t
    del out
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=15)
    args = ap.parse_args()
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}, {len(jax.devices())} devices")

    dispatch_bound, compute_bound = standard_cells()

    def plain(fn):
        return timed(fn, False)

    def profiled(fn):
        return timed(fn, True)

    r1 = interleaved("dispatch-bound (3000 calls)", dispatch_bound, plain, profiled, args.repeats, "profiled")
    r2 = interleaved("compute-bound (6 matmul x3)", compute_bound, plain, profiled, args.repeats, "profiled")
    if "memory" in inspect.signature(Profiler).parameters:  # absent before the memory section

        def no_memory(fn):
            return timed(fn, True, memory=False)

        interleaved(
            "dispatch-bound, memory section",
            dispatch_bound,
            no_memory,
            profiled,
            args.repeats,
            "memory on",
            base="memory off",
        )
        own = []  # what the two snapshots of one profiled cell take, timed by themselves
        for _ in range(args.repeats):
            with Profiler() as prof:
                out = dispatch_bound()
            own.append(prof.capture.live_before.seconds + prof.capture.live_after.seconds)
            del out
        print(
            f"  its two snapshots, timed by themselves: median {statistics.median(own) * 1e3:.3f} ms per cell"
        )
        from jaxmagic.profile.memory import snapshot

        many = [jnp.full((4,), i, jnp.float32) for i in range(10_000 - len(jax.live_arrays()))]
        t = time.perf_counter()
        snapshot()  # the first one reads every array (then cached while it lives)
        cold = time.perf_counter() - t
        snaps = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            snapshot()
            snaps.append(time.perf_counter() - t)
        print(
            f"live-array snapshot, {len(jax.live_arrays()):,} live arrays  first {cold * 1e3:.1f} ms, "
            f"then median {statistics.median(snaps) * 1e3:.1f} ms (two per profiled cell, outside its wall time)"
        )
        del many

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
