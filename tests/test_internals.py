"""Each private API jaxmagic relies on (all in jaxmagic/_internals.py): it works on the installed
versions, and a change of shape is reported as InternalsChanged naming the versions."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest
from jax.experimental import checkify

from jaxmagic import _internals as internals
from jaxmagic._internals import InternalsChanged


def test_lowering_call_binds_by_name_on_a_real_compile():
    owner, name = internals.lowering_target()
    original = getattr(owner, name)
    seen = []

    def spy(*args, **kwargs):
        seen.append(internals.lowering_call(args, kwargs))
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
    owner, name = internals.lowering_target()
    monkeypatch.setattr(owner, name, lambda jaxpr, *rest: None)
    internals._lowering_signature.cache_clear()
    try:
        with pytest.raises(InternalsChanged, match=r"jax \S+ \(tested with jax 0\.10\.2\)"):
            internals.lowering_target()
    finally:
        monkeypatch.undo()
        internals._lowering_signature.cache_clear()
    internals.lowering_target()  # restored


def test_executable_of_a_compiled_lowering():
    lowered = jax.jit(jnp.sin).lower(jnp.ones(2))
    computation = lowered._lowering  # what the lowering hook sees
    assert internals.executable_of(computation) is None  # not compiled yet
    lowered.compile()
    assert "sine" in internals.executable_of(computation).as_text()


def test_eval_trace_and_array_impl_have_the_expected_shape():
    assert callable(internals.eval_trace().process_primitive)
    cls = internals.array_impl()
    x = jnp.arange(3)
    assert isinstance(x, cls)
    # an array over several devices is assembled on the host once, then cached
    mesh = jax.make_mesh((8,), ("x",))
    fresh = jax.device_put(jnp.arange(8), jax.sharding.NamedSharding(mesh, jax.P("x")))
    assert not internals.host_copy_cached(fresh)
    fresh.tolist()
    assert internals.host_copy_cached(fresh)


def test_array_impl_change_names_the_versions(monkeypatch):
    cls = internals.array_impl()
    monkeypatch.setattr(cls, "_value", None)  # no longer a property
    with pytest.raises(InternalsChanged, match="ArrayImpl._value"):
        internals.array_impl()


def test_cache_miss_loggers_exist_and_missing_modules_are_reported(monkeypatch):
    assert internals.cache_miss_loggers()
    monkeypatch.setattr(internals, "_MISS_LOGGER_MODULES", ("jax._src.no_such_module",))
    with pytest.raises(InternalsChanged, match="no_such_module"):
        internals.cache_miss_loggers()


def test_checkify_errors_lists_every_error_in_order():
    def f(x, i):
        y = jnp.log(x - 1.0) * 0.0  # nan at x == 1 (0 * -inf)
        return y + x[i]

    checked = jax.jit(checkify.checkify(f, errors=checkify.all_checks))
    err, _ = checked(jnp.ones(3), 7)
    found = internals.checkify_errors(err)
    kinds = [type(e).__name__ for _, e in found]
    assert "OOBError" in kinds and "NaNError" in kinds


def test_checkify_change_names_the_versions():
    class NotAnError:
        pass

    with pytest.raises(InternalsChanged, match="checkify.Error"):
        internals.checkify_errors(NotAnError())


def test_subshell_route_is_none_outside_a_kernel():
    assert internals.route_comm_to_subshell(object()) is None


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
