"""Trainer speed, side by side in one run: the jaxmagic Trainer vs hand-written loops.

Same model, same batches (the Trainer's own shuffled order for the seed), steady state
(every loop is compiled and warmed up before timing), interleaved repeats, medians.

  PYTHONPATH=. python bench/trainer_speed.py               # small MLP 64-256-256-10, 2000 steps
  PYTHONPATH=. python bench/trainer_speed.py --width 1024 --steps 200   # compute-bound

Loops: trainer (progress line on, written to a buffer; recorder at its default, plus rows
recording every 100 steps from the first call, and with it off) · hand jax.jit step over split state
(donated) · hand lax.scan over 50 stacked batches · naive @nnx.jit with float(loss) every step
· Keras 3 JAX fit (only where keras is installed). Also compares the compiled call's memory
(memory_analysis) of the trainer and the hand scan loop and checks the state is donated.

Then, end to end (a fresh model each run, compile included, same batches in the same order):
the trainer on arrays and on a list of batches, the hand scan loop, and Keras 3 ``fit`` with
``steps_per_execution=1`` and ``50`` (``KERAS_BACKEND=jax``; skipped if keras is missing).
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "jax")  # before keras is imported (below, if installed)

import argparse
import io
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from sklearn.datasets import load_digits

from jaxmagic.train import TerminalProgress, Trainer
from jaxmagic.train.data import ArrayFeed


class MLP(nnx.Module):
    def __init__(self, width: int, rngs: nnx.Rngs):
        self.l1 = nnx.Linear(64, width, rngs=rngs)
        self.l2 = nnx.Linear(width, width, rngs=rngs)
        self.l3 = nnx.Linear(width, 10, rngs=rngs)

    def __call__(self, x):
        return self.l3(nnx.relu(self.l2(nnx.relu(self.l1(x)))))


def loss_fn(model, batch):
    x, y = batch
    return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--scan", type=int, default=50)
    ap.add_argument(
        "--sections",
        default="steady,e2e,memory",
        help="which parts to run: steady, e2e, memory (comma-separated)",
    )
    args = ap.parse_args()
    sections = set(args.sections.split(","))
    N, B, K = args.steps, args.batch, args.scan
    N -= N % K

    X, y = load_digits(return_X_y=True)
    X, y = (X / 16).astype(np.float32), y.astype(np.int32)
    tx = optax.adam(1e-3)
    dev = jax.devices()[:1]

    feed = ArrayFeed((X, y), batch_size=B, seed=0, mesh=jax.sharding.Mesh(np.array(dev), ("data",)))
    idx = feed.indices(0, N)
    xs, ys = jnp.asarray(X[idx]), jnp.asarray(y[idx])  # [N, B, ...] on device
    x_list, y_list = list(xs), list(ys)
    x_chunks, y_chunks = xs.reshape(N // K, K, B, 64), ys.reshape(N // K, K, B)

    # ---- hand loops over split state -------------------------------------------------------
    def fresh():
        model = MLP(args.width, nnx.Rngs(0))
        g, params = nnx.split(model, nnx.Param)
        return g, params, tx.init(params)

    g, _, _ = fresh()

    def step(params, opt, x, yb):
        def lf(p):
            return loss_fn(nnx.merge(g, p, copy=True), (x, yb))

        loss, grads = jax.value_and_grad(lf)(params)
        upd, opt = tx.update(grads, opt, params)
        return optax.apply_updates(params, upd), opt, loss

    jit_step = jax.jit(step, donate_argnums=(0, 1))

    def scan_call(params, opt, xc, yc):
        def body(c, b):
            p, o, loss = step(c[0], c[1], b[0], b[1])
            return (p, o), loss

        (params, opt), losses = jax.lax.scan(body, (params, opt), (xc, yc))
        return params, opt, losses

    jit_scan = jax.jit(scan_call, donate_argnums=(0, 1))

    def run_hand_jit():
        _, p, o = fresh()
        p, o, loss = jit_step(p, o, x_list[0], y_list[0])  # warm
        jax.block_until_ready(p)
        t = time.perf_counter()
        for i in range(N):
            p, o, loss = jit_step(p, o, x_list[i], y_list[i])
        jax.block_until_ready((p, loss))
        return time.perf_counter() - t

    def run_hand_scan():
        _, p, o = fresh()
        p, o, _ = jit_scan(p, o, x_chunks[0], y_chunks[0])
        jax.block_until_ready(p)
        t = time.perf_counter()
        for i in range(N // K):
            p, o, losses = jit_scan(p, o, x_chunks[i], y_chunks[i])
        jax.block_until_ready((p, losses))
        return time.perf_counter() - t

    def run_naive():
        model = MLP(args.width, nnx.Rngs(0))
        opt = nnx.Optimizer(model, tx, wrt=nnx.Param)

        @nnx.jit
        def nstep(model, opt, x, yb):
            loss, grads = nnx.value_and_grad(loss_fn)(model, (x, yb))
            opt.update(model, grads)
            return loss

        float(nstep(model, opt, x_list[0], y_list[0]))
        t = time.perf_counter()
        for i in range(N):
            float(nstep(model, opt, x_list[i], y_list[i]))
        return time.perf_counter() - t

    def trainer_loop(**kw):
        def run_trainer():
            model = MLP(args.width, nnx.Rngs(0))
            tr = Trainer(model, tx, loss_fn, devices=dev, **kw)
            buf = io.StringIO()
            # Warm up with a run of the same length: the automatic steps-per-call depends on the run
            # length, so a shorter warm-up would leave the timed run's program uncompiled.
            warm = N
            tr.fit((X, y), steps=warm, batch_size=B, progress=TerminalProgress(buf, summary=False))
            t = time.perf_counter()
            tr.fit((X, y), steps=warm + N, batch_size=B, progress=TerminalProgress(buf, summary=True))
            dt = time.perf_counter() - t
            run_trainer.k = tr.history.config["steps_per_call"]
            run_trainer.compiles = tr.history.compiles
            run_trainer.guard = tr.guard
            return dt

        return run_trainer

    run_trainer = trainer_loop()
    if "steady" in sections:
        steady(args, run_trainer, trainer_loop, run_hand_jit, run_hand_scan, run_naive)
    if "e2e" in sections:
        end_to_end(args, X, y, idx, step)
    if "memory" in sections:
        memory(args, X, y, fresh, jit_scan, x_chunks, y_chunks)


def steady(args, run_trainer, trainer_loop, run_hand_jit, run_hand_scan, run_naive) -> None:
    """Steady state: every loop compiled and warmed up first, interleaved repeats."""
    N, B, K = args.steps, args.batch, args.scan
    N -= N % K
    loops = {
        "trainer (progress on)": run_trainer,
        "trainer, recording every 100 steps": trainer_loop(flight=100),
        "trainer, recorder off": trainer_loop(flight=False),
        "trainer, guard=step": trainer_loop(guard="step"),
        "hand jax.jit split/merge": run_hand_jit,
        f"hand lax.scan x{K}": run_hand_scan,
        "naive @nnx.jit + float(loss)": run_naive,
    }
    times: dict[str, list[float]] = {k: [] for k in loops}
    names = list(loops)
    for r in range(args.repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:  # rotate the order: interleaved
            times[name].append(loops[name]())
    rate = {k: N / statistics.median(v) for k, v in times.items()}
    ref = rate[f"hand lax.scan x{K}"]
    print(
        f"MLP 64-{args.width}-{args.width}-10, batch {B}, {N} steps, {args.repeats} interleaved repeats, "
        f"backend {jax.default_backend()}, trainer steps_per_call={run_trainer.k}, guard={run_trainer.guard}"
    )
    print(f"{'loop':34s} {'steps/s (median)':>16s} {'vs hand scan':>12s}   all runs (steps/s)")
    for k, v in rate.items():
        runs = ", ".join(f"{N / t:.0f}" for t in times[k])
        print(f"{k:34s} {v:16.0f} {v / ref:11.2f}x   {runs}")
    on, off = times["trainer, recording every 100 steps"], times["trainer, recorder off"]
    paired = [b / a for a, b in zip(on, off)]  # the two ran in the same round of each repeat
    print(
        f"flight recorder cost: recording at the default cadence (one probe per 100+ steps, from the "
        f"first call) runs at {statistics.median(off) / statistics.median(on):.3f}x the speed of recorder "
        f"off (ratio of medians; median of per-round ratios {statistics.median(paired):.3f}x)"
    )


def memory(args, X, y, fresh, jit_scan, x_chunks, y_chunks) -> None:
    """The compiled call's memory (memory_analysis) of the trainer and the hand scan loop."""
    B, K = args.batch, args.scan
    tx = optax.adam(1e-3)
    dev = jax.devices()[:1]
    _, p, o = fresh()
    hand = jit_scan.lower(p, o, x_chunks[0], y_chunks[0]).compile().memory_analysis()
    state_bytes = sum(x.nbytes for x in jax.tree.leaves((p, o)))

    def peak(m):
        return (
            m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes - m.alias_size_in_bytes
        )

    model = MLP(args.width, nnx.Rngs(0))
    tr = Trainer(model, tx, loss_fn, devices=dev)
    tr.fit((X, y), steps=K, batch_size=B, progress=None, steps_per_call=K)
    tr_entry = [c for c in tr.history.compiles if c["what"].startswith("train call")][0]
    key = next(k for k in tr._compiled if k[0] == "train")
    tm = tr._compiled[key].memory_analysis()
    print(
        f"memory (compiled call, {K} steps): trainer peak {peak(tm) / 2**20:.2f} MiB vs hand scan "
        f"{peak(hand) / 2**20:.2f} MiB = {peak(tm) / peak(hand):.2f}x (trainer data on device: "
        f"{sum(x.nbytes for x in jax.tree.leaves(tr.history.config and (X, y))) / 2**20:.2f} MiB counted as argument)"
    )
    print(
        f"donation: trainer aliases {tm.alias_size_in_bytes / 2**20:.2f} MiB of a {state_bytes / 2**20:.2f} MiB "
        f"train state ({tr_entry['alias_bytes'] >= state_bytes and 'state aliased' or 'NOT fully aliased'})"
    )
    step_tr = Trainer(MLP(args.width, nnx.Rngs(0)), tx, loss_fn, devices=dev, guard="step")
    step_tr.fit((X, y), steps=K, batch_size=B, progress=None, steps_per_call=K)
    sm = step_tr._compiled[next(k for k in step_tr._compiled if k[0] == "train")].memory_analysis()
    print(
        f"memory with guard='{tr.guard}': {peak(tm) / 2**20:.2f} MiB; with guard='step' (no rollback copy of "
        f"the state): {peak(sm) / 2**20:.2f} MiB = {peak(sm) / peak(hand):.2f}x the hand scan"
    )


# what a run spends starting up, as jax.monitoring reports it (trace, lowering, XLA compile)
_STARTUP = ("jaxpr_trace_duration", "jaxpr_to_mlir_module_duration", "backend_compile_duration")


def end_to_end(args: argparse.Namespace, X: np.ndarray, y: np.ndarray, idx: np.ndarray, step) -> None:
    """Fresh model, compile included, the same N batches (``idx``) for every loop; medians."""
    N, B, K = args.steps, args.batch, args.scan
    N -= N % K
    tx = optax.adam(1e-3)
    dev = jax.devices()[:1]
    x_host, y_host = X[idx], y[idx]  # [N, B, ...] on the host, in the trainer's order
    batch_list = [(x_host[i], y_host[i]) for i in range(N)]

    def trainer_on(data, trainer_kw=None, **kw):
        def run():
            t = time.perf_counter()
            tr = Trainer(MLP(args.width, nnx.Rngs(0)), tx, loss_fn, devices=dev, **(trainer_kw or {}))
            tr.fit(data, progress=TerminalProgress(io.StringIO(), summary=True), **kw)
            jax.block_until_ready(tr._state)
            return time.perf_counter() - t

        return run

    def hand_scan():
        t = time.perf_counter()
        model = MLP(args.width, nnx.Rngs(0))
        g, params = nnx.split(model, nnx.Param)
        opt = tx.init(params)

        def call(p, o, xc, yc):  # a new function each run: compiled afresh
            def body(c, b):
                def lf(pp):
                    return loss_fn(nnx.merge(g, pp, copy=True), b)

                loss, grads = jax.value_and_grad(lf)(c[0])
                upd, o2 = tx.update(grads, c[1], c[0])
                return (optax.apply_updates(c[0], upd), o2), loss

            (p, o), losses = jax.lax.scan(body, (p, o), (xc, yc))
            return p, o, losses

        f = jax.jit(call, donate_argnums=(0, 1))
        for i in range(N // K):  # fed from the host list of batches, stacked per call
            xc = np.stack([b[0] for b in batch_list[i * K : (i + 1) * K]])
            yc = np.stack([b[1] for b in batch_list[i * K : (i + 1) * K]])
            params, opt, losses = f(params, opt, xc, yc)
        jax.block_until_ready((params, losses))
        return time.perf_counter() - t

    loops = {
        "trainer, arrays": trainer_on((X, y), steps=N, batch_size=B),
        "trainer, list of batches": trainer_on(batch_list, steps=N),
        "trainer, arrays, recorder off": trainer_on((X, y), {"flight": False}, steps=N, batch_size=B),
        "trainer, arrays, recording from step 1": trainer_on((X, y), {"flight": 100}, steps=N, batch_size=B),
        "trainer, arrays, guard=step": trainer_on((X, y), {"guard": "step"}, steps=N, batch_size=B),
        f"hand lax.scan x{K}, list of batches": hand_scan,
    }
    try:
        import keras
    except ImportError:
        keras = None
        print("keras 3: not installed here (skipped)")
    if keras is not None and keras.backend.backend() != "jax":
        print(f"keras 3: backend is {keras.backend.backend()!r}, not jax (skipped; set KERAS_BACKEND=jax)")
        keras = None
    if keras is not None:
        xk, yk = x_host.reshape(N * B, 64), y_host.reshape(N * B)

        def keras_fit(spe: int):
            def run():
                t = time.perf_counter()
                model = keras.Sequential(
                    [
                        keras.Input((64,)),
                        keras.layers.Dense(args.width, activation="relu"),
                        keras.layers.Dense(args.width, activation="relu"),
                        keras.layers.Dense(10),
                    ]
                )
                model.compile(
                    optimizer=keras.optimizers.Adam(1e-3),
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                    steps_per_execution=spe,
                )
                # the same batches in the same order: one epoch over them, unshuffled
                model.fit(xk, yk, batch_size=B, epochs=1, shuffle=False, verbose=0)
                jax.block_until_ready([v.value for v in model.trainable_variables])
                return time.perf_counter() - t

            return run

        loops["keras 3 fit, steps_per_execution=1"] = keras_fit(1)
        loops[f"keras 3 fit, steps_per_execution={K}"] = keras_fit(K)
    times: dict[str, list[float]] = {k: [] for k in loops}
    startup: dict[str, list[float]] = {k: [] for k in loops}  # trace + lower + XLA compile, s
    names = list(loops)
    repeats = max(3, args.repeats // 2)
    spent = [0.0]  # this run's start-up so far

    def on_duration(event: str, secs: float, **_: object) -> None:
        if event.endswith(_STARTUP):
            spent[0] += secs

    jax.monitoring.register_event_duration_secs_listener(on_duration)
    for r in range(repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            spent[0] = 0.0
            times[name].append(loops[name]())
            startup[name].append(spent[0])
    rate = {k: N / statistics.median(v) for k, v in times.items()}
    cols = [f"hand lax.scan x{K}, list of batches"]
    if keras is not None:
        cols = [f"keras 3 fit, steps_per_execution={K}", "keras 3 fit, steps_per_execution=1", *cols]
    print(
        f"\nend to end (fresh model, compile included), {N} steps, {repeats} interleaved repeats"
        + (f", keras {keras.__version__}" if keras is not None else "")
    )
    short = {c: c.replace("keras 3 fit, steps_per_execution=", "vs keras spe=").split(",")[0] for c in cols}
    short[cols[-1]] = "vs hand scan"
    head = " ".join(f"{short[c]:>15s}" for c in cols)
    print(f"{'loop':40s} {'steps/s':>8s} {head} {'compile s':>10s} {'rest s':>7s}   all runs")
    for k, v in rate.items():
        ratios = " ".join(f"{v / rate[c]:14.2f}x" for c in cols)
        runs = ", ".join(f"{N / t:.0f}" for t in times[k])
        comp = statistics.median(startup[k])
        rest = statistics.median(t - c for t, c in zip(times[k], startup[k]))
        print(f"{k:40s} {v:8.0f} {ratios} {comp:10.3f} {rest:7.3f}   {runs}")
    print("compile s: jax.monitoring's trace, lowering and XLA compile durations of the run (median);")
    print("rest s: the run's wall time less those (training, dispatch, Python); a compile on another")
    print("thread (the recorder's probe) overlaps the run, so that row's rest is too small, even < 0")


if __name__ == "__main__":
    main()
