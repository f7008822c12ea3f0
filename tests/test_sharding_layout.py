"""Layout arithmetic equals what JAX says, on meshes 8, 2×4, 2×2×2 and ranks 0–4."""

from __future__ import annotations

import math

import jax
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxmagic.shardings import (
    SpecError,
    layout_from_sharding,
    layout_from_spec,
    mesh_info,
    parse_spec_text,
    validate_spec,
)

MESHES = {
    "8": ((8,), ("x",)),
    "2x4": ((2, 4), ("data", "model")),
    "4x2": ((4, 2), ("a", "b")),
    "2x2x2": ((2, 2, 2), ("x", "y", "z")),
}


def _mesh(key):
    shape, names = MESHES[key]
    return jax.make_mesh(shape, names)


def assert_matches_jax(mesh, spec, shape, dtype=np.float32):
    sharding = NamedSharding(mesh, spec)
    lay = layout_from_spec(shape, dtype, mesh, spec)
    expected = sharding.devices_indices_map(shape)
    assert set(lay.device_ids) == {d.id for d in expected}
    for dev, slices in expected.items():
        want = tuple(sl.indices(n)[:2] for sl, n in zip(slices, shape))
        assert lay.index_of(dev.id) == want, (spec, shape, dev)
    assert lay.shard_shape == tuple(sharding.shard_shape(shape))
    per_dev = dict(zip(lay.device_ids, lay.device_bytes().tolist()))
    assert all(
        b == math.prod(sharding.shard_shape(shape)) * np.dtype(dtype).itemsize for b in per_dev.values()
    )
    # replicas: devices with the same index hold the same shard
    groups = {}
    for dev, slices in expected.items():
        groups.setdefault(tuple(sl.indices(n)[:2] for sl, n in zip(slices, shape)), set()).add(dev.id)
    sid = dict(zip(lay.device_ids, lay.shard_ids.tolist()))
    assert lay.num_shards == len(groups)
    for devs in groups.values():
        assert len({sid[d] for d in devs}) == 1
    # the generic path (devices_indices_map) agrees with the arithmetic
    return lay


@st.composite
def mesh_spec_shape(draw):
    key = draw(st.sampled_from(sorted(MESHES)))
    sizes, names = MESHES[key]
    rank = draw(st.integers(0, 4))
    axes = list(names)
    perm = draw(st.permutations(axes))
    used = draw(st.integers(0, len(axes)))
    pool = list(perm[:used])
    entries = [[] for _ in range(rank)]
    if rank:
        for ax in pool:
            entries[draw(st.integers(0, rank - 1))].append(ax)
    spec_items = []
    for e in entries:
        spec_items.append(None if not e else (e[0] if len(e) == 1 and draw(st.booleans()) else tuple(e)))
    size = dict(zip(names, sizes))
    shape = tuple(math.prod(size[a] for a in e) * draw(st.integers(1, 3)) for e in entries)
    trim = draw(st.integers(0, rank))  # JAX pads short specs with None
    while len(spec_items) > trim and spec_items and spec_items[-1] is None:
        spec_items.pop()
    return key, P(*spec_items), shape


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mesh_spec_shape())
def test_layout_equals_jax_everywhere(case):
    key, spec, shape = case
    assert_matches_jax(_mesh(key), spec, shape)


@pytest.mark.parametrize(
    "key,spec,shape,num_shards,replication",
    [
        ("8", P(), (16,), 1, 8),  # replicated
        ("8", P("x"), (16,), 8, 1),  # fully sharded
        ("2x4", P("data"), (8, 4), 2, 4),  # partially replicated
        ("2x4", P("data", "model"), (8, 16), 8, 1),
        ("2x4", P(("model", "data")), (16,), 8, 1),  # two axes on one dim, minor-major order matters
        ("2x2x2", P("z", None, "x"), (4, 3, 2, 5), 4, 2),
        ("2x2x2", P(None, ("x", "y", "z")), (1, 8), 8, 1),
    ],
)
def test_named_cases(key, spec, shape, num_shards, replication):
    lay = assert_matches_jax(_mesh(key), spec, shape)
    assert (lay.num_shards, lay.replication) == (num_shards, replication)


def test_other_sharding_kinds_come_from_jax():
    dev = jax.devices()[3]
    lay = layout_from_sharding(jax.sharding.SingleDeviceSharding(dev), (4, 6), np.float32)
    assert lay.device_ids == (3,) and lay.index_of(3) == ((0, 4), (0, 6))
    assert lay.spec_text == "device 3" and int(lay.device_bytes()[0]) == 96


def test_simulated_mesh_of_512_devices():
    lay = layout_from_spec((1024, 4096), "bfloat16", {"data": 64, "model": 8}, P("data", "model"))
    assert lay.mesh.size == 512 and lay.shard_shape == (16, 512)
    assert set(lay.device_bytes().tolist()) == {16 * 512 * 2}
    am = jax.sharding.AbstractMesh((64, 8), ("data", "model"))
    assert layout_from_spec((1024, 4096), "bfloat16", am, P("data", "model")).index_of(9) == (
        (16, 32),
        (512, 1024),
    )


@pytest.mark.parametrize(
    "spec,shape,message",
    [
        (P("nope"), (8,), "unknown mesh axis 'nope'; the mesh has axes 'data', 'model'"),
        (P("data", "data"), (8, 8), "mesh axis 'data' is used in dimensions 0 and dimension 1"),
        (P(("data", "data")), (8,), "used twice in dimension 0"),
        (P("data", None, None), (8, 8), "spec has 3 entries but the array has rank 2"),
        (P("model"), (6,), "dimension 0 has size 6, not divisible by 4 (model=4)"),
        (P(("data", "model")), (12,), "not divisible by 8 (data=2 × model=4)"),
        (P(P.UNCONSTRAINED), (8,), "UNCONSTRAINED"),
        (P(3), (8,), "is not a mesh axis name"),
    ],
)
def test_invalid_specs_say_why(spec, shape, message):
    with pytest.raises(SpecError) as e:
        layout_from_spec(shape, "float32", {"data": 2, "model": 4}, spec)
    assert message in str(e.value)


@pytest.mark.parametrize(
    "text,expected",
    [
        ("P('data', None)", (("data",), ())),
        ("data, None", (("data",), ())),
        ("(data, model), _", (("data", "model"), ())),
        ("PartitionSpec(('data','model'),)", (("data", "model"),)),
        ("P()", ()),
        ("", ()),
        ("data+model", (("data", "model"),)),
    ],
)
def test_spec_text(text, expected):
    assert parse_spec_text(text) == expected


@pytest.mark.parametrize("text", ["P('data'", "((data), model", "data, 3x"])
def test_spec_text_errors(text):
    with pytest.raises(SpecError):
        parse_spec_text(text)


def test_mesh_info_from_real_mesh_and_bad_meshes():
    info = mesh_info(_mesh("2x4"))
    assert info.axis_names == ("data", "model") and info.device_ids == tuple(range(8))
    assert info.process_indices == (0,) * 8 and info.platform == "cpu" and not info.abstract
    with pytest.raises(ValueError, match="positive"):
        mesh_info({"data": 0})
    with pytest.raises(TypeError, match="expected a jax Mesh"):
        mesh_info([2, 4])


def test_validate_pads_short_specs():
    assert validate_spec(P("data"), {"data": 2}, (4, 3, 2)) == (("data",), (), ())
