"""A/B of compiled training calls alone (no Trainer host loop), interleaved in one process.

    .venv/bin/python bench/trainer_call_ab.py --width 1024 --steps 20 --repeats 25

Compares the trainer's scanned step (`StepFns.train_call`) with on-device gathering (per-call
non-finite guard: the default; the same call preceded by the flight recorder's probe of its first
step, as when every call is recorded; the per-step guard), the same step over pre-stacked
batches, and the hand-written `lax.scan` body from trainer_speed.py.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from sklearn.datasets import load_digits

sys.path.insert(0, os.path.dirname(__file__))
from trainer_speed import MLP, loss_fn  # noqa: E402

from jaxmagic.train.recorder import Layers  # noqa: E402
from jaxmagic.train.step import StepFns  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--steps", type=int, default=200, help="steps per compiled call")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=25)
    args = ap.parse_args()
    K, B = args.steps, args.batch
    X, y = load_digits(return_X_y=True)
    X, y = (X / 16).astype(np.float32), y.astype(np.int32)
    tx = optax.adam(1e-3)
    idx = jnp.asarray(np.random.default_rng(0).integers(0, len(X), (K, B)).astype(np.int32))
    data = (jnp.asarray(X), jnp.asarray(y))
    xs, ys = data[0][idx], data[1][idx]

    def fresh():
        g, params, rest = nnx.split(MLP(args.width, nnx.Rngs(0)), nnx.Param, ...)
        return g, {
            "params": params,
            "rest": rest,
            "opt": tx.init(params),
            "step": jnp.int32(0),
            "bad": jnp.int32(-1),
        }

    g, s0 = fresh()
    layers = Layers.of(s0["params"])

    def trainer_call(gather: bool, probe: bool = False, **kw):
        fns = StepFns(g, loss_fn, tx, {}, gather=gather, layers=layers, **kw)
        if gather:
            f = jax.jit(lambda s, fe, d: fns.train_call(s, fe, d), donate_argnums=0)
            p = jax.jit(fns.probe)
            zero = jnp.int32(0)

            def run(s):
                if probe:  # dispatched before the call, on the state the call then donates
                    p(s["params"], s["rest"], s["opt"], idx, data, zero)
                return f(s, idx, data)[0]

            return run
        f = jax.jit(lambda s, fe: fns.train_call(s, fe, None), donate_argnums=0)
        return lambda s: f(s, (xs, ys))[0]

    def hand_body(c, b):
        def lf(p):
            return loss_fn(nnx.merge(g, p, copy=True), b)

        loss, grads = jax.value_and_grad(lf)(c[0])
        upd, opt = tx.update(grads, c[1], c[0])
        return (optax.apply_updates(c[0], upd), opt), loss

    hand_call = jax.jit(lambda c, x, yy: jax.lax.scan(hand_body, c, (x, yy)), donate_argnums=0)
    variants = {
        "trainer, gather, guard=call": trainer_call(True, guard="call"),
        "trainer, gather, guard=call + probe": trainer_call(True, probe=True, guard="call"),
        "trainer, gather, guard=step": trainer_call(True, guard="step"),
        "trainer, stacked, guard=call": trainer_call(False, guard="call"),
        "hand lax.scan body": lambda s: hand_call(s, xs, ys)[0],
    }
    states = {}
    for name, fn in variants.items():
        s = fresh()[1]
        states[name] = fn((s["params"], s["opt"]) if name.startswith("hand") else s)
    jax.block_until_ready(states)
    times: dict[str, list[float]] = {k: [] for k in variants}
    names = list(variants)
    for r in range(args.repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:  # rotate the order
            fn = variants[name]
            t = time.perf_counter()
            states[name] = fn(states[name])
            jax.block_until_ready(states[name])
            times[name].append(time.perf_counter() - t)
    ref = K / statistics.median(times["hand lax.scan body"])
    print(f"MLP 64-{args.width}-{args.width}-10, {K} steps per call, batch {B}, {args.repeats} repeats")
    for name, ts in times.items():
        rate = K / statistics.median(ts)
        print(f"{name:38s} {rate:8.0f} steps/s  {rate / ref:5.3f}x")
    on, off = times["trainer, gather, guard=call + probe"], times["trainer, gather, guard=call"]
    print(
        f"a call with the recorder's probe / without: {statistics.median(off) / statistics.median(on):.3f}x "
        "speed (the default records one call per 100+ steps)"
    )


if __name__ == "__main__":
    main()
