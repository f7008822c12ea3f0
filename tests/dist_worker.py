"""One of two processes training together: ``python -m tests.dist_worker PID PORT CKPT OUT STEPS``."""

from __future__ import annotations

import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=1"
os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402

jax.config.update("jax_cpu_collectives_implementation", "gloo")
pid, port, ckpt, out, steps = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=pid)

import numpy as np  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402

from jaxmagic.train import Trainer  # noqa: E402
from tests.helpers import TinyMLP, dataset, loss_fn  # noqa: E402

X, y = dataset(128)
model = TinyMLP(rngs=nnx.Rngs(0))
trainer = Trainer(model, optax.adam(1e-2), loss_fn, checkpoint_dir=ckpt, save_every_epoch=False, save_every=4)
print(f"process {pid}: devices {jax.device_count()}, start {trainer.step}", flush=True)
trainer.fit((X, y), steps=steps, batch_size=16, steps_per_call=4, progress=None)
# evaluation and prediction: on arrays every process holds all the data; on an iterable each
# holds its own half of every 32-row batch (rows pid*16 to pid*16+16), as a sharded loader gives
local = [
    (X[i + 16 * pid : i + 16 * pid + 16], y[i + 16 * pid : i + 16 * pid + 16]) for i in range(0, 128, 32)
]
results = {
    "eval_arrays": trainer.evaluate((X, y), batch_size=32)["eval_loss"],
    "eval_local": trainer.evaluate(local)["eval_loss"],
    "predict_arrays": trainer.predict(X, batch_size=48),
    "predict_local": trainer.predict(local),
}
if pid == 0:
    params = [np.asarray(jax.device_get(x)) for x in jax.tree.leaves(nnx.state(model, nnx.Param))]
    np.savez(out, *params, **results)
print(f"process {pid}: done at {trainer.step}", flush=True)
jax.distributed.shutdown()
