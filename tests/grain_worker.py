"""A training process on a Grain pipeline for the crash/resume test: ``python -m tests.grain_worker CKPT OUT``.

Trains a tiny model with dropout on a shuffling, randomly noising ``grain.MapDataset`` for 8
epochs, checkpointing every 8 steps, slowed by a sleeping callback so a parent can kill it
mid-run. Prints the source reads; writes every leaf of the final train state to OUT (.npz).
"""

from __future__ import annotations

import os
import sys
import time

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=1")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402

from jaxmagic.train import Callback, Trainer  # noqa: E402
from tests.grain_pipelines import CountingSource, map_dataset  # noqa: E402
from tests.helpers import TinyMLP, loss_fn  # noqa: E402

EPOCHS = 8  # 12 batches each


class Slow(Callback):
    def on_steps(self, trainer, steps, logs):
        time.sleep(float(os.environ.get("WORKER_SLEEP", "0.05")))
        print(f"at {int(steps[-1])}", flush=True)


def main() -> None:
    ckpt, out = sys.argv[1], sys.argv[2]
    model = TinyMLP(rngs=nnx.Rngs(0), dropout=0.2)
    trainer = Trainer(
        model,
        optax.adam(1e-2),
        loss_fn,
        devices=jax.devices()[:1],
        checkpoint_dir=ckpt,
        save_every=8,
        save_every_epoch=False,
        keep=2,
        seed=3,
    )
    print(f"start {trainer.step}", flush=True)
    trainer.fit(
        map_dataset(CountingSource()), epochs=EPOCHS, steps_per_call=4, progress=None, callbacks=[Slow()]
    )
    leaves = jax.tree_util.tree_flatten_with_path(trainer._state)[0]
    arrays = {
        jax.tree_util.keystr(p): np.asarray(
            jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x
        )
        for p, x in leaves
    }
    np.savez(out, **arrays)
    print("done", flush=True)


if __name__ == "__main__":
    main()
