"""Each private JAX hook of the profiler, with the private thing changed shape: the report
still builds, names the version in one note and shows the part as unknown, never as 0.

The JAX internals are changed by monkeypatching (restored after each test): these tests
check jaxmagic's guard, not JAX."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from jaxmagic import _internals
from jaxmagic.profile import Profiler

VERSION = f"jax {jax.__version__}"


def notes_naming(report, part: str) -> list[str]:
    return [n for n in report.notes if n.startswith(part) and VERSION in n]


def test_changed_lowering_signature_turns_off_jaxprs_and_cost_only(monkeypatch):
    module, name = _internals.lowering_target()
    original = getattr(module, name)

    def lower_sharding_computation(*args, **kwargs):  # the parameters got other names
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, lower_sharding_computation)
    _internals._lowering_signature.cache_clear()  # inspect the changed function
    try:
        f = jax.jit(lambda x: x * 2)
        with Profiler() as prof:
            f(jnp.ones(3))
            f(jnp.ones(4))
        r = prof.report()
    finally:
        _internals._lowering_signature.cache_clear()
    fp = r.function("<lambda>")
    assert len(fp.compiles) == 2  # compiles are still counted (public monitoring events)
    assert fp.flops is None and fp.jaxpr is None and fp.memory is None
    assert "cost, memory and jaxprs" in r.unavailable
    assert len(notes_naming(r, "cost, memory and jaxprs")) == 1
    assert "n/a" in r.to_text() and VERSION in r.to_text() and VERSION in r.to_html()


def test_changed_eager_dispatch_shows_eager_ops_as_unknown(monkeypatch):
    trace = _internals.eval_trace()
    original = trace.process_primitive

    def process_primitive(self, *args):  # one positional parameter fewer than expected
        return original(self, *args)

    monkeypatch.setattr(trace, "process_primitive", process_primitive)
    acc = jnp.zeros(3)
    with Profiler() as prof:
        for i in range(150):
            acc = acc + i
    r = prof.report()
    assert "eager ops" in r.unavailable and len(notes_naming(r, "eager ops")) == 1
    assert "eager-ops" not in r.insight_kinds()  # not measured: no finding, no false 0
    assert "eager ops <b>n/a</b>" in r.to_html()
    assert "eager ops <b>0</b>" not in r.to_html()


class _Descriptor:
    """``ArrayImpl._value`` as another kind of descriptor (works, but is not a property)."""

    def __init__(self, prop):
        self.prop = prop

    def __get__(self, obj, cls=None):
        return self.prop.__get__(obj, cls)


def test_changed_array_class_shows_transfers_as_unknown(monkeypatch):
    array = _internals.array_impl()
    monkeypatch.setattr(array, _internals.HOST_COPY_ATTR, _Descriptor(_internals.host_copy_descriptor()))
    step = jax.jit(lambda x: x + 1)
    x = step(jnp.ones(3))
    with Profiler() as prof:
        for _ in range(30):
            x = step(x)
            float(x[0])
    r = prof.report()
    assert {"host transfers", "eager ops"} <= set(r.unavailable)
    assert "host-sync" not in r.insight_kinds() and r.transfers == {}
    assert len(notes_naming(r, "host transfers")) == 1
    assert "Device→host transfers" not in r.to_text()


def test_changed_miss_loggers_show_no_recompile_verdict(monkeypatch):
    monkeypatch.setattr(_internals, "_MISS_LOGGER_MODULES", ("jax._src.no_such_module",))
    f = jax.jit(lambda x: x - 1)
    with Profiler() as prof:
        for n in (2, 3, 4):
            f(jnp.ones(n))
    r = prof.report()
    fp = r.function("<lambda>")
    assert len(fp.compiles) == 3 and fp.cache_misses == []
    assert "cache-miss reasons" in r.unavailable and len(notes_naming(r, "cache-miss reasons")) == 1
    assert "recompile" not in r.insight_kinds()
    assert not jax.config.jax_explain_cache_misses


def test_executable_accessor_names_the_version_when_the_attribute_is_gone():
    with pytest.raises(_internals.InternalsChanged, match=VERSION):
        _internals.executable_of(object())


def test_changed_executable_turns_off_cost_with_a_note(monkeypatch):
    def executable_of(computation):
        raise _internals.changed("jax", "the lowered computation's _executable")

    monkeypatch.setattr(_internals, "executable_of", executable_of)
    with Profiler() as prof:
        jax.jit(lambda a, b: a @ b)(jnp.ones((4, 4)), jnp.ones((4, 4)))
    r = prof.report()
    fp = r.function("<lambda>")
    assert fp.flops is None and fp.memory is None and fp.jaxpr  # jaxpr does not need it
    assert len([n for n in r.notes if n.startswith("cost and memory") and VERSION in n]) == 1


def test_changed_nnx_jit_frame_keeps_jaxs_paths_and_says_so(monkeypatch):
    def nnx_jit_arguments():
        raise _internals.changed("flax", "nnx.jit's JitWrapped.__call__(self, *args, **kwargs)")

    monkeypatch.setattr(_internals, "nnx_jit_arguments", nnx_jit_arguments)
    model = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
    with Profiler() as prof:
        nnx.jit(lambda m, x: m(x))(model, jnp.ones((1, 2)))
    r = prof.report()
    sig = r.function("<lambda>").compiles[0].signature
    assert "m.states[0][0]" in sig  # JAX's own path: not a guessed name
    import flax

    assert [n for n in r.notes if f"flax {flax.__version__}" in n]


def test_nnx_jit_arguments_are_read_inside_an_nnx_jit_call_only():
    model = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
    seen = []

    @nnx.jit
    def forward(m, x, scale=2.0):
        seen.append(_internals.nnx_jit_arguments())  # runs while nnx.jit traces
        return m(x) * scale

    forward(model, jnp.ones((1, 2)))
    assert _internals.nnx_jit_arguments() is None
    (args,) = seen
    assert list(args) == ["m", "x"] and args["m"] is model


def test_watch_host_copies_sees_each_first_copy_and_its_undo_restores():
    before = _internals.host_copy_descriptor()
    assert isinstance(before, property)
    copies = []
    undo = _internals.watch_host_copies(copies.append)
    try:
        assert _internals.host_copy_descriptor() is not before  # wrapped while watching
        x = jnp.arange(3.0) + 1
        y = x * 2
        float(x[1]), y.tolist()
    finally:
        undo()
    float(x[2])  # after the undo: not seen
    assert _internals.host_copy_descriptor() is before
    assert [c.shape for c in copies] == [(), (3,)] and copies[1] is y
