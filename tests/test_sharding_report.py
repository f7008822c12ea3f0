"""ShardingReport: every input form, to_dict equals JAX, N-D text/HTML, trees, what-if, widget."""

from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import jaxmagic
from jaxmagic.shardings import ShardingReport, SpecError, sharding
from jaxmagic.widgets.sharding import ShardingExplorer
from tests.helpers import parse_html


@pytest.fixture(scope="module")
def mesh():
    return jax.make_mesh((2, 4), ("data", "model"))


def put(shape, mesh, spec, dtype=jnp.float32):
    return jax.device_put(jnp.zeros(shape, dtype), NamedSharding(mesh, spec))


def assert_dict_equals_jax(d, sharding_obj, shape):
    expected = sharding_obj.devices_indices_map(tuple(shape))
    by_dev = {e["device"]: e for e in d["devices"]}
    assert set(by_dev) == {dev.id for dev in expected}
    for dev, slices in expected.items():
        e = by_dev[dev.id]
        assert e["index"] == [list(sl.indices(n)[:2]) for sl, n in zip(slices, shape)]
        assert e["shard_shape"] == list(sharding_obj.shard_shape(tuple(shape)))
        assert e["bytes"] == math.prod(e["shard_shape"]) * np.dtype(d["dtype"]).itemsize


@pytest.mark.parametrize(
    "mesh_shape,names,spec,shape",
    [
        ((8,), ("x",), P("x"), (16,)),
        ((8,), ("x",), P(), (3, 5)),
        ((2, 4), ("data", "model"), P("data", "model"), (8, 16)),
        ((2, 4), ("data", "model"), P(None, "data", None, "model"), (3, 4, 5, 8)),
        ((2, 2, 2), ("x", "y", "z"), P(("x", "z"), "y"), (8, 6, 2)),
    ],
)
def test_array_to_dict_equals_jax(mesh_shape, names, spec, shape):
    m = jax.make_mesh(mesh_shape, names)
    x = put(shape, m, spec)
    d = sharding(x, name="x").to_dict()
    (arr,) = d["arrays"]
    assert_dict_equals_jax(arr, x.sharding, shape)
    per = {int(k): v for k, v in d["device_bytes"].items()}
    assert per == {s.device.id: s.data.nbytes for s in x.addressable_shards}  # what the buffers really hold
    json.dumps(d)


def test_every_input_form_gives_the_same_layout(mesh):
    ns = NamedSharding(mesh, P("data", "model"))
    forms = [
        sharding(put((8, 16), mesh, P("data", "model"))),
        sharding(ns, shape=(8, 16)),
        sharding(mesh, shape=(8, 16), spec=P("data", "model")),
        sharding(mesh, shape=(8, 16), spec="data, model"),
        sharding(P("data", "model"), mesh=mesh, shape=(8, 16)),
        sharding({"data": 2, "model": 4}, shape=(8, 16), spec=P("data", "model")),
        sharding(
            jax.sharding.AbstractMesh((2, 4), ("data", "model")), shape=(8, 16), spec=P("data", "model")
        ),
    ]
    want = [e["index"] for e in forms[0].to_dict()["arrays"][0]["devices"]]
    for r in forms[1:]:
        assert [e["index"] for e in r.to_dict()["arrays"][0]["devices"]] == want


def test_bad_inputs_say_why(mesh):
    with pytest.raises(SpecError, match="unknown mesh axis 'batch'"):
        sharding(mesh, shape=(8, 16), spec=P("batch"))
    with pytest.raises(SpecError, match="not divisible by 4"):
        sharding(P("model"), mesh=mesh, shape=(6,))
    with pytest.raises(SpecError, match="rank 1"):
        sharding(P("model", None), mesh=mesh, shape=(8,))
    with pytest.raises(ValueError, match="needs mesh= and shape="):
        sharding(P("data"))
    with pytest.raises(ValueError, match="needs shape="):
        sharding(NamedSharding(mesh, P("data")))
    with pytest.raises(ValueError, match="a Mesh alone has no arrays"):
        sharding(mesh)
    with pytest.raises(ValueError, match="dims must be two different"):
        sharding(put((8, 16), mesh, P("data")), dims=(1, 1))
    x = put((8, 16), mesh, P("data"))
    x.delete()
    with pytest.raises(ValueError, match="deleted"):
        sharding(x)
    with pytest.raises(ValueError, match="holds no arrays"):
        sharding({})


def test_nd_text_has_axis_names_grid_and_facets(mesh):
    x = put((8, 6, 4), mesh, P("data", None, "model"))
    text = sharding(x, name="x").to_text()
    assert "grid: rows = dim 0 (size 8 split by 'data'), cols = dim 2 (size 4 split by 'model')" in text
    assert "[0:4]  0      1      2      3" in text and "[4:8]  4      5      6      7" in text
    text2 = sharding(x, name="x", dims=(0, 1)).to_text()
    assert "facet 4/4: dim 2 [3:4]" in text2
    assert "[4:8]  7" in text2  # facet 4: only dim-2 block [3:4] lives on devices 3 and 7
    rep = sharding(put((4, 4), mesh, P()), name="r").to_text()
    assert "0-7" in rep and "each held by 8 device(s)" in rep


def test_html_grid_cells_and_self_contained(mesh):
    h = sharding(put((8, 16), mesh, P("data", "model")), name="x").to_html()
    p = parse_html(h)
    assert p.attr("data-devices", tag="td") == [str(i) for i in range(8)]
    assert "https://" not in h and "<style>" in h


def tree_state(mesh):
    class Block(nnx.Module):
        def __init__(self, rngs):
            init = nnx.initializers.lecun_normal()
            self.w1 = nnx.Linear(
                16, 32, rngs=rngs, kernel_init=nnx.with_partitioning(init, ("data", "model"))
            )
            self.w2 = nnx.Linear(
                32, 16, rngs=rngs, kernel_init=nnx.with_partitioning(init, ("model", "data"))
            )

    with jax.set_mesh(mesh):
        model = Block(nnx.Rngs(0))
        opt = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)
    return model, opt


@pytest.mark.slow
def test_tree_per_device_bytes_equal_the_buffers(mesh):
    model, opt = tree_state(mesh)
    r = sharding({"model": model, "opt": opt}, name="state")
    leaves = jax.tree.leaves(nnx.state({"model": model, "opt": opt}))
    truth: dict[int, int] = {}
    for leaf in leaves:
        for s in leaf.addressable_shards:
            truth[s.device.id] = truth.get(s.device.id, 0) + s.data.nbytes
    assert dict(r.device_bytes()) == truth
    kinds = dict(zip((a.name for a in r.arrays), r.kinds))
    assert kinds["model.w1.kernel"] == "Param" and kinds["opt.opt_state.0.mu.w1.kernel"] == "OptState"
    t = r.to_text()
    assert "per-device bytes (imbalance max/mean = 1.00)" in t and "model.w1.kernel" in t


@pytest.mark.slow
def test_what_if_spec_changes_bytes_without_moving_data(mesh):
    model, _ = tree_state(mesh)
    r = sharding(model)
    before = dict(r.device_bytes())
    kernel = model.w1.kernel.get_value()
    r2 = r.with_spec("w1.kernel", P())  # replicate: every device holds all 16*32 floats
    after = dict(r2.device_bytes())
    assert all(after[d] - before[d] == 16 * 32 * 4 - 8 * 8 * 4 for d in before)
    assert r2.edited == ("w1.kernel",) and "* re-laid-out" in r2.to_text()
    assert model.w1.kernel.get_value() is kernel and kernel.sharding.spec == P("data", "model")
    with pytest.raises(SpecError, match="unknown mesh axis 'nope'"):
        r.with_spec("w1.kernel", P("nope"))
    with pytest.raises(KeyError, match="no array named"):
        r.with_spec("missing", P())


def test_tree_with_unplaced_and_deleted_leaves(mesh):
    gone = put((8,), mesh, P("data"))
    gone.delete()
    r = sharding(
        {
            "a": put((8,), mesh, P("data")),
            "host": np.ones(3),
            "odd": object(),
            "gone": gone,
            "abstract": jax.ShapeDtypeStruct((4,), jnp.float32),
        }
    )
    reasons = dict(r.skipped)
    assert set(reasons) == {"host", "odd", "gone", "abstract"}
    assert "deleted" in reasons["gone"] and "not an array" in reasons["odd"]
    assert "not placed on devices (4)" in r.to_text()


def test_compiled_function_inputs_and_outputs(mesh):
    x = put((8, 16), mesh, P("data", "model"))
    c = jax.jit(lambda a, b: (a + b, a.sum())).lower(x, x).compile()
    r = sharding(c, name="step")
    names = [a.name for a in r.arrays]
    assert names == ["inputs.0", "inputs.1", "outputs.0", "outputs.1"] and r.source == "compiled function"
    assert r.arrays[3].spec_text == "P()" and r.arrays[0].spec_text == "P('data', 'model')"
    with pytest.raises(TypeError, match="call .compile"):
        sharding(jax.jit(lambda a: a).lower(x))


def test_speed_targets_sanity():
    """Big inputs render with bounded output; bench/ measures the time, a test never does."""
    r = sharding(shape=(1024, 4096), mesh={"data": 64, "model": 8}, spec=P("data", "model"))
    r.to_text(), r.to_html()
    assert r.mesh.size == 512 and len(r.to_dict()["arrays"][0]["devices"]) == 512
    m = jax.make_mesh((2, 4), ("data", "model"))
    tree = {
        f"l{i}": jax.ShapeDtypeStruct(
            (64, 32), jnp.float32, sharding=NamedSharding(m, P("data", "model" if i % 2 else None))
        )
        for i in range(2000)
    }
    r = sharding(tree)
    h = r.to_html()
    assert len(r.arrays) == 2000 and len(h) < 2_000_000


def test_widget_edits_and_errors_never_raise(mesh):
    model, opt = tree_state(mesh)
    w = sharding({"model": model, "opt": opt}).explore()
    assert isinstance(w, ShardingExplorer)
    sel = w.data["arrays"][w.selected]
    assert sel["name"] in ("model.w1.kernel", "model.w2.kernel") or sel["shape"] == [16, 32]
    before = dict(w.data["device_bytes"])
    assert w.edit_spec("model.w1.kernel", P()) is True and w.error == ""
    after = dict((d, b) for d, b in w.data["device_bytes"])
    assert all(after[d] > before[d] for d in before)
    edited = next(a for a in w.data["arrays"] if a["name"] == "model.w1.kernel")
    assert edited["edited"] and edited["spec_text"] == "P(None, None)"
    for bad, msg in [
        ([["data"], ["data"]], "used in dimensions 0 and dimension 1"),
        ([["nope"], []], "unknown mesh axis 'nope'"),
        ([["model"], [], []], "spec has 3 entries but the array has rank 2"),
        ("((", "unbalanced"),
    ]:
        data_before = w.data
        assert w.edit_spec("model.w1.kernel", bad) is False
        assert msg in w.error and w.data == data_before  # nothing changed
    # the browser sends the same message shape through the trait
    w.spec_request = {"name": "model.w1.kernel", "spec": [["model"], ["data"]], "n": 99}
    assert w.error == "" and w.report.arrays[
        [a.name for a in w.report.arrays].index("model.w1.kernel")
    ].spec == (("model",), ("data",))
    w.spec_request = {"name": "nope", "spec": [], "n": 100}
    assert "no array named" in w.error
    w.reset()
    assert w.error == "" and w.data == w.data and not w.report.edited


def test_widget_bundle_has_fallbacks(mesh):
    w = sharding(put((8, 16), mesh, P("data", "model")), name="x").explore()
    data, _ = w._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in data
    assert data["text/plain"].startswith("ShardingReport x: f32[8,16]")
    assert 'data-devices="0"' in data["text/html"]


def test_public_names():
    assert jaxmagic.sharding is sharding and jaxmagic.ShardingReport is ShardingReport
    d = jaxmagic.devices().to_dict()
    assert len(d["devices"]) == 8 and d["devices"][0]["platform"] == "cpu" and d["devices"][0]["local"]
