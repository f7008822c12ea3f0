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

import statistics
import time

import jax
from trainer_compile import call_args, call_inputs, lower_trainer_call  # noqa: I001 - bench/ is on sys.path

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
    args = call_args(repeats=5)
    W, K, B = args.width, args.steps, args.batch
    data, idx = call_inputs(K, B)

    def lower():
        return lower_trainer_call(W, data, idx)

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
