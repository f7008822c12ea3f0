"""Tiny models and data shared by the trainer tests (kept small: 2 shared CPU cores)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx


class TinyMLP(nnx.Module):
    def __init__(self, din: int = 8, width: int = 16, dout: int = 3, *, rngs: nnx.Rngs, dropout: float = 0.0,
                 batchnorm: bool = False):
        self.l1 = nnx.Linear(din, width, rngs=rngs)
        self.bn = nnx.BatchNorm(width, rngs=rngs) if batchnorm else None
        self.drop = nnx.Dropout(dropout, rngs=rngs) if dropout else None
        self.l2 = nnx.Linear(width, dout, rngs=rngs)

    def __call__(self, x):
        h = self.l1(x)
        if self.bn is not None:
            h = self.bn(h)
        h = nnx.relu(h)
        if self.drop is not None:
            h = self.drop(h)
        return self.l2(h)


def loss_fn(model, batch):
    x, y = batch
    logits = model(x)
    return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), logits


def dataset(n: int = 200, din: int = 8, classes: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, din)).astype(np.float32)
    w = rng.normal(size=(din, classes)).astype(np.float32)
    y = np.argmax(X @ w, axis=1).astype(np.int32)
    return X, y


def batches(X, y, batch_size: int, n: int):
    return [(X[i * batch_size:(i + 1) * batch_size], y[i * batch_size:(i + 1) * batch_size]) for i in range(n)]


def params_of(model) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree.leaves(nnx.state(model, nnx.Param))]


def one_device():
    return jax.devices()[:1]


__all__ = ["TinyMLP", "loss_fn", "dataset", "batches", "params_of", "one_device", "jnp", "optax", "nnx"]
