"""%jaxtree's shared/cyclic reference notes name only real NNX graph-node sharing."""

from __future__ import annotations

import optax
from flax import nnx

import jaxmagic


class Shared(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.a = nnx.Linear(2, 3, rngs=rngs)
        self.b = self.a  # a real shared reference: one set of weights under two names
        self.drop = nnx.Dropout(0.1, rngs=rngs)  # holds an empty tuple (broadcast_dims)
        self.empty = ()  # the same interned empty tuple object: not a shared reference


class Stack(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.head = nnx.Linear(2, 3, rngs=rngs)
        self.layers = nnx.List([nnx.Linear(3, 3, rngs=rngs) for _ in range(2)])


def test_real_sharing_is_noted_once_and_interned_tuples_are_not():
    notes = jaxmagic.tree(Shared(nnx.Rngs(0))).notes
    assert notes == ("Shared: 1 shared reference(s) counted once: b is a",)


def test_optimizer_state_has_no_false_shared_references():
    model = Stack(nnx.Rngs(0))
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-3))
    optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
    assert not any("shared" in n for n in jaxmagic.tree(optimizer).notes)
    assert not any("shared" in n for n in jaxmagic.tree({"model": model, "opt": optimizer}).notes)
