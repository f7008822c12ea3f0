"""%jaxplan, %jaxtabulate, %jaxmemory and %jaxcompiles on tutorial-style models in a real
IPython shell: no error, every user object exactly as before, and each number checked against
a count the test makes on its own (input bytes summed from the leaves, the whole call's XLA
cost analysis, the model's state bytes, the test's own jax.monitoring listener).
"""

from __future__ import annotations

import jax
import numpy as np
import pytest
from flax import nnx

from tests.realworld.shell import run, setup

pytestmark = [pytest.mark.realworld, pytest.mark.slow]


def _leaf_bytes(*values) -> int:
    """Bytes of every distinct array buffer in ``values`` (what a compiled call takes as input);
    NNX objects are read through ``nnx.state`` (their Variables' arrays)."""
    seen, total = set(), 0
    for value in values:
        tree = nnx.state(value) if isinstance(value, nnx.Object) else value
        for leaf in jax.tree.leaves(tree):
            if isinstance(leaf, jax.Array) and id(leaf) not in seen:
                seen.add(id(leaf))
                total += leaf.nbytes
            elif isinstance(leaf, (bool, int, float)):  # TrainState.step=0: passed as a 32-bit scalar
                total += 4
    return total


# each model's own kind of step: nnx.jit with an optimizer, Rngs sampling, BatchNorm + metrics,
# Linen TrainState (kept to four: every case compiles a whole train step)
PLANS = [
    ("gpt", "gpt_train_step", ("gpt", "gpt_opt", "gpt_batch")),
    ("vae", "vae_train_step", ("vae", "vae_opt", "x")),
    ("cnn", "cnn_train_step", ("cnn", "cnn_opt", "metrics", "batch")),
    ("linen", "linen_train_step", ("state", "(Xl, yl)")),
]


@pytest.mark.parametrize("model,step,args", PLANS, ids=[p[0] for p in PLANS])
def test_plan_of_a_train_step_compiles_once_runs_nothing_and_counts_every_input(ip, model, step, args):
    names = setup(ip, model)
    cell = run(ip, f"r = %jaxplan -o {step}({', '.join(args)})", names)
    assert cell.error is None, cell.error
    assert cell.changed == [], cell.changed  # nothing ran: no step counter, no parameter moved
    assert dict(cell.compiles.by_name) == {step: 1}  # the one program, compiled not run
    r = ip.user_ns["r"]
    values = [ip.ev(a) for a in args]
    # one CPU device: the program's argument bytes are the bytes of every input leaf
    assert r.memory["argument_bytes"] == _leaf_bytes(*values)
    m = r.memory
    assert m["peak_bytes"] == m["argument_bytes"] + m["output_bytes"] + m["temp_bytes"] - m["alias_bytes"]
    assert r.cost["flops"] and r.cost["flops"] > 0


def _whole_call_flops(module, *inputs) -> float:
    graphdef, state = nnx.split(module)

    def call(s, *xs):  # in the mode the user's model is in, as the magic's call runs it
        return nnx.merge(graphdef, s, copy=True)(*xs)

    return float(jax.jit(call).lower(state, *inputs).compile().cost_analysis()["flops"])


TABULATE = [
    ("gpt", "gpt", ("prompt",)),  # attention, embeddings, dropout in train mode
    ("cnn", "cnn", ("batch['image']",)),  # convolutions, BatchNorm on batch statistics
    ("unet", "unet", ("x0", "t")),  # two inputs, skip connections
]


@pytest.mark.parametrize("model,name,inputs", TABULATE, ids=[t[0] for t in TABULATE])
def test_tabulate_totals_equal_the_whole_calls_cost_and_leave_the_model(ip, model, name, inputs):
    names = setup(ip, model)
    cell = run(ip, f"r = %jaxtabulate -o {name}({', '.join(inputs)})", names)
    assert cell.error is None, cell.error
    assert cell.changed == [], cell.changed
    r = ip.user_ns["r"]
    module = ip.user_ns[name]
    expected = _whole_call_flops(module, *[ip.ev(i) for i in inputs])
    assert r.total.flops == pytest.approx(expected, rel=0.01)
    params = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(nnx.state(module, nnx.Param)))
    assert r.total.params == params
    assert len(r.rows) > 3 and all(row.flops is None or row.flops >= 0 for row in r.rows)


@pytest.mark.parametrize("model,name", [("gpt", "gpt"), ("cnn", "cnn")])
def test_memory_attributes_every_array_of_the_model_to_it(ip, model, name):
    names = setup(ip, model)
    cell = run(ip, "r = %jaxmemory -o", names)
    assert cell.error is None, cell.error
    assert cell.changed == [], cell.changed
    r = ip.user_ns["r"]
    module = ip.user_ns[name]
    owned = {a.owner: a.nbytes for a in r.arrays if a.root == name}
    expected = _leaf_bytes(module)
    assert sum(owned.values()) == expected, sorted(owned)
    kernels = [path for path, _ in nnx.to_flat_state(nnx.state(module, nnx.Param)) if path[-1] == "kernel"]
    dotted = {".".join(str(p) for p in path) for path in kernels}
    assert any(o.startswith(f"{name}.") for o in owned)
    assert all(any(o.replace("[", ".").replace("]", "").endswith(d) for o in owned) for d in dotted), (
        sorted(owned)[:10],
        sorted(dotted)[:10],
    )


def test_compile_ledger_counts_what_jax_compiled_in_each_cell(ip):
    names = setup(ip, "gpt", "cnn")
    ip.run_line_magic("jaxcompiles", "--reset -q")
    first = run(ip, "loss = gpt_train_step(gpt, gpt_opt, gpt_batch)", store_history=True)
    second = run(ip, "cnn_train_step(cnn, cnn_opt, metrics, batch)", store_history=True)
    assert first.error is None and second.error is None
    cell = run(ip, "r = %jaxcompiles -o", names)
    assert cell.error is None and cell.changed == []
    r = ip.user_ns["r"]
    assert r.count == first.compiles.total + second.compiles.total > 0
    by_name: dict[str, int] = {}
    for site in r.sites:
        for fn in site.functions:
            by_name[fn.name] = by_name.get(fn.name, 0) + fn.count
    expected = first.compiles.by_name + second.compiles.by_name
    assert by_name == dict(expected)
