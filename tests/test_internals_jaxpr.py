"""The private JAX hooks %jaxcheck reads through ``jaxmagic._internals`` (checkify's error
tables, equation tracebacks, nested jaxprs, op-by-op evaluation) still have the shape jaxmagic
expects on the installed JAX, and %jaxcheck degrades with a note when one does not."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest
from jax.experimental import checkify

from jaxmagic import _internals
from jaxmagic._internals import InternalsChanged


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
