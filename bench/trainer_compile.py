"""Where the trainer's start-up goes: XLA compile time of its train call against the hand loops.

End to end on short runs the trainer trails Keras 3 ``fit(steps_per_execution=50)``, which
compiles one step and dispatches it per step, while the trainer compiles a ``lax.scan`` of
steps. This measures the backend compile alone (``Lowered.compile`` of a fresh lowering, in
this thread, nothing else running) as process CPU time (XLA compiles on several threads; CPU
time is steadier than wall time on a shared machine), interleaved repeats, medians:

- a hand-written single NNX step (what a per-step loop such as Keras compiles),
- the hand-written ``lax.scan`` of that step (trainer_speed.py's hand loop),
- the trainer's train call (``StepFns.train_call``, on-device gather) with ``guard="call"``
  (the end-of-call non-finite check and its rollback), the same without that check, and
  ``guard="step"``;

and prints the optimized HLO's op and fusion counts of each program.

  PYTHONPATH=. python bench/trainer_compile.py [--width 256] [--steps 200] [--repeats 9]
"""

from __future__ import annotations

import argparse
import re
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


class _Unchecked(StepFns):
    def train_call(self, carry, feed, data):
        """The train call without its end-of-call check (and so without the rollback)."""
        return self._scan(self._plain_step, carry, feed, data)


TX = optax.adam(1e-3)


def call_args(repeats: int) -> argparse.Namespace:
    """The command line shared with xla_cpu_options.py: model width, steps per call, batch."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--width", type=int, default=256)
    ap.add_argument("--steps", type=int, default=200, help="steps per call")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=repeats)
    return ap.parse_args()


def call_inputs(steps: int, batch: int) -> tuple[tuple[jax.Array, jax.Array], jax.Array]:
    """``(data, idx)``: sklearn digits on device and one call's ``[steps, batch]`` row indices."""
    X, y = load_digits(return_X_y=True)
    data = (jnp.asarray((X / 16).astype(np.float32)), jnp.asarray(y.astype(np.int32)))
    idx = jnp.asarray(np.random.default_rng(0).integers(0, len(X), (steps, batch)).astype(np.int32))
    return data, idx


def lower_trainer_call(width: int, data: tuple, idx: jax.Array, cls: type = StepFns, guard: str = "call"):
    """``(lowered, state)``: the trainer's train call (on-device gather) over a fresh model's
    state, lowered afresh (nothing cached), and that state."""
    g, params, rest = nnx.split(MLP(width, nnx.Rngs(0)), nnx.Param, ...)
    state = {
        "params": params,
        "rest": rest,
        "opt": TX.init(params),
        "step": jnp.int32(0),
        "bad": jnp.int32(-1),
    }
    fns = cls(g, loss_fn, TX, {}, gather=True, layers=Layers.of(params), guard=guard)
    return jax.jit(fns.train_call, donate_argnums=0).lower(state, idx, data), state


def main() -> None:
    args = call_args(repeats=9)
    W, K, B = args.width, args.steps, args.batch
    data, idx = call_inputs(K, B)

    def hand(scan: bool):
        g, params = nnx.split(MLP(W, nnx.Rngs(0)), nnx.Param)

        def step(p, o, x, yb):
            loss, grads = jax.value_and_grad(lambda pp: loss_fn(nnx.merge(g, pp, copy=True), (x, yb)))(p)
            upd, o = TX.update(grads, o, p)
            return optax.apply_updates(p, upd), o, loss

        def call(p, o, xc, yc):
            def body(c, b):
                p2, o2, loss = step(c[0], c[1], *b)
                return (p2, o2), loss

            (p, o), losses = jax.lax.scan(body, (p, o), (xc, yc))
            return p, o, losses

        lead = (K,) if scan else ()
        x0, y0 = jnp.zeros((*lead, B, 64)), jnp.zeros((*lead, B), jnp.int32)
        return jax.jit(call if scan else step, donate_argnums=(0, 1)).lower(params, TX.init(params), x0, y0)

    def trainer(cls: type, guard: str):
        return lower_trainer_call(W, data, idx, cls, guard)[0]

    rows = {
        "hand single step": lambda: hand(False),
        f"hand lax.scan x{K}": lambda: hand(True),
        "trainer call, guard=call": lambda: trainer(StepFns, "call"),
        "trainer call, no end check": lambda: trainer(_Unchecked, "call"),
        "trainer call, guard=step": lambda: trainer(StepFns, "step"),
    }
    ops = {}
    for name, lower in rows.items():  # warm up the tracing machinery; count the optimized ops
        text = lower().compile().as_text()
        kinds = re.findall(r"= \S+ (\w[\w-]*)\(", text)
        ops[name] = (len(kinds), kinds.count("fusion"))
    cpu: dict[str, list[float]] = {k: [] for k in rows}
    names = list(rows)
    for r in range(args.repeats):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            lowered = rows[name]()  # a fresh lowering: nothing cached
            t = time.process_time()
            lowered.compile()
            cpu[name].append(time.process_time() - t)
    ref = statistics.median(cpu[f"hand lax.scan x{K}"])
    print(f"MLP 64-{W}-{W}-10, {K} steps per call, batch {B}, {args.repeats} interleaved repeats")
    print(
        f"{'program':28s} {'compile CPU s':>13s} {'vs hand scan':>13s} {'HLO ops':>8s} {'fusions':>8s}   all runs"
    )
    for name, v in cpu.items():
        m = statistics.median(v)
        n, f = ops[name]
        print(f"{name:28s} {m:13.3f} {m / ref:12.3f}x {n:8d} {f:8d}   {', '.join(f'{x:.3f}' for x in v)}")


if __name__ == "__main__":
    main()
