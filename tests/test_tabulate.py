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


@pytest.mark.slow
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


# -- --time: measured device time per row ---------------------------------------------------


def _outermost_us(trace_dir, module: str) -> float:
    """The test's own count: per thread, the time covered by the module's outermost op events."""
    import collections
    import glob
    import gzip
    import json

    (path,) = glob.glob(f"{trace_dir}/**/perfetto_trace.json.gz", recursive=True)
    with gzip.open(path, "rt") as fh:
        events = json.load(fh)["traceEvents"]
    threads = collections.defaultdict(list)
    for e in events:
        if e.get("ph") == "X" and (e.get("args") or {}).get("hlo_module") == module:
            threads[(e["pid"], e["tid"])].append((e["ts"], e["ts"] + e.get("dur", 0)))
    total = 0.0
    for spans in threads.values():
        end = float("-inf")
        for start, stop in sorted(spans):
            if start >= end:  # not inside the previous outermost event
                total += stop - start
                end = stop
    return total


class Identity(nnx.Module):
    def __call__(self, x):
        return x


class WithIdentity(nnx.Module):
    def __init__(self, rngs):
        self.lin = nnx.Linear(16, 32, rngs=rngs)
        self.skip = Identity()
        self.out = nnx.Linear(32, 4, rngs=rngs)

    def __call__(self, x):
        return self.out(self.skip(jax.nn.relu(self.lin(x))))


@pytest.mark.slow
def test_time_rows_are_inclusive_and_add_up_to_the_whole_call(tmp_path):
    from jaxmagic.layercost.timing import RUNS

    model, x = Net(nnx.Rngs(0)), jnp.ones((32, 16))
    before = fingerprint(model)
    r = tabulate(model, x, time=True, trace_dir=str(tmp_path))
    assert r.timed and all(row.device_s is not None for row in r.rows)
    for i, row in enumerate(r.rows):
        kids = sum(k.device_s for k in r.children(i))
        assert row.device_s == pytest.approx(r.self_device_s(i) + kids, rel=1e-9, abs=1e-15)
    assert r.total.device_s == pytest.approx(sum(r.self_device_s(i) for i in range(len(r.rows))))
    # against the trace itself, counted here: every op event of the program, nested ones once
    assert r.total.device_s * RUNS * 1e6 == pytest.approx(
        _outermost_us(tmp_path, "jit_jaxmagic_tabulate_time")
    )
    assert all(row.device_s > 0 for row in r.rows if row.module == "Linear")  # each runs a matmul
    assert fingerprint(model) == before
    text = r.to_text()
    assert "device time" in text and "self time" in text and "named_scope" in text
    assert "on device" in r.summary() and r.to_dict()["total_device_s"] == r.total.device_s
    assert "self time" in r.to_html()


@pytest.mark.slow
def test_time_gives_a_layer_without_ops_no_time_and_leaves_the_model_unchanged():
    model = WithIdentity(nnx.Rngs(0))
    r = tabulate(model, jnp.ones((8, 16)), time=True)
    rows = {row.path: row for row in r.rows}
    assert rows["skip"].device_s == 0.0 and rows["lin"].device_s > 0 and rows["out"].device_s > 0
    assert r.rows[0].flops == pytest.approx(whole_call_flops(model, jnp.ones((8, 16))), rel=0.01)


@pytest.mark.slow
def test_time_on_dropout_and_batchnorm_leaves_rng_and_statistics_unchanged():
    model = TinyMLP(rngs=nnx.Rngs(0), dropout=0.5, batchnorm=True)
    before = fingerprint(model)
    r = tabulate(model, jax.ShapeDtypeStruct((4, 8), jnp.float32), time=True)
    assert r.timed and "inputs given as shapes ran on zeros" in r.timing
    assert fingerprint(model) == before  # RNG counters, batch statistics, parameters
    assert vars(TinyMLP)["__call__"].__qualname__ == "TinyMLP.__call__"


def test_time_on_a_call_that_raises_names_the_layer_and_changes_nothing():
    model = TinyMLP(rngs=nnx.Rngs(0), batchnorm=True)
    before = fingerprint(model)
    call_before = nnx.Linear.__call__
    with pytest.raises(LayerCallError, match=r"layer 'l1' \(Linear\) raised"):
        tabulate(model, jnp.ones((4, 5)), time=True)
    assert fingerprint(model) == before and nnx.Linear.__call__ is call_before


def test_jaxtabulate_time_magic(ip):
    ip.user_ns.update(model=TinyMLP(rngs=nnx.Rngs(0)), jnp=jnp)
    r = ip.run_line_magic("jaxtabulate", "--time -o model(jnp.ones((4, 8)))")
    assert r.timed and r.total.device_s > 0
    assert "--time" in ip.find_line_magic("jaxtabulate").__doc__
    with pytest.raises(UsageError, match="layer 'l1'"):
        ip.run_line_magic("jaxtabulate", "--time model(jnp.ones((4, 5)))")


# -- Linen through nnx.bridge ---------------------------------------------------------------


def _linen_mlp():
    from flax import linen as nn

    class LinenMLP(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.Dense(32, name="up")(x)
            x = nn.relu(x)
            return nn.Dense(4, name="down")(x)

    return LinenMLP()


def test_a_linen_module_through_the_bridge_gets_a_row_per_linen_layer(tmp_path):
    x = jnp.ones((8, 16))
    model = nnx.bridge.ToNNX(_linen_mlp(), rngs=nnx.Rngs(0))
    nnx.bridge.lazy_init(model, x)
    before = fingerprint(model)
    r = tabulate(model, x, time=True)
    assert [(row.path, row.module, row.depth) for row in r.rows] == [
        ("(model)", "ToNNX", 0),
        ("up", "Dense", 1),
        ("down", "Dense", 1),
    ]
    up, down = r.rows[1], r.rows[2]
    assert (
        up.params == 16 * 32 + 32 and down.params == 32 * 4 + 4 and r.total.params == up.params + down.params
    )
    assert up.flops == 2 * 8 * 16 * 32 + 8 * 32 and down.flops == 2 * 8 * 32 * 4 + 8 * 4
    assert up.inputs == "f32[8,16]" and up.outputs == "f32[8,32]"
    assert r.total.flops == pytest.approx(whole_call_flops(model, x), rel=0.01)
    self_sum = sum(r.self_flops(i) for i in range(len(r.rows)))
    assert self_sum == pytest.approx(r.total.flops, rel=0.01)
    assert up.device_s > 0 and down.device_s > 0
    assert fingerprint(model) == before


def test_a_linen_module_not_yet_initialised_says_to_lazy_init():
    model = nnx.bridge.ToNNX(_linen_mlp(), rngs=nnx.Rngs(0))
    with pytest.raises(LayerCallError, match=r"call nnx.bridge.lazy_init\(model, \*inputs\) first"):
        tabulate(model, jnp.ones((8, 16)))


def _linen_net():
    from flax import linen as nn

    class LinenBlock(nn.Module):
        @nn.compact
        def __call__(self, x, train: bool = False):
            h = nn.Dense(64, name="up")(nn.LayerNorm(name="ln")(x))
            h = nn.Dropout(0.1, deterministic=not train)(h)
            h = nn.BatchNorm(use_running_average=not train, name="bn")(h)
            return x + nn.Dense(16, name="down")(nn.gelu(h))

    class LinenNet(nn.Module):
        def setup(self):
            self.blocks = [LinenBlock() for _ in range(2)]
            self.head = nn.Dense(3)

        def __call__(self, x, train: bool = False):
            for block in self.blocks:
                x = block(x, train)
            return self.head(x)

    return LinenNet()


@pytest.mark.parametrize("train", [False, True])
@pytest.mark.slow
def test_nested_linen_layers_in_training_and_eval_sum_to_the_whole_call(train):
    x = jnp.ones((8, 16))
    model = nnx.bridge.ToNNX(_linen_net(), rngs=nnx.Rngs(0))
    nnx.bridge.lazy_init(model, x)
    before = fingerprint(model)
    kw = {"train": True, "mutable": ["batch_stats"]} if train else {}
    r = tabulate(model, x, **kw)
    assert [(row.path, row.depth) for row in r.rows[:7]] == [
        ("(model)", 0),
        ("blocks_0", 1),
        ("blocks_0/ln", 2),
        ("blocks_0/up", 2),
        ("blocks_0/Dropout_0", 2),
        ("blocks_0/bn", 2),
        ("blocks_0/down", 2),
    ]
    assert r.rows[-1].path == "head" and len(r.rows) == 14
    graphdef, state = nnx.split(model)
    whole = jax.jit(lambda s, x: nnx.merge(graphdef, s)(x, **kw)).lower(state, x).compile().cost_analysis()
    assert r.total.flops == pytest.approx(whole["flops"], rel=0.01)
    assert sum(r.self_flops(i) for i in range(len(r.rows))) == pytest.approx(whole["flops"], rel=0.01)
    assert (r.rows[4].flops > 0) == train  # dropout: no work in eval, a random mask in training
    assert fingerprint(model) == before  # batch statistics and RNG streams untouched


@pytest.mark.slow
def test_time_while_another_trace_runs_says_why_and_keeps_the_costs(tmp_path):
    from jaxmagic.profile.tracing import TraceSession

    running = TraceSession(str(tmp_path))
    running.start()
    try:
        r = tabulate(TinyMLP(rngs=nnx.Rngs(0)), jnp.ones((4, 8)), time=True)
    finally:
        running.stop()
    assert not r.timed and r.total.flops > 0
    assert r.timing.startswith("device time not measured: no trace recorded: another jax.profiler trace")
    assert "Device time not measured" in r.to_text() and "self time" not in r.to_text()
