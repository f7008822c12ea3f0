"""One of two processes training on a Grain DataLoader sharded by process:
``python -m tests.grain_dist_worker PID PORT CKPT OUT STEPS``. Prints its source reads."""

from __future__ import annotations

import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=1"
os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402

jax.config.update("jax_cpu_collectives_implementation", "gloo")
pid, port, ckpt, out, steps = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=pid)

import grain  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from flax import nnx  # noqa: E402

from jaxmagic.train import Trainer  # noqa: E402
from tests.grain_pipelines import CountingSource, data_loader  # noqa: E402
from tests.helpers import TinyMLP, loss_fn  # noqa: E402

source = CountingSource()
# each process reads its own shard of the examples; 8 rows each, 16 per global batch
loader = data_loader(source, shard_options=grain.sharding.ShardByJaxProcess(drop_remainder=True), batch=8)
model = TinyMLP(rngs=nnx.Rngs(0))
trainer = Trainer(model, optax.adam(1e-2), loss_fn, checkpoint_dir=ckpt, save_every_epoch=False, save_every=4)
print(f"process {pid}: devices {jax.device_count()}, start {trainer.step}", flush=True)
trainer.fit(loader, steps=steps, steps_per_call=4, progress=None)
if pid == 0:
    np.savez(out, *[np.asarray(jax.device_get(x)) for x in jax.tree.leaves(nnx.state(model, nnx.Param))])
print(f"process {pid}: done at {trainer.step}, reads {source.reads}", flush=True)
jax.distributed.shutdown()
