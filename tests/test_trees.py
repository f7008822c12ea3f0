"""Structure summaries: every supported input, filters, totals, bad input, big models."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import linen as nn
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import jaxmagic
from jaxmagic.trees import CheckpointError, tree
from tests.helpers import parse_html


class MLP(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.l1 = nnx.Linear(4, 8, rngs=rngs)
        self.bn = nnx.BatchNorm(8, rngs=rngs)
        self.drop = nnx.Dropout(0.1, rngs=rngs)
        self.l2 = nnx.Linear(8, 2, rngs=rngs)


@pytest.fixture(scope="module")
def mlp():
    return MLP(nnx.Rngs(0))


def paths(s):
    return [l.path_str for l in s.leaves]


def test_nnx_module_kinds_totals_and_bytes(mlp):
    s = tree(mlp, name="mlp")
    d = s.to_dict()
    assert d["by_kind"]["Param"] == {"leaves": 6, "elements": 4 * 8 + 8 + 8 + 8 + 8 * 2 + 2, "bytes": 4 * 74}
    assert d["by_kind"]["BatchStat"]["leaves"] == 2 and d["by_kind"]["RngState"]["leaves"] == 2
    assert set(d["by_top"]) == {"l1", "bn", "drop", "l2"}
    assert d["totals"]["bytes"] == sum(l["bytes"] for l in d["leaves"])
    k = next(l for l in d["leaves"] if l["path"] == "l1.kernel")
    assert k == {
        "path": "l1.kernel",
        "kind": "Param",
        "type": "Param",
        "shape": [4, 8],
        "dtype": "float32",
        "size": 32,
        "bytes": 128,
        "spec": "device 0",
        "num_devices": 1,
        "status": "",
    }
    assert repr(s) == "TreeSummary(mlp: 10 leaves, 92 elements, 372 B)"  # nnx says: Total 92 (372 B)
    json.dumps(d)


def test_text_is_pinned(mlp):
    text = tree(mlp, name="mlp", kind="Param", depth=1).to_text()
    assert text.splitlines()[:8] == [
        "TreeSummary mlp: 6 of 10 leaves, 74 elements, 296 B",
        "source: NNX MLP   filters: depth=1, kind=Param",
        "",
        "by kind:",
        "  kind   leaves  elements  bytes   share",
        "  ─────  ──────  ────────  ─────  ──────",
        "  Param       6        74  296 B  100.0%",
        "",
    ]
    assert "l1    Param  2 leaves        40  160 B  device 0        1" in text


def test_filters(mlp):
    assert paths(tree(mlp, kind="batchstat")) == ["bn.mean", "bn.var"]
    assert paths(tree(mlp, grep=r"^l\d\.kernel$")) == ["l1.kernel", "l2.kernel"]
    rows = tree(mlp, depth=1).rows()
    assert [r.path for r in rows] == ["bn", "drop", "l1", "l2"] and rows[0].totals.leaves == 4
    assert [r.path for r in tree(mlp, depth=0).rows()] == ["(root)"]
    with pytest.raises(
        ValueError, match="no leaves of kind 'Params'; kinds in this tree: Param, BatchStat, RngState"
    ):
        tree(mlp, kind="Params")
    with pytest.raises(ValueError, match="not a valid regular expression"):
        tree(mlp, grep="(")
    with pytest.raises(ValueError, match="depth must be a non-negative integer"):
        tree(mlp, depth=-1)


def test_state_graphdef_and_split(mlp):
    g, state = nnx.split(mlp)
    assert paths(tree(state)) == paths(tree(mlp))
    gs = tree(g)
    assert gs.source == "nnx.GraphDef" and all(l.status == "graphdef" for l in gs.leaves)
    assert {l.kind for l in gs.leaves} == {"Param", "BatchStat", "RngState"}
    assert any("graph definition only" in n for n in gs.notes)
    both = tree((g, state))
    assert both.to_dict()["by_top"]["1"]["bytes"] == tree(mlp).totals.bytes


def test_nnx_optimizer_state_is_opt_state(mlp):
    opt = nnx.Optimizer(mlp, optax.adam(1e-3), wrt=nnx.Param)
    s = tree(opt)
    assert set(s.by_kind()) == {"OptState"}
    assert s.by_kind()["OptState"].elements == 2 * 74 + 2  # mu + nu + count + step


def test_optax_state_and_mixed_dict(mlp):
    params = nnx.state(mlp, nnx.Param)
    st = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(1e-3)).init(params)
    s = tree(st)
    assert s.source == "Optax state" and set(s.by_kind()) == {"OptState"}
    combo = tree({"model": mlp, "opt": st, "step": 3})
    kinds = combo.by_kind()
    assert kinds["OptState"].elements == 2 * 74 + 1 and kinds["Param"].leaves == 6 and kinds["-"].leaves == 1


def test_linen_variables_dict_and_frozendict():
    class Net(nn.Module):
        @nn.compact
        def __call__(self, x, train=False):
            x = nn.Dense(8)(x)
            return nn.BatchNorm(use_running_average=not train)(x)

    v = Net().init(jax.random.key(0), jnp.ones((1, 3)))
    for variables in (
        v,
        nn.FrozenDict(v) if hasattr(nn, "FrozenDict") else __import__("flax").core.FrozenDict(v),
    ):
        s = tree(variables)
        assert s.source == "Linen variables"
        assert s.by_kind()["Param"].elements == 3 * 8 + 8 + 8 + 8
        assert s.by_kind()["BatchStat"].leaves == 2


class Pair(NamedTuple):
    a: jax.Array
    b: object


@jax.tree_util.register_dataclass
@dataclasses.dataclass
class Registered:
    w: jax.Array
    n: int = dataclasses.field(metadata=dict(static=True), default=3)


class Node:
    def __init__(self, x):
        self.x = x


jax.tree_util.register_pytree_node(Node, lambda n: ((n.x,), None), lambda _, c: Node(*c))


class Unregistered:
    pass


def test_plain_pytrees_custom_nodes_and_opaque_leaves():
    obj = {
        "pair": Pair(jnp.ones(2), None),
        "reg": Registered(jnp.ones((2, 3))),
        "node": Node(np.zeros(4, np.int8)),
        "odd": Unregistered(),
        "s": jax.ShapeDtypeStruct((3, 5), jnp.bfloat16),
        "f": 1.5,
    }
    s = tree(obj)
    by_path = {l.path_str: l for l in s.leaves}
    assert by_path["pair.a"].type_str == "f32[2]"
    assert by_path["pair.b"].status == "none"
    assert by_path["reg.w"].nbytes == 24
    assert by_path["node.0"].type_str == "i8[4]" and by_path["node.0"].nbytes == 4
    assert (
        by_path["odd"].status == "opaque"
        and by_path["odd"].type_name == "Unregistered"
        and by_path["odd"].nbytes is None
    )
    assert by_path["s"].status == "abstract" and by_path["s"].nbytes == 30
    assert by_path["f"].type_str == "f64[]"
    assert any("opaque" in n and "Unregistered ×1" in n for n in s.notes)
    assert "opaque" in s.to_text() and "Unregistered" in s.to_html()


def test_cyclic_and_shared_nnx_references():
    class Child(nnx.Module):
        def __init__(self, parent):
            self.parent = parent
            self.w = nnx.Param(jnp.ones(3))

    class Parent(nnx.Module):
        def __init__(self):
            self.a = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
            self.b = self.a  # shared
            self.child = Child(self)  # cycle

    s = tree(Parent(), deep=True)
    assert paths(s) == ["a.bias", "a.kernel", "child.w"]
    assert any("shared reference" in n and "b is a" in n for n in s.notes)
    assert any("cyclic reference" in n and "child.parent" in n for n in s.notes)
    html = s.to_html()  # the deep view draws the state, not the cyclic graph
    assert "treescope" in html.lower()


def test_cyclic_plain_container_is_a_clear_error():
    a: list = [jnp.ones(2)]
    a.append(a)
    with pytest.raises(ValueError, match="cyclic"):
        tree(a)


def test_deleted_and_traced_values():
    x = jnp.ones((4, 4))
    donated = jax.jit(lambda t: t * 2, donate_argnums=0)
    y = jnp.ones((2, 2))
    donated(y)
    x.delete()
    s = tree({"x": x, "y": y})
    assert [l.status for l in s.leaves] == ["deleted", "deleted"] and s.totals.bytes == 64 + 16
    assert any("deleted array" in n for n in s.notes)

    seen = {}

    @jax.jit
    def f(t):
        seen["s"] = tree({"t": t})
        return t

    f(jnp.ones(3))
    assert seen["s"].leaves[0].status == "traced" and seen["s"].leaves[0].type_str == "f32[3]"


def test_sharded_leaves_show_spec_and_devices():
    mesh = jax.make_mesh((2, 4), ("data", "model"))
    x = jax.device_put(jnp.ones((8, 16)), NamedSharding(mesh, P("data", "model")))
    leaf = tree({"x": x}).leaves[0]
    assert (leaf.spec, leaf.num_devices) == ("P('data', 'model')", 8)
    assert "P(&#x27;data&#x27;, &#x27;model&#x27;)" in tree({"x": x}).to_html()


def test_html_is_self_contained_and_escaped():
    s = tree({"<b>evil</b>": jnp.ones(2)}, name="<script>x</script>")
    h = s.to_html()
    assert "<script>x</script>" not in h and "&lt;b&gt;evil&lt;/b&gt;" in h
    assert "http://" not in h.replace("http://www.w3.org", "") and "https://" not in h
    p = parse_html(h)
    assert "details" in p.tags and "table" in p.tags


@pytest.mark.slow
def test_big_model_stays_fast_and_small():
    class Deep(nnx.Module):
        def __init__(self, n, rngs):
            self.layers = nnx.List([nnx.Linear(4, 4, rngs=rngs) for _ in range(n)])

    big = Deep(1000, nnx.Rngs(0))
    s = tree(big)
    h = s.to_html()
    # the work stays bounded (no deep view, 500 rows); bench/ measures the time, a test never does
    assert len(s.leaves) == 2000 and not s.deep
    assert len(h) < 2_000_000, len(h)
    assert "Deep view skipped for 2000 leaves" in h
    assert "… 1500 more rows" in h
    assert len(tree(big, depth=2).rows()) == 1000


def _snapshot(root):
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            st = os.stat(p)
            out[p] = (st.st_size, st.st_mtime_ns)
    return out


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, mlp):
    import orbax.checkpoint as ocp

    root = tmp_path_factory.mktemp("ckpt") / "run"
    with ocp.CheckpointManager(root) as mgr:
        for step in (1, 5):
            mgr.save(
                step,
                args=ocp.args.Composite(
                    model=ocp.args.StandardSave(nnx.state(mlp, nnx.Param)),
                    meta=ocp.args.JsonSave({"lr": 0.1, "step": step}),
                ),
            )
        mgr.wait_until_finished()
    return root


def test_checkpoint_from_metadata_without_writing(checkpoint):
    before = _snapshot(checkpoint)
    s = tree(checkpoint)
    assert "step 5" in s.source and any("steps on disk: 1, 5" in n for n in s.notes)
    by_path = {l.path_str: l for l in s.leaves}
    assert by_path["model.l1.kernel.value"].type_str == "f32[4,8]"
    assert by_path["model.l1.kernel.value"].status == "metadata"
    assert by_path["meta.step"].type_str == "i64[]"
    assert s.by_top()["model"].elements == 74
    assert tree(checkpoint, step=1).source.endswith("step 1")
    assert tree(checkpoint / "5" / "model").by_top().keys() == {"bn", "l1", "l2"}
    assert _snapshot(checkpoint) == before


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda p: p / "missing", "no such file or directory"),
        (lambda p: (p / "file.txt").write_text("x") and p / "file.txt", "not a directory"),
        (lambda p: (p / "empty").mkdir() or p / "empty", "not an Orbax checkpoint"),
    ],
)
def test_not_a_checkpoint(tmp_path, make, message):
    path = make(tmp_path)
    before = _snapshot(tmp_path)
    with pytest.raises(CheckpointError, match=message):
        tree(path)
    assert _snapshot(tmp_path) == before
    assert not (tmp_path / "missing").exists()


def test_corrupted_checkpoint(checkpoint, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(checkpoint, bad)
    (bad / "5" / "model" / "_METADATA").write_text("{not json")
    before = _snapshot(bad)
    with pytest.raises(CheckpointError, match="corrupted checkpoint item .*_METADATA is not valid JSON"):
        tree(bad)
    (bad / "5" / "model" / "_METADATA").unlink()
    shutil.rmtree(bad / "5" / "meta")
    with pytest.raises(CheckpointError, match="missing _METADATA"):
        tree(bad)
    with pytest.raises(CheckpointError, match="no step 7; steps on disk: 1, 5"):
        tree(bad, step=7)
    assert set(_snapshot(bad)) <= set(before)


def test_lazy_public_names():
    assert jaxmagic.tree is tree
    assert jaxmagic.TreeSummary.__name__ == "TreeSummary"
