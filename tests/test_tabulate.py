"""Per-layer cost (``jaxmagic.tabulate``, ``%jaxtabulate``, issue 10) on real NNX models,
checked against XLA's cost analysis of the whole call and of each layer's own formula."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest
from flax import nnx
from IPython.core.error import UsageError

import jaxmagic
from jaxmagic.layercost import LayerCallError, tabulate
from tests.fingerprint import fingerprint
from tests.helpers import TinyMLP


class Block(nnx.Module):
    def __init__(self, d: int, rngs: nnx.Rngs):
        self.ln = nnx.LayerNorm(d, rngs=rngs)
        self.up = nnx.Linear(d, 4 * d, rngs=rngs)
        self.down = nnx.Linear(4 * d, d, rngs=rngs)

    def __call__(self, x):
        return x + self.down(jax.nn.gelu(self.up(self.ln(x))))


class Net(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.blocks = nnx.List([Block(16, rngs) for _ in range(2)])
        self.head = nnx.Linear(16, 3, rngs=rngs)

    def __call__(self, x):
        for block in self.blocks:
            x = block(x)
        return self.head(x)


def whole_call_flops(model, x) -> float:
    graphdef, state = nnx.split(model)
    compiled = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x)).lower(state, x).compile()
    return compiled.cost_analysis()["flops"]


def test_rows_sum_to_the_whole_call_and_match_each_layers_formula():
    model, x = Net(nnx.Rngs(0)), jnp.ones((8, 16))
    r = tabulate(model, x)
    assert [row.path for row in r.rows] == [
        "(model)",
        "blocks/0",
        "blocks/0/ln",
        "blocks/0/up",
        "blocks/0/down",
        "blocks/1",
        "blocks/1/ln",
        "blocks/1/up",
        "blocks/1/down",
        "head",
    ]
    assert [row.depth for row in r.rows] == [0, 1, 2, 2, 2, 1, 2, 2, 2, 1]
    total = whole_call_flops(model, x)
    assert r.total.flops == pytest.approx(total, rel=0.01)
    self_sum = sum(r.self_flops(i) for i in range(len(r.rows)))
    assert self_sum == pytest.approx(total, rel=0.01)
    up = r.rows[3]
    assert up.module == "Linear" and up.inputs == "f32[8,16]" and up.outputs == "f32[8,64]"
    assert up.flops == 2 * 8 * 16 * 64 + 8 * 64  # the matmul and the bias add
    assert up.params == 16 * 64 + 64 and up.param_bytes == 4 * (16 * 64 + 64)
    assert up.output_bytes == 8 * 64 * 4
    assert r.total.params == sum(v.size for v in jax.tree.leaves(nnx.state(model, nnx.Param)))
    text = r.to_text()
    assert text.splitlines()[0] == f"Per-layer cost · {r.summary()}" and "    blocks/0/up" in text
    assert r.to_dict()["total_flops"] == r.total.flops


def test_a_layer_called_twice_gets_two_rows():
    class Twice(nnx.Module):
        def __init__(self, rngs):
            self.lin = nnx.Linear(4, 4, rngs=rngs)

        def __call__(self, x):
            return self.lin(self.lin(x))

    r = tabulate(Twice(nnx.Rngs(0)), jnp.ones((2, 4)))
    assert [row.path for row in r.rows] == ["(model)", "lin", "lin"]


def test_dropout_and_batchnorm_model_is_left_unchanged():
    model = TinyMLP(rngs=nnx.Rngs(0), dropout=0.5, batchnorm=True)
    before = fingerprint(model)
    call_before = nnx.Linear.__call__
    r = tabulate(model, jnp.ones((4, 8)))
    assert {row.module for row in r.rows} >= {"Linear", "BatchNorm", "Dropout"}
    assert fingerprint(model) == before
    assert nnx.Linear.__call__ is call_before  # the wrappers are gone
    assert vars(TinyMLP)["__call__"].__qualname__ == "TinyMLP.__call__"


def test_bad_input_names_the_layer_and_changes_nothing():
    model = TinyMLP(rngs=nnx.Rngs(0))
    before = fingerprint(model)
    calls = {cls: cls.__dict__.get("__call__") for cls in (nnx.Linear, TinyMLP)}
    with pytest.raises(LayerCallError, match=r"layer 'l1' \(Linear\) raised"):
        tabulate(model, jnp.ones((4, 5)))  # wrong feature size

    class Broken(nnx.Module):
        def __init__(self, rngs):
            self.lin = nnx.Linear(2, 2, rngs=rngs)

        def __call__(self, x):
            raise RuntimeError("not today")

    with pytest.raises(LayerCallError, match=r"the model raised RuntimeError: not today"):
        tabulate(Broken(nnx.Rngs(0)), jnp.ones((1, 2)))
    with pytest.raises(TypeError, match="needs a Flax NNX module"):
        tabulate(lambda x: x, jnp.ones(2))
    assert fingerprint(model) == before
    assert {cls: cls.__dict__.get("__call__") for cls in (nnx.Linear, TinyMLP)} == calls
    assert vars(Broken)["__call__"].__qualname__.endswith("Broken.__call__")


def test_jaxtabulate_magic(ip):
    ip.user_ns.update(model=TinyMLP(rngs=nnx.Rngs(0)), jnp=jnp)
    r = ip.run_line_magic("jaxtabulate", "-o model(jnp.ones((4, 8)))")
    assert type(r).__name__ == "LayerCostReport" and r.model == "TinyMLP"
    assert r.to_dict() == jaxmagic.tabulate(ip.user_ns["model"], jnp.ones((4, 8))).to_dict()
    with pytest.raises(UsageError, match="layer 'l1'"):
        ip.run_line_magic("jaxtabulate", "model(jnp.ones((4, 5)))")
    with pytest.raises(UsageError, match="needs a Flax NNX module"):
        ip.run_line_magic("jaxtabulate", "jnp.sin(jnp.ones(2))")
