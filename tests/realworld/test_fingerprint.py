"""The fingerprint and compile counter the real-world layer relies on can see every kind of harm."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from tests.fingerprint import CompileCounter, differences, fingerprint, fingerprint_all
from tests.realworld.models import VAE, create_train_state

pytestmark = pytest.mark.realworld


@pytest.mark.slow
def test_fingerprint_sees_rng_counts_values_attributes_and_structure():
    vae = VAE(rngs=nnx.Rngs(0, noise=1))
    base = fingerprint(vae)
    assert fingerprint(vae) == base
    vae.encoder.rngs.noise()  # an RNG draw advances the count
    assert fingerprint(vae) != base
    base = fingerprint(vae)
    vae.decoder.linear1.bias[...] = vae.decoder.linear1.bias[...] + 1
    assert fingerprint(vae) != base
    base = fingerprint(vae)
    vae.image_shape = (4, 16)  # a plain Python attribute
    assert fingerprint(vae) != base
    base = fingerprint(vae)
    del vae.decoder  # the "module lost its attributes" harm
    assert fingerprint(vae) != base


@pytest.mark.slow
def test_fingerprint_of_train_state_sees_its_bytes_and_differences_name_them():
    ns = {"state": create_train_state(), "x": jnp.ones(3)}
    before = fingerprint_all(ns, ["state", "x"])
    ns["state"] = ns["state"].replace(step=ns["state"].step + 1)
    assert differences(before, fingerprint_all(ns, ["state", "x"])) == ["state: leaves changed"]


def test_compile_counter_counts_and_unregisters():
    x = jnp.ones(7)
    counter = CompileCounter()
    with counter.listening():
        jax.jit(lambda v: v * 3)(x)
    assert dict(counter.by_name) == {"<lambda>": 1}
    jax.jit(lambda v: v * 5)(x)  # after the block: not counted
    assert counter.total == 1
