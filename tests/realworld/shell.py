"""Running cells in the real IPython shell for the real-world layer: output captured, user
objects fingerprinted around the cell, XLA compiles counted by the test's own listener."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from IPython.utils.capture import capture_output

from tests.fingerprint import CompileCounter, differences, fingerprint_all

# Setup cells: user code run in the shell before a magic, so objects live in ``ip.user_ns``
# exactly as in a notebook. Each builds fresh objects (model creation is cheap once the
# initialisers for these shapes have compiled).
IMPORTS = "from tests.realworld.models import *"
SETUPS = {
    "gpt": (
        "gpt = MiniGPT(rngs=nnx.Rngs(0))\n"
        "gpt_opt = nnx.Optimizer(gpt, tx, wrt=nnx.Param)\n"
        "prompt = jnp.array([[1, 2, 3, 0, 0, 0, 0, 0]])\n"
        "gpt_batch = token_batches(1)[0]\n",
        ["gpt", "gpt_opt", "prompt", "gpt_batch"],
    ),
    "vae": (
        "vae = VAE(rngs=nnx.Rngs(0, noise=1))\n"
        "vae_opt = nnx.Optimizer(vae, tx, wrt=nnx.Param)\n"
        "x = jnp.asarray(images(4))\n",
        ["vae", "vae_opt", "x"],
    ),
    "cnn": (
        "cnn = CNN(rngs=nnx.Rngs(0))\n"
        "cnn_opt = nnx.Optimizer(cnn, tx, wrt=nnx.Param)\n"
        "metrics = nnx.MultiMetric(accuracy=nnx.metrics.Accuracy(), loss=nnx.metrics.Average('loss'))\n"
        "batch = digit_batches(1)[0]\n",
        ["cnn", "cnn_opt", "metrics", "batch"],
    ),
    "linen": (
        "state = create_train_state()\nXl, yl = map(jnp.asarray, classification_data(16))\n",
        ["state", "Xl", "yl"],
    ),
    "unet": (
        "unet = TinyUNet(rngs=nnx.Rngs(0))\n"
        "unet_opt = nnx.Optimizer(unet, tx, wrt=nnx.Param)\n"
        "x0 = jnp.asarray(images(4))[..., None]\n"
        "t = jnp.array([1, 10, 20, 40])\n"
        "key = jax.random.key(0)\n",
        ["unet", "unet_opt", "x0", "t", "key"],
    ),
}


@dataclass
class CellRun:
    """What one cell did: its ExecutionResult, everything it showed as text, the compiles the
    test's own listener counted, and which user objects changed."""

    result: Any
    text: str
    compiles: CompileCounter
    changed: list[str]

    @property
    def error(self) -> BaseException | None:
        return self.result.error_in_exec or self.result.error_before_exec


def setup(ip: Any, *models: str) -> list[str]:
    """Run the imports and the setup cells of ``models`` in ``ip``; return the names they bind."""
    names: list[str] = []
    for cell in [IMPORTS] + [SETUPS[m][0] for m in models]:
        res = ip.run_cell(cell)
        assert res.success, f"setup cell failed: {res.error_in_exec!r}"
    for m in models:
        names += SETUPS[m][1]
    return names


def run(ip: Any, cell: str, watch: list[str] = (), *, store_history: bool = False) -> CellRun:
    """Run ``cell``; fingerprint ``watch`` before and after; count compiles while it runs.

    ``store_history=True`` numbers the cell as a notebook kernel does (``In[N]``)."""
    before = fingerprint_all(ip.user_ns, list(watch))
    counter = CompileCounter()
    with counter.listening(), capture_output() as cap:
        result = ip.run_cell(cell, store_history=store_history)
    shown = "".join(o.data.get("text/plain", "") + "\n" for o in cap.outputs)
    after = fingerprint_all(ip.user_ns, list(watch))
    return CellRun(result, cap.stdout + cap.stderr + shown, counter, differences(before, after))
