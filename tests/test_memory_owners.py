"""``jaxmagic.memory()`` on constructed namespaces: every live array attributed to its known
path, none missed, shared buffers counted once, and the owner search bounded and free of
user code (properties, ``__getattr__``, ``__repr__``, ``__iter__``)."""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxmagic.memories import memory
from jaxmagic.memories.report import UNOWNED


class Block(nnx.Module):
    def __init__(self, rngs):
        self.attn = nnx.Linear(4, 8, rngs=rngs)
        self.norm = nnx.BatchNorm(8, rngs=rngs)


class Model(nnx.Module):
    def __init__(self, n, rngs):
        self.blocks = nnx.List([Block(rngs) for _ in range(n)])
        self.head = nnx.Linear(8, 2, rngs=rngs)


class Pair(NamedTuple):
    left: jax.Array
    right: jax.Array


@dataclasses.dataclass
class Batch:
    x: jax.Array
    y: jax.Array


class Slotted:
    __slots__ = ("w", "unset")

    def __init__(self, w):
        self.w = w


class Hostile:
    """Every user hook raises or hangs and counts its calls; only its ``__dict__`` is plain."""

    calls = 0

    def __init__(self, arr):
        self.payload = arr

    def __getattr__(self, name):
        Hostile.calls += 1
        time.sleep(5)
        raise RuntimeError("__getattr__ must not be called")

    def __getattribute__(self, name):
        if name not in ("payload", "__dict__", "__class__"):
            Hostile.calls += 1
        return object.__getattribute__(self, name)

    @property
    def boom(self):
        Hostile.calls += 1
        raise RuntimeError("property must not be called")

    def __iter__(self):
        Hostile.calls += 1
        raise RuntimeError("__iter__ must not be called")

    def __repr__(self):
        Hostile.calls += 1
        raise RuntimeError("__repr__ must not be called")


class BadKey:
    def __repr__(self):
        raise RuntimeError("key __repr__ must not be called")

    def __hash__(self):
        return 7


def _resolve(ns, path):
    """The object at ``path`` (as the report writes it), read without the walker's code."""
    value = eval(path.replace(".<closure big>", ".__closure__[0].cell_contents"), {}, dict(ns))  # noqa: S307
    if isinstance(value, nnx.Variable):
        value = value.get_raw_value()
    if type(value).__name__ == "PRNGKeyArray":
        value = jax.random.key_data(value)
    return value


def _ours(report, ns):
    return [a for a in report.arrays if a.root in ns or a.root.startswith("Out[")]


@pytest.fixture
def namespace():
    rngs = nnx.Rngs(0)
    model = Model(3, rngs)
    optimizer = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)
    shared = jnp.arange(1000.0)
    big = jnp.ones((300, 300))
    ns = {
        "model": model,
        "optimizer": optimizer,
        "shared": shared,
        "alias": shared,  # same array under two names: counted once
        "history": [jnp.zeros(10), {"k": jnp.zeros(20)}, (jnp.zeros(30),)],
        "pair": Pair(jnp.ones(5), jnp.ones(6)),
        "batch": Batch(jnp.ones((2, 3)), jnp.ones(2)),
        "slotted": Slotted(jnp.ones(7)),
        "key": jax.random.key(1),
        "fn": (lambda big=None: lambda: big)(big),
        "part": functools.partial(jnp.add, jnp.ones(9)),
        "Out": {4: jnp.ones(11), 5: shared},
        "_": jnp.ones(12),
        "np_array": np.ones(100),
        "ints": list(range(1000)),
    }
    return ns


@pytest.mark.slow
def test_every_array_attributed_to_its_path_none_missed(namespace):
    ns = namespace
    report = memory(ns, top=1000)
    ours = _ours(report, ns)
    # every owner path leads to the very array the report describes (type and bytes agree)
    for rec in ours:
        arr = _resolve(ns, rec.owner)
        assert isinstance(arr, jax.Array), rec.owner
        assert rec.type_str.split("[")[1] == ",".join(map(str, arr.shape)) + "]", rec.owner
        assert rec.nbytes == arr.nbytes, rec.owner
    # none missed: the arrays reached, collected independently, are exactly the reported ones
    expected = jax.tree.leaves(nnx.state(ns["model"])) + jax.tree.leaves(
        nnx.state(ns["optimizer"], nnx.OptState)
    )
    expected += [
        ns["optimizer"].step.get_raw_value(),
        ns["shared"],
        *jax.tree.leaves(ns["history"]),
        *ns["pair"],
        ns["batch"].x,
        ns["batch"].y,
        ns["slotted"].w,
        jax.random.key_data(ns["key"]),
        ns["fn"].__closure__[0].cell_contents,
        ns["part"].args[0],
        ns["Out"][4],
        ns["_"],
    ]
    expected_ids = {id(a) for a in expected}
    reported_ids = [id(_resolve(ns, rec.owner)) for rec in ours]
    assert len(reported_ids) == len(set(reported_ids)), "an array was listed twice"
    assert set(reported_ids) == expected_ids
    by_owner = {r.owner: r for r in ours}
    assert "model.blocks[2].attn.kernel" in by_owner
    assert "model.blocks[1].norm.mean" in by_owner
    assert "optimizer.opt_state[0].mu.blocks[0].attn.kernel" in by_owner
    assert {
        "history[0]",
        "history[1]['k']",
        "history[2][0]",
        "pair.left",
        "pair.right",
        "batch.x",
        "slotted.w",
        "key",
        "fn.<closure big>",
        "part.args[0]",
        "Out[4]",
        "_",
    } <= set(by_owner)


@pytest.mark.slow
def test_shared_array_counted_once_with_every_holder(namespace):
    report = memory(namespace, top=1000)
    recs = [r for r in report.arrays if r.owner in ("shared", "alias")]
    assert len(recs) == 1
    rec = recs[0]
    assert rec.owner == "shared" and rec.kind == "variable"
    assert set(rec.held_by) == {"shared", "alias", "Out[5]"}
    assert "alias" in rec.other_paths and "Out[5]" in rec.other_paths
    assert rec.nbytes == 4000


def test_history_and_suggestions_free_exact_bytes(namespace):
    ns = namespace
    report = memory(ns, top=1000)
    kinds = {r.owner: r.kind for r in report.arrays}
    assert kinds["Out[4]"] == "history" and kinds["_"] == "history"
    by_action = {s.action: s.frees for s in report.suggestions}
    assert by_action["%reset -f out"] == 44 + 48  # Out[4] and _, nothing a variable holds
    assert "del shared, alias" not in by_action  # Out[5] holds it too: del alone frees nothing
    # the statements free everything they drop the last holder of: shared's 4000 B and Out[4], _
    assert by_action["del shared, alias; %reset -f out"] == 4000 + 44 + 48
    assert by_action["del fn"] == 300 * 300 * 4
    model_bytes = sum(a.nbytes for a in jax.tree.leaves(nnx.state(ns["model"])))
    # the optimizer does not hold the model's parameters in flax 0.12 (it holds only moments)
    assert by_action["del model"] == model_bytes
    assert [s.frees for s in report.suggestions] == sorted(
        (s.frees for s in report.suggestions), reverse=True
    )


def test_owner_totals_sum_to_the_arrays():
    ns = {"a": jnp.ones(100), "b": [jnp.ones(50), jnp.ones(25)]}
    report = memory(ns)
    totals = {o.root: (o.arrays, o.nbytes) for o in report.owners}
    assert totals["a"] == (1, 400) and totals["b"] == (2, 300)
    assert sum(o.nbytes for o in report.owners) == report.total_bytes
    assert sum(d.array_bytes for d in report.devices) == report.total_bytes


def test_deleted_and_donated_arrays_are_named_not_counted():
    x = jnp.ones(16)
    y = jnp.ones(32)
    x.delete()
    out = jax.jit(lambda a: a + 1, donate_argnums=0)(y)
    assert y.is_deleted()
    ns = {"x": x, "y": y, "out": out}
    report = memory(ns)
    assert set(report.deleted) == {"x", "y"}
    owners = {r.owner for r in report.arrays}
    assert "out" in owners and "x" not in owners and "y" not in owners
    assert "deleted" in report.to_text()


def test_arrays_on_several_meshes_bytes_per_device_exact():
    devs = np.array(jax.devices())
    mesh_a = Mesh(devs[:4], ("data",))
    mesh_b = Mesh(devs[4:].reshape(2, 2), ("x", "y"))
    a = jax.device_put(jnp.arange(64.0).reshape(8, 8), NamedSharding(mesh_a, P("data")))
    b = jax.device_put(
        jnp.arange(32.0).reshape(4, 8), NamedSharding(mesh_b, P("x", None))
    )  # replicated over y
    c = jax.device_put(jnp.ones(5), devs[6])
    ns = {"a": a, "b": b, "c": c}
    report = memory(ns, top=100)
    recs = {r.owner: r for r in report.arrays if r.owner in ns}
    for name, arr in ns.items():
        expected = {}
        for s in arr.addressable_shards:
            expected[s.device.id] = expected.get(s.device.id, 0) + s.data.nbytes
        assert dict(recs[name].devices) == expected, name
    on_6 = memory(ns, device=6, top=100)
    assert {r.owner for r in on_6.arrays if r.owner in ns} == {"b", "c"}
    assert [d.id for d in on_6.devices] == [6]
    assert dict(on_6.devices[0].by_owner)["b"] == 2 * 8 * 4 and dict(on_6.devices[0].by_owner)["c"] == 20
    # only device 6's share of each array counts in the filtered report
    assert {r.owner: r.nbytes for r in on_6.arrays if r.owner in ns} == {"b": 2 * 8 * 4, "c": 20}


def test_a_buffer_viewed_by_two_arrays_is_counted_once():
    devs = np.array(jax.devices())
    x = jax.device_put(jnp.arange(16.0), NamedSharding(Mesh(devs, ("d",)), P("d")))
    view = x.addressable_shards[0].data  # a second Array over the buffer of x's shard on device 0
    ns = {"x": x, "view": view}
    report = memory(ns)
    recs = {r.owner: r for r in report.arrays if r.owner in ns}
    assert recs["x"].nbytes == 64
    assert recs["view"].nbytes == 0 and recs["view"].shares_buffer_with == "x"
    assert sum(b for r in recs.values() for _, b in r.devices) == 64


def test_cycles_are_walked_once():
    arr = jnp.ones(13)
    loop: list = []
    loop.append(loop)
    loop.append(arr)
    d: dict = {}
    d["self"] = d
    d["inner"] = {"back": d, "arr2": jnp.ones(14)}
    parent = Batch(None, None)
    child = Batch(parent, jnp.ones(15))
    parent.x = child
    ns = {"loop": loop, "d": d, "parent": parent}
    report = memory(ns)
    owners = {r.owner for r in report.arrays if r.root in ns}
    assert owners == {"loop[1]", "d['inner']['arr2']", "parent.x.y"}


def test_hostile_objects_are_read_without_running_their_code():
    Hostile.calls = 0
    h = Hostile(jnp.ones(17))
    ns = {"h": h, "keyed": {BadKey(): jnp.ones(18)}}
    report = memory(ns)
    assert Hostile.calls == 0  # no hook ran: __getattr__ (which would also sleep 5 s), properties
    owners = {r.owner for r in report.arrays if r.root in ns}
    assert owners == {"h.payload", "keyed[<BadKey>]"}


def test_huge_containers_are_bounded_with_a_note():
    arr = jnp.ones(19)
    big_list = list(range(5000)) + [arr]
    report = memory({"big_list": big_list}, max_items=1000)
    assert not [r for r in report.arrays if r.root == "big_list"]
    assert any("big_list has more than 1,000 items" in n for n in report.notes)
    found = memory({"big_list": big_list})  # default bounds reach it
    assert [r.owner for r in found.arrays if r.root == "big_list"] == ["big_list[5000]"]
    chain = Batch(None, None)
    for _ in range(200):
        chain = Batch(chain, None)
    stopped = memory({"chain": chain, "z": jnp.ones(3)}, max_objects=50)
    assert any("owner search stopped after 50 objects" in n for n in stopped.notes)


def test_unowned_arrays_are_listed_as_such():
    hidden = [jnp.ones(21)]  # held by this frame only, not by the namespace
    report = memory({})
    rec = [r for r in report.arrays if r.type_str == "f32[21]"]
    assert rec and all(r.owner == UNOWNED and r.kind == "unowned" for r in rec)
    assert any("reached by no name" in n for n in report.notes)
    del hidden


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="unknown device 99"):
        memory({}, device=99)
    with pytest.raises(ValueError, match="top"):
        memory({}, top=-1)
    with pytest.raises(TypeError, match="mapping"):
        memory([1, 2])


def test_report_faces():
    ns = {"w": jnp.ones((64, 64)), "Out": {1: jnp.ones(3)}}
    report = memory(ns, top=3)
    assert repr(report).startswith("MemoryReport(") and "live array" in repr(report)
    text = report.to_text()
    assert "backend memory stats: not reported by the CPU backend" in text
    assert "%reset -f out" in text and "del w" in text
    import json

    d = json.loads(report.to_json())
    assert d["total_bytes"] == report.total_bytes and d["devices"][0]["stats"] is None
    html = report.to_html()
    # tags are markup, not text: nothing in this namespace has a '<', so no '&lt;' may appear
    # (an escaped tag, e.g. H.esc over '<code>', would show as text in the notebook)
    assert "<table" in html and "&lt;" not in html
    from html.parser import HTMLParser

    class Check(HTMLParser):
        def __init__(self):
            super().__init__()
            self.stack = []

        def handle_starttag(self, tag, attrs):
            if tag not in ("br", "meta", "input"):
                self.stack.append(tag)

        def handle_endtag(self, tag):
            assert self.stack and self.stack[-1] == tag, (tag, self.stack[-3:])
            self.stack.pop()

    c = Check()
    c.feed(html)
    assert not c.stack


def test_an_unnamed_view_of_a_named_buffer_goes_with_its_array():
    devs = np.array(jax.devices())
    x = jax.device_put(jnp.arange(32.0), NamedSharding(Mesh(devs, ("d",)), P("d")))
    hidden_views = [x.addressable_shards[1].data]  # no name in the namespace reaches this one
    report = memory({"x": x})
    view = [r for r in report.arrays if r.owner == "x (same buffer)"]
    # addressable_shards made one view per shard (x keeps them): each goes with x, at 0 bytes
    assert len(view) == 8
    assert all(v.kind == "variable" and v.root == "x" and v.nbytes == 0 for v in view)
    assert not [r for r in report.arrays if r.kind == "unowned" and r.shares_buffer_with == "x"]
    del hidden_views
