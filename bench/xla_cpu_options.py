"""Does an XLA:CPU compile option buy the trainer's start-up back? Compile time and speed of its call.

The trainer trails Keras 3 ``fit(steps_per_execution=50)`` on short runs by its compile time
(trainer_compile.py). This compiles the trainer's train call (``StepFns.train_call``,
``guard="call"``) under each set of XLA:CPU options passed to ``Lowered.compile`` (nothing
global is changed) and reports, against the defaults: the compile's process CPU time and wall
time (interleaved repeats, medians) and the compiled call's steady-state steps/s (interleaved
rounds after one warm-up call). An option is worth adopting only if it cuts compile time
without costing steady-state speed.

  PYTHONPATH=. python bench/xla_cpu_options.py [--width 256] [--steps 200] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from sklearn.datasets import load_digits
from trainer_speed import MLP, loss_fn  # noqa: I001 - bench/ is on sys.path when run as a script

from jaxmagic.train.recorder import Layers
from jaxmagic.train.step import StepFns

OPTIONS: dict[str, dict[str, object]] = {
    "defaults": {},
    "fusion emitters off": {"xla_cpu_use_fusion_emitters": False},
    "codegen split 8": {"xla_cpu_parallel_codegen_split_count": 8},
    "backend opt level 1": {"xla_backend_optimization_level": 1},
    "LLVM expensive passes off": {"xla_llvm_disable_expensive_passes": True},
    "preset FAST_COMPILE": {"xla_cpu_opt_preset": "CPU_OPT_PRESET_FAST_COMPILE"},
    "exec effort -1": {"exec_time_optimization_effort": -1.0},
    "concurrency scheduler": {"xla_cpu_enable_concurrency_optimized_scheduler": True},
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--steps", type=int, default=200, help="steps per call")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    W, K, B = args.width, args.steps, args.batch
    X, y = load_digits(return_X_y=True)
    data = (jnp.asarray((X / 16).astype(np.float32)), jnp.asarray(y.astype(np.int32)))
    idx = jnp.asarray(np.random.default_rng(0).integers(0, len(X), (K, B)).astype(np.int32))
    tx = optax.adam(1e-3)

    def lower():
        g, params, rest = nnx.split(MLP(W, nnx.Rngs(0)), nnx.Param, ...)
        state = {
            "params": params,
            "rest": rest,
            "opt": tx.init(params),
            "step": jnp.int32(0),
            "bad": jnp.int32(-1),
        }
        fns = StepFns(g, loss_fn, tx, {}, gather=True, layers=Layers.of(params), guard="call")
        return jax.jit(fns.train_call, donate_argnums=0).lower(state, idx, data), state

    names = list(OPTIONS)
    cpu: dict[str, list[float]] = {n: [] for n in names}
    wall: dict[str, list[float]] = {n: [] for n in names}
    compiled, states = {}, {}
    for name in names:  # warm up the tracing machinery
        lower()[0].compile(OPTIONS[name])
    for r in range(args.repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            lowered, states[name] = lower()  # a fresh lowering: nothing cached
            c, w = time.process_time(), time.perf_counter()
            compiled[name] = lowered.compile(OPTIONS[name])
            cpu[name].append(time.process_time() - c)
            wall[name].append(time.perf_counter() - w)
    for name in names:
        states[name] = compiled[name](states[name], idx, data)[0]
    jax.block_until_ready(states)
    calls = max(1, 2000 // K)
    rate: dict[str, list[float]] = {n: [] for n in names}
    for r in range(3 * args.repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            t = time.perf_counter()
            s = states[name]
            for _ in range(calls):
                s = compiled[name](s, idx, data)[0]
            states[name] = jax.block_until_ready(s)
            rate[name].append(calls * K / (time.perf_counter() - t))
    med = {
        n: (statistics.median(cpu[n]), statistics.median(wall[n]), statistics.median(rate[n])) for n in names
    }
    c0, w0, r0 = med["defaults"]
    print(
        f"trainer call, MLP 64-{W}-{W}-10, {K} steps per call, batch {B}, {args.repeats} interleaved repeats"
    )
    print(
        f"{'XLA:CPU options':28s} {'compile CPU s':>13s} {'vs defaults':>11s} {'wall s':>7s} {'steps/s':>8s} {'vs defaults':>11s}"
    )
    for n, (c, w, r_) in med.items():
        print(f"{n:28s} {c:13.3f} {c / c0:10.2f}x {w:7.3f} {r_:8.0f} {r_ / r0:10.3f}x")


if __name__ == "__main__":
    main()
