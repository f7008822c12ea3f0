"""``%%jaxprofile``'s memory section: live bytes per device before and after the block, the
arrays it created that are still alive with their owner, what it freed, and each compiled
program's peak. Numbers are checked against counts made by hand in the test, and against
``compiled.memory_analysis()`` compiled here independently."""

from __future__ import annotations

import gc
import weakref

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxmagic.memories import memory
from jaxmagic.profile import Profiler
from tests.helpers import parse_html, run


def _block(ns, body):
    """Run ``body(ns)`` inside a Profiler; the report's owners come from ``ns``."""
    # garbage left by earlier tests (arrays in reference cycles) must not be collected inside
    # the block, where it would count as freed by it
    gc.collect()
    with Profiler() as prof:
        body(ns)
    return prof.report(namespace=ns)


@pytest.mark.slow
def test_created_arrays_with_owners_and_bytes_counted_by_hand():
    class Model(nnx.Module):
        def __init__(self, rngs):
            self.l1 = nnx.Linear(48, 32, rngs=rngs)

    ns: dict = {}

    def body(ns):
        ns["w"] = jnp.ones((256, 128))  # 128 KiB
        ns["model"] = Model(nnx.Rngs(0))  # kernel 48x32, bias 32 (and an RNG key/count)
        tmp = jnp.zeros((1000,))  # created and freed in the block: not listed
        del tmp

    report = _block(ns, body)
    m = report.memory
    by_owner = {a.owner: a for a in m.created}
    assert by_owner["w"].nbytes == 256 * 128 * 4 and by_owner["w"].type_str == "f32[256,128]"
    assert by_owner["model.l1.kernel"].nbytes == 48 * 32 * 4
    assert by_owner["model.l1.bias"].nbytes == 32 * 4
    assert by_owner["w"].kind == "variable" and by_owner["w"].devices == ((0, 256 * 128 * 4),)
    assert not [a for a in m.created if a.type_str == "f32[1000]"]
    # every created array is one the namespace names (the RNG state lives in the model too)
    assert all(a.owner.startswith(("w", "model.")) for a in m.created), [a.owner for a in m.created]
    alive = [ns["w"], *jax.tree.leaves(nnx.state(ns["model"]))]
    by_hand = sum(int(np.prod(a.shape)) * a.dtype.itemsize for a in alive)
    assert m.created_bytes == by_hand
    assert m.freed == 0 and m.after_bytes - m.before_bytes == by_hand
    assert m.devices[0].change == by_hand and all(d.change == 0 for d in m.devices[1:])


def test_arrays_alive_before_and_freed_in_the_block_are_counted_not_listed():
    ns = {"old": jnp.ones((333,)), "kept": jnp.ones((7,))}
    probe = weakref.ref(ns["old"])

    def body(ns):
        del ns["old"]
        ns["new"] = jnp.ones((5, 5))

    report = _block(ns, body)
    m = report.memory
    assert probe() is None  # the profiler kept no reference: the block's del freed it
    assert (m.freed, m.freed_bytes) == (1, 333 * 4)
    assert [(a.owner, a.nbytes) for a in m.created] == [("new", 100)]
    assert m.after_bytes - m.before_bytes == 100 - 333 * 4


def test_donated_argument_counts_as_freed():
    ns = {"state": jnp.ones((64, 64))}
    step = jax.jit(lambda s: s * 2, donate_argnums=0)
    step(jnp.ones((64, 64)))  # compiled outside the block

    def body(ns):
        ns["state"] = step(ns["state"])

    m = _block(ns, body).memory
    assert (m.freed, m.freed_bytes) == (1, 64 * 64 * 4)
    assert [(a.owner, a.nbytes) for a in m.created] == [("state", 64 * 64 * 4)]
    assert m.after_bytes == m.before_bytes


@pytest.mark.slow
def test_sharded_arrays_per_device_and_views_counted_once():
    mesh = Mesh(np.array(jax.devices()), ("d",))
    ns = {"x": jax.device_put(jnp.arange(64.0), NamedSharding(mesh, P("d")))}
    assert len(ns["x"].addressable_shards) == 8  # views of x's shards exist before the block

    def body(ns):
        ns["y"] = jax.device_put(jnp.zeros((16, 8)), NamedSharding(mesh, P("d", None)))
        ns["shard"] = ns["y"].addressable_shards[3].data  # a view: no new memory

    m = _block(ns, body).memory
    assert [(a.owner, a.nbytes, len(a.devices)) for a in m.created] == [("y", 16 * 8 * 4, 8)]
    assert {d.id: d.change for d in m.devices} == dict.fromkeys(range(8), 2 * 8 * 4)
    assert m.created[0].sharding == "P('d', None)"
    # the absolute totals agree with %jaxmemory, which also counts a shared buffer once
    live = {d.id: d.array_bytes for d in memory({}).devices}
    assert {d.id: d.after for d in m.devices} == live


def test_peak_is_the_memory_analysis_of_the_program_compiled_independently():
    def update(s, g):
        return s - 0.1 * g, jnp.tanh(g @ g.T).sum()

    donating = jax.jit(update, donate_argnums=0)
    with Profiler() as prof:
        donating(jnp.ones((128, 64)), jnp.ones((128, 64)))
    f = prof.report(namespace={}).function("update")
    # the same program compiled here, through a wrapper of its own (not jit's cache)
    sds = jax.ShapeDtypeStruct((128, 64), jnp.float32)
    ma = jax.jit(lambda s, g: update(s, g), donate_argnums=0).lower(sds, sds).compile().memory_analysis()
    assert f.memory == {
        "argument_bytes": ma.argument_size_in_bytes,
        "output_bytes": ma.output_size_in_bytes,
        "alias_bytes": ma.alias_size_in_bytes,
        "temp_bytes": ma.temp_size_in_bytes,
        "generated_code_bytes": ma.generated_code_size_in_bytes,
    }
    assert ma.alias_size_in_bytes == 128 * 64 * 4  # the donated state: the formula subtracts it
    assert f.peak_bytes == (
        ma.argument_size_in_bytes
        + ma.output_size_in_bytes
        + ma.temp_size_in_bytes
        - ma.alias_size_in_bytes
        + ma.generated_code_size_in_bytes
    )
    assert f.to_dict()["peak_bytes"] == f.peak_bytes


def test_the_magic_names_variables_and_the_cell_value(ip):
    ip.run_cell("import jax.numpy as jnp")
    res, out = run(ip, "%%jaxprofile\nw = jnp.ones((64, 64))\ndrop = jnp.ones(5)\ndel drop\nw[:8] * 2")
    assert res.success
    n = res.execution_count
    # without -o the value goes to Out[n] once the magic returns: that is its owner
    assert "created in the cell, still alive: 2 arrays, 18.0 KiB" in out
    rows = {line.split()[-1]: line for line in out.splitlines() if "device 0" in line}
    assert rows.keys() == {"w", f"Out[{n}]"} and "16.0 KiB  f32[64,64]" in rows["w"]
    assert "2.0 KiB  f32[8,64]" in rows[f"Out[{n}]"]
    res, _ = run(ip, "%%jaxprofile -o\nv = jnp.ones((32, 32))\nv[:4] + 1")
    owners = {a.owner: a.nbytes for a in res.result.memory.created}
    assert owners == {"v": 32 * 32 * 4, "the cell's value (shown, not kept)": 4 * 32 * 4}


def test_faces_and_to_dict():
    ns = {"<b>": None}

    def body(ns):
        ns["a"] = {"<script>": jnp.ones((3, 3))}

    report = _block(ns, body)
    d = report.to_dict()["memory"]
    assert d["created"][0]["owner"] == "a['<script>']" and d["created_bytes"] == 36
    assert d["devices"][0]["change"] == 36 and set(d) >= {"before_bytes", "after_bytes", "freed"}
    page = parse_html(report.to_html())
    assert "a['<script>']" in page.text and "<script>']" not in report.to_html()
    assert "Peak per device" not in page.text  # no compiled program in this block


def test_memory_off_and_nothing_left_behind():
    with Profiler(memory=False) as prof:
        jnp.ones(3)
    report = prof.report(namespace={})
    assert report.memory is None and "Memory (live" not in report.to_text()
    assert report.to_dict()["memory"] is None


@pytest.mark.parametrize("n", [0, 1])  # an array created and dropped in the block is no exception
@pytest.mark.slow
def test_nothing_created_reads_plainly(n):
    ns = {"a": jnp.ones(4)}
    report = _block(ns, lambda ns: [jnp.ones(2) for _ in range(n)])
    text = report.to_text()
    assert "created in the cell, still alive: none" in text
    assert "freed in the cell: nothing that was alive before it" in text


def test_a_reused_id_is_not_read_from_the_last_snapshot():
    from jaxmagic.profile.memory import snapshot

    a = jnp.ones(10)
    snapshot()
    del a
    b = jnp.ones(1000)  # may well get the freed array's id
    s = snapshot()
    assert s.arrays[id(b)][1] == ((0, 4000),)


def test_section_text_is_pinned_with_backend_counters():
    from jaxmagic.memories.report import ArrayRecord
    from jaxmagic.profile.memory import DeviceChange, MemorySection
    from jaxmagic.profile.report import ProfileReport

    section = MemorySection(
        devices=(
            DeviceChange(
                0, 1024, 5120, {"bytes_in_use": 2048}, {"bytes_in_use": 8192, "peak_bytes_in_use": 9216}
            ),
            DeviceChange(1, 0, 2048, {"bytes_in_use": 0}, {"bytes_in_use": 2048, "peak_bytes_in_use": 4096}),
            DeviceChange(2, 0, 0),
            DeviceChange(3, 0, 0),
        ),
        created=(
            ArrayRecord(
                "w", "w", "variable", "f32[32,32]", 4096, ((0, 2048), (1, 2048)), "P('d')", ("w",), ()
            ),
            ArrayRecord("Out[3]", "Out[3]", "history", "f32[4]", 16, ((0, 16),), "", ("Out[3]",), ()),
        ),
        freed=2,
        freed_bytes=16,
    )
    r = ProfileReport(0.5, 0.0, (), (), {}, {}, {}, {}, memory=section)
    assert (
        r.to_text(width=100).split("\n\n", 1)[1]
        == """\
Memory (live device arrays, shared buffers counted once)
  device   before    after    change  in use before  in use after  peak in use (process)
  ──────  ───────  ───────  ────────  ─────────────  ────────────  ─────────────────────
  0       1.0 KiB  5.0 KiB  +4.0 KiB        2.0 KiB       8.0 KiB                9.0 KiB
  1           0 B  2.0 KiB  +2.0 KiB            0 B       2.0 KiB                4.0 KiB
  devices 2-3: no live arrays before or after
  created in the cell, still alive: 2 arrays, 4.0 KiB
      bytes  type        where             owner
    ───────  ──────────  ────────────────  ──────
    4.0 KiB  f32[32,32]  2 devices P('d')  w
       16 B  f32[4]      device 0          Out[3]
  freed in the cell: 2 arrays (16 B) that were alive before it"""
    )
    page = parse_html(r.to_html())
    assert "peak in use (process)" in page.text and "+4.0 KiB" in page.text
    assert {"jm-created"} <= page.classes
