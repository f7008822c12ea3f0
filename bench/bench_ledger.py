"""Compile-ledger cost, side by side in one run (ratios, medians of interleaved repeats).

    PYTHONPATH=$PWD .venv/bin/python bench/bench_ledger.py [--repeats 15]

Measures, with the session ledger installed (as after ``%load_ext jaxmagic``) vs not:
  * a dispatch-bound cell (3000 calls of a tiny jitted function: no compiles);
  * a compute-bound cell (matmuls: no compiles);
  * a compile-bound cell (40 fresh jitted functions: the listener runs on every compile);
  * building + rendering the report over 5,000 recorded compiles (text and HTML).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import jax
import jax.numpy as jnp
from abtest import interleaved, standard_cells  # noqa: I001 - bench/ is on sys.path when run as a script

from jaxmagic.ledger import CompileLedger
from jaxmagic.ledger.capture import BACKEND, LOWER, TRACE


def timed(fn, ledger: CompileLedger | None) -> float:
    if ledger is not None:
        ledger.install()
    try:
        t = time.perf_counter()
        jax.block_until_ready(fn())
        return time.perf_counter() - t
    finally:
        if ledger is not None:
            ledger.uninstall()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=15)
    args = ap.parse_args()
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}, {len(jax.devices())} devices")

    dispatch_bound, compute_bound = standard_cells()
    x = jnp.ones(8)

    def plain(fn):
        return timed(fn, None)

    def ledgered(fn):
        return timed(fn, CompileLedger())

    def compile_bound():
        out = []
        for k in range(40):  # a fresh function each time: 40 real compiles per call
            out.append(jax.jit(lambda v, k=k: jnp.sin(v) * k + v.sum())(x))
        return out

    interleaved("dispatch-bound (3000 calls)", dispatch_bound, plain, ledgered, args.repeats, "ledger")
    interleaved("compute-bound (6 matmul x3)", compute_bound, plain, ledgered, args.repeats, "ledger")
    interleaved(
        "compile-bound (40 compiles)",
        compile_bound,
        plain,
        ledgered,
        max(3, args.repeats // 3),
        "ledger",
        warm=False,
    )

    # 5,000 compiles through jax.monitoring itself: 500 functions over 10 cells each.
    cells = iter(range(10**9))
    ledger = CompileLedger(current_cell=lambda: next(cells) // 500)
    ledger.install()
    t = time.perf_counter()
    for i in range(5000):
        name = f"jit(fn{i % 500:03d})"
        jax.monitoring.record_event_duration_secs(TRACE, 0.001, fun_name=name[4:-1])
        jax.monitoring.record_event_duration_secs(LOWER, 0.002, fun_name=name)
        jax.monitoring.record_event_duration_secs(BACKEND, 0.01, fun_name=name)
    record = time.perf_counter() - t
    ledger.uninstall()
    builds, texts, htmls = [], [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        report = ledger.report()
        t1 = time.perf_counter()
        text = report.to_text()
        t2 = time.perf_counter()
        html = report.to_html()
        t3 = time.perf_counter()
        builds.append(t1 - t0)
        texts.append(t2 - t1)
        htmls.append(t3 - t2)
    total = statistics.median(b + t + h for b, t, h in zip(builds, texts, htmls))
    print(
        f"5000 compiles recorded in {record * 1e3:.0f} ms ({record / 5000 * 1e6:.0f} µs each, "
        f"{len(ledger.groups)} groups, {len(ledger.entries)} entries kept)"
    )
    print(
        f"report over 5000 compiles: build {statistics.median(builds) * 1e3:.1f} ms, text "
        f"{statistics.median(texts) * 1e3:.1f} ms, html {statistics.median(htmls) * 1e3:.1f} ms "
        f"({len(html) // 1024} KiB, {len(text.splitlines())} text lines); total {total * 1e3:.1f} ms "
        f"-> target < 500 ms {'OK' if total < 0.5 else 'MISSED'}"
    )
    print(f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
