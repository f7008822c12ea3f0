"""Each private API jaxmagic relies on (all in jaxmagic/_internals.py): it works on the installed
versions, and a change of shape is reported as InternalsChanged naming the versions."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest
from jax.experimental import checkify

from jaxmagic import _internals
from jaxmagic._internals import InternalsChanged


def test_lowering_call_binds_by_name_on_a_real_compile():
    owner, name = _internals.lowering_target()
    original = getattr(owner, name)
    seen = []

    def spy(*args, **kwargs):
        seen.append(_internals.lowering_call(args, kwargs))
        return original(*args, **kwargs)

    a, b = jnp.ones(3), jnp.ones(3)
    setattr(owner, name, spy)
    try:
        jax.jit(lambda v, w: v * w, donate_argnums=1)(a, b)
    finally:
        setattr(owner, name, original)
    [call] = [c for c in seen if c.fun_name == "<lambda>"]
    assert call.donated_invars == (False, True)
    assert [a.shape for a in call.closed_jaxpr.in_avals] == [(3,), (3,)]


def test_lowering_signature_change_names_the_versions(monkeypatch):
    owner, name = _internals.lowering_target()
    monkeypatch.setattr(owner, name, lambda jaxpr, *rest: None)
    _internals._lowering_signature.cache_clear()
    try:
        with pytest.raises(InternalsChanged, match=r"jax \S+ \(tested with jax 0\.10\.2\)"):
            _internals.lowering_target()
    finally:
        monkeypatch.undo()
        _internals._lowering_signature.cache_clear()
    _internals.lowering_target()  # restored


def test_executable_of_a_compiled_lowering():
    lowered = jax.jit(jnp.sin).lower(jnp.ones(2))
    computation = _internals.lowering_of(lowered)  # what the lowering hook sees
    assert _internals.executable_of(computation) is None  # not compiled yet
    lowered.compile()
    assert "sine" in _internals.executable_of(computation).as_text()


def test_eval_trace_and_array_impl_have_the_expected_shape():
    assert callable(_internals.eval_trace().process_primitive)
    cls = _internals.array_impl()
    x = jnp.arange(3)
    assert isinstance(x, cls)
    # an array over several devices is assembled on the host once, then cached
    mesh = jax.make_mesh((8,), ("x",))
    fresh = jax.device_put(jnp.arange(8), jax.sharding.NamedSharding(mesh, jax.P("x")))
    assert not _internals.host_copy_cached(fresh)
    fresh.tolist()
    assert _internals.host_copy_cached(fresh)


def test_array_impl_change_names_the_versions(monkeypatch):
    cls = _internals.array_impl()
    monkeypatch.setattr(cls, _internals.HOST_COPY_ATTR, None)  # no longer a property
    with pytest.raises(InternalsChanged, match="ArrayImpl._value"):
        _internals.array_impl()


def test_cache_miss_loggers_exist_and_missing_modules_are_reported(monkeypatch):
    assert _internals.cache_miss_loggers()
    monkeypatch.setattr(_internals, "_MISS_LOGGER_MODULES", ("jax._src.no_such_module",))
    with pytest.raises(InternalsChanged, match="no_such_module"):
        _internals.cache_miss_loggers()


def test_checkify_change_names_the_versions():
    class NotAnError:
        pass

    with pytest.raises(InternalsChanged, match="checkify.Error"):
        _internals.checkify_errors(NotAnError())


def test_subshell_route_is_none_outside_a_kernel():
    assert _internals.route_comm_to_subshell(object()) is None


def test_transparent_slots_hold_the_wrapped_values():
    import jax
    from flax import nnx

    from jaxmagic._internals import transparent_slots

    found = transparent_slots()
    param = nnx.Param(jax.numpy.ones(3))
    slot = next(s for cls, s in found.items() if isinstance(param, cls))
    assert type(param).__mro__[1].__dict__[slot].__get__(param) is param.get_raw_value()
    key = jax.random.key(0)
    slot = next(s for cls, s in found.items() if isinstance(key, cls))
    assert vars(key)[slot] is jax.random.key_data(key)
    state = nnx.state(nnx.Linear(2, 2, rngs=nnx.Rngs(0)))
    slot = next(s for cls, s in found.items() if isinstance(state, cls))
    assert set(vars(state)[slot]) == {"kernel", "bias"}


# -- %jaxcheck's hooks: checkify's error tables, equation tracebacks, nested jaxprs, op-by-op --


def _floor_div(a, b):
    return a // b


def test_checkify_errors_lists_every_error_in_order():
    def f(x, i):
        return x[i] + jnp.log(x - 2.0).sum() / (i - 10)

    error, _ = jax.jit(checkify.checkify(f, errors=checkify.all_checks))(jnp.arange(3.0), 10)
    found = _internals.checkify_errors(error)
    assert [type(e).__name__ for _, e in found] == ["OOBError", "NaNError", "DivisionByZeroError"]
    assert [c for c, _ in found] == sorted(c for c, _ in found)


def test_checkify_errors_names_the_version_when_the_tables_are_gone():
    with pytest.raises(InternalsChanged, match=r"jax \S+ \(tested with jax 0\.10\.2\)"):
        _internals.checkify_errors(object())


def test_report_degrades_to_the_first_error_with_a_note():
    from jaxmagic.check import _exceptions

    class OnlyPublic:  # an Error whose private tables changed: only the public API is left
        def get_exception(self):
            return ValueError("first")

    found, note = _exceptions(OnlyPublic())
    assert [str(e) for e in found] == ["first"]
    assert note.startswith("only the first error is listed: checkify.Error._pred")


def test_equation_tracebacks_and_nested_jaxprs():
    closed = jax.jit(_floor_div).trace(jnp.array([4, 5]), jnp.array([2, 1])).jaxpr
    call = closed.jaxpr.eqns[0]  # jnp's floor_divide is itself jitted
    body = _internals.call_body(call)
    assert body is not None and _internals.sub_jaxprs(call)[0] is body.jaxpr
    frames = _internals.traceback_frames(_internals.equation_traceback(call))
    assert any(f == __file__ and fn.endswith("_floor_div") for f, _, fn in frames)
    inner = body.jaxpr.eqns[0]
    inner_frames = _internals.traceback_frames(_internals.equation_traceback(inner))
    assert inner_frames and all(f != __file__ for f, _, _ in inner_frames)  # stops at the jit
    assert _internals.traceback_frames(None) == []


def test_eval_equation_runs_one_equation_eagerly():
    closed = jax.jit(lambda x: jnp.sin(x) * 2).trace(jnp.ones(2)).jaxpr
    sin = closed.jaxpr.eqns[0]
    assert sin.primitive.name == "sin"
    (out,) = _internals.eval_equation(sin, [jnp.zeros(2)])
    assert jnp.array_equal(out, jnp.zeros(2))
    call = jax.jit(_floor_div).trace(jnp.array([7]), jnp.array([2])).jaxpr.jaxpr.eqns[0]
    assert _internals.eval_equation(call, [jnp.array([7]), jnp.array([2])])[0].tolist() == [3]


# -- the other hooks, each with its shape changed ------------------------------------------

VERSIONS = r"\S+ \S+ \(tested with \S+ [\d.]+\)"


def test_monitoring_listeners_change_names_the_version(monkeypatch):
    durations, events = _internals.monitoring_listeners()
    assert isinstance(durations, tuple) and isinstance(events, tuple)
    from jax._src import monitoring

    monkeypatch.delattr(monitoring, "_event_listeners")
    with pytest.raises(
        InternalsChanged, match="monitoring._event_duration_secs_listeners/_event_listeners.*" + VERSIONS
    ):
        _internals.monitoring_listeners()


def test_transparent_slot_change_names_the_library_and_the_owner_report_keeps_a_note(monkeypatch):
    from flax import nnx

    import jaxmagic

    changed = (("flax.nnx.variablelib", "Variable", "_no_such_slot", True),)
    monkeypatch.setattr(_internals, "_TRANSPARENT", changed)
    with pytest.raises(
        InternalsChanged,
        match=r"flax.nnx.variablelib.Variable._no_such_slot.*flax " + r"\S+ \(tested with flax 0\.12\.8\)",
    ):
        _internals.transparent_slots()
    model = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
    report = jaxmagic.memory(namespace={"model": model})
    assert sum("_no_such_slot" in n for n in report.notes) == 1  # degraded with one note
    # still found and owned by the model (the path only shows the wrapper's slot now)
    [kernel] = [a for a in report.arrays if a.root == "model" and a.type_str == "f32[2,3]"]
    assert kernel.owner.startswith("model.kernel")


def test_traceback_and_equation_changes_name_the_version():
    class NoFrames:
        pass

    class NoSourceInfo:
        pass

    with pytest.raises(InternalsChanged, match="Traceback.frames.*" + VERSIONS):
        _internals.traceback_frames(NoFrames())
    with pytest.raises(InternalsChanged, match="JaxprEqn.source_info.traceback.*" + VERSIONS):
        _internals.equation_traceback(NoSourceInfo())


def test_eval_equation_change_names_the_version(monkeypatch):
    closed = jax.jit(lambda x: jnp.sin(x)).trace(jnp.ones(2)).jaxpr
    sin = closed.jaxpr.eqns[0]
    monkeypatch.delattr(type(sin.primitive), "get_bind_params")
    with pytest.raises(InternalsChanged, match="Primitive.get_bind_params.*" + VERSIONS):
        _internals.eval_equation(sin, [jnp.zeros(2)])


def test_lowering_of_a_lowered_and_its_change():
    lowered = jax.jit(jnp.cos).lower(jnp.ones(2))
    assert _internals.executable_of(_internals.lowering_of(lowered)) is None
    with pytest.raises(InternalsChanged, match="Lowered._lowering.*" + VERSIONS):
        _internals.lowering_of(object())


def test_subshell_api_change_names_ipykernels_version_and_the_widget_warns(monkeypatch):
    from ipykernel.kernelbase import Kernel

    class Manager:  # a subshell manager without the private methods jaxmagic calls
        pass

    class Channel:
        manager = Manager()

    class FakeKernel:
        shell_channel_thread = Channel()

    monkeypatch.setattr(Kernel, "initialized", classmethod(lambda cls: True))
    monkeypatch.setattr(Kernel, "instance", classmethod(lambda cls, *a, **k: FakeKernel()))
    with pytest.raises(
        InternalsChanged, match="subshell API.*ipykernel " + r"\S+ \(tested with ipykernel 7\.4\.0\)"
    ):
        _internals.route_comm_to_subshell(object())
    assert _internals.route_comm_to_subshell(None) is None  # no comm: nothing to route

    class OldKernel:  # ipykernel < 7 has no shell channel thread
        pass

    monkeypatch.setattr(Kernel, "instance", classmethod(lambda cls, *a, **k: OldKernel()))
    assert _internals.route_comm_to_subshell(object()) is None


def test_host_report_hands_numpy_to_the_host_under_jit_vmap_grad_and_eagerly():
    import numpy as np

    seen = []

    def f(x):
        assert _internals.host_report(lambda a: seen.append(a), x * 2)  # supported here
        return x

    jax.jit(f)(jnp.arange(3.0))
    assert len(seen) == 1 and type(seen[0]) is np.ndarray and seen[0].tolist() == [0.0, 2.0, 4.0]
    jax.jit(jax.vmap(f))(jnp.arange(6.0).reshape(2, 3))  # batched: one call per lane
    assert [a.tolist() for a in seen[1:]] == [[0.0, 2.0, 4.0], [6.0, 8.0, 10.0]]
    del seen[:]
    jax.grad(lambda x: jnp.sum(f(x) ** 2))(jnp.ones(2))  # once, in the forward pass
    with jax.disable_jit():
        f(jnp.ones(2))
    assert [a.tolist() for a in seen] == [[2.0, 2.0], [2.0, 2.0]]
    assert "jaxmagic_report" in str(jax.make_jaxpr(f)(jnp.ones(1)))


def test_host_report_declines_where_unsupported(monkeypatch):
    monkeypatch.setattr(_internals, "_report_primitive_or_none", lambda: None)  # jax internals changed
    assert _internals.host_report(print, jnp.ones(1)) is False
