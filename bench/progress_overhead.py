"""Cost of live progress inside a jitted 10,000-step scan, measured side by side in one run.

Sides, each jitted once and compiled outside the timing, run in a shuffled order in every
repeat; each repeat's time is divided by the same repeat's plain ``lax.scan`` and the median
(quartiles in brackets) of those paired ratios is printed:

- ``progress.scan`` at its default cadence (~100 reports), the terminal view writing to
  /dev/null (the view is part of the cost);
- ``progress.scan`` with ``progress.log(loss=...)`` (a curve);
- ``tick`` in a hand-written ``lax.scan`` body (a ``lax.cond`` per iteration);
- ``progress.scan`` under ``vmap`` over 4 lanes vs ``vmap`` of the plain scan.

Bodies: an SGD step of a 32-128-128-10 MLP on a batch of 32 (a loop worth a progress bar:
~0.5-1 s here), and a tiny one (a 32-wide tanh, ~1 µs per step) where the fixed cost per
report shows. Also the cost of one widget view (``loop_view``), drawn at most 10×/s.

    PYTHONPATH=$PWD .venv/bin/python bench/progress_overhead.py --repeats 21

``cpu ratio`` is the same paired ratio of the process's CPU time: less sensitive to other
jobs on a shared machine (it counts this process's work, including XLA's threads spinning).
For a single-threaded XLA (CPU time = work done), prefix
``XLA_FLAGS=--xla_cpu_multi_thread_eigen=false``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxmagic import progress
from jaxmagic.progress.jit import default_every
from jaxmagic.progress.views import TerminalLoopView

N = 10_000


def mlp_body():
    rng = np.random.default_rng(0)
    sizes = [32, 128, 128, 10]
    params = [
        (jnp.asarray(rng.normal(size=(a, b)) / np.sqrt(a), jnp.float32), jnp.zeros(b))
        for a, b in zip(sizes, sizes[1:])
    ]
    x = jnp.asarray(rng.normal(size=(32, 32)), jnp.float32)
    y = jnp.asarray(rng.integers(0, 10, size=32))

    def loss_fn(p):
        h = x
        for w, b in p[:-1]:
            h = jnp.tanh(h @ w + b)
        logits = h @ p[-1][0] + p[-1][1]
        return -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(32), y])

    def step(p, _, log=False):
        loss, g = jax.value_and_grad(loss_fn)(p)
        if log:
            progress.log(loss=loss)
        return jax.tree.map(lambda a, b: a - 0.01 * b, p, g), None

    return step, params


def tiny_body():
    w = jnp.eye(32) * 0.5

    def step(c, _, log=False):
        c = jnp.tanh(c @ w)
        if log:
            progress.log(loss=c[0, 0])
        return c, None

    return step, jnp.ones((8, 32))


def sides(step, init, view):
    def plain(c):
        return lax.scan(step, c, None, length=N)[0]

    def tracked(c):
        return progress.scan(step, c, None, length=N, progress=view)[0]

    def logged(c):
        return progress.scan(lambda c, x: step(c, x, log=True), c, None, length=N, progress=view)[0]

    def ticked(c):
        def body(c, i):
            c, _ = step(c, i)
            progress.tick(i, N, progress=view)
            return c, None

        return lax.scan(body, c, jnp.arange(N))[0]

    lanes = jax.tree.map(lambda a: jnp.stack([a] * 4), init)
    fns = {
        "plain": (jax.jit(plain), init),
        "progress.scan": (jax.jit(tracked), init),
        "progress.scan + log": (jax.jit(logged), init),
        "tick in lax.scan": (jax.jit(ticked), init),
        "vmap(plain) x4": (jax.jit(jax.vmap(plain)), lanes),
        "vmap(progress.scan) x4": (jax.jit(jax.vmap(tracked)), lanes),
    }
    return fns


def measure(name, step, init, repeats, view):
    """Each repeat runs every side once, in a shuffled order, and divides by that repeat's own
    plain run (the vmapped sides by vmap(plain)): the median of these paired ratios, with
    their quartiles, cancels the drift of a shared machine's load."""
    fns = sides(step, init, view)
    for f, a in fns.values():
        jax.block_until_ready(f(a))  # compile and warm outside the timing
    rng = np.random.default_rng(0)
    wall = {k: [] for k in fns}
    cpu = {k: [] for k in fns}
    names = list(fns)
    for _ in range(repeats):
        for k in rng.permutation(names):
            f, a = fns[k]
            t, c = time.perf_counter(), time.process_time()
            jax.block_until_ready(f(a))
            wall[k].append(time.perf_counter() - t)
            cpu[k].append(time.process_time() - c)
    reports = N // default_every(N)
    print(f"{name}: {N} steps, {reports} reports per loop (every {default_every(N)}), {repeats} repeats")
    print(f"  {'':<24} {'wall median':>12}  {'paired ratio [quartiles]':<26} {'µs/report':>9}   cpu ratio")
    out = {}
    for k, ts in wall.items():
        b = "vmap(plain) x4" if k.startswith("vmap(") else "plain"
        q1, med, q3 = np.percentile(np.asarray(ts) / np.asarray(wall[b]), [25, 50, 75])
        cmed = np.median(np.asarray(cpu[k]) / np.asarray(cpu[b]))
        per = (statistics.median(ts) - statistics.median(wall[b])) / reports * 1e6
        print(
            f"  {k:<24} {statistics.median(ts) * 1e3:9.2f} ms  {med:6.3f} [{q1:.3f}-{q3:.3f}]"
            f"{'':<6} {per:+9.1f}   {cmed:6.3f}"
        )
        out[k] = med
    return out


def view_cost():
    from jaxmagic.progress.state import LoopRun
    from jaxmagic.render.loops import loop_view

    run = LoopRun("step", "scan", N, every=100)
    for d in range(100, N + 1, 100):
        run.advance(d)
        run.record({"loss": 1.0 / d}, d)
    r = run.report()
    t = time.perf_counter()
    for _ in range(50):
        loop_view(r)
    per = (time.perf_counter() - t) / 50
    print(
        f"one widget view (100 points): {per * 1e3:.2f} ms -> at 10 redraws/s {per * 10 * 100:.1f}% of one core"
    )


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=11)
    args = ap.parse_args()
    print(f"jax {jax.__version__} on {jax.default_backend()}, {os.cpu_count()} CPUs")
    view = TerminalLoopView(open(os.devnull, "w"))
    step, params = mlp_body()
    measure("MLP 32-128-128-10 SGD step, batch 32", step, params, args.repeats, view)
    step, c = tiny_body()
    measure("tiny body (32-wide tanh)", step, c, args.repeats, view)
    view_cost()


if __name__ == "__main__":
    main()
