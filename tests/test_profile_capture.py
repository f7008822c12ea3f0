"""Capture and report building, without IPython: real JAX, real compiles."""

from __future__ import annotations

import json
import logging
import warnings

import jax
import jax.numpy as jnp
import pytest

from jaxmagic.profile import Profiler, misses
from tests.helpers import global_state


def test_recompiles_are_counted_with_reasons():
    @jax.jit
    def f(x):
        return jnp.sin(x) * 2

    with Profiler() as prof:
        for n in (3, 4, 5):
            f(jnp.ones(n))
        f(jnp.ones(5, jnp.int32))
    r = prof.report()
    fp = r.function("f")
    assert fp.kind == "jit"
    assert len(fp.compiles) == 4
    assert fp.cache_misses == [
        "first compile",
        "x changed from f32[3] to f32[4]",
        "x changed from f32[3] to f32[5]",
        "x changed from f32[3] to i32[5]",
    ]  # JAX compares with its closest key
    assert [c.signature for c in fp.compiles] == ["x: f32[3]", "x: f32[4]", "x: f32[5]", "x: i32[5]"]
    assert all(c.trace_s > 0 and c.lower_s > 0 and c.backend_compile_s > 0 for c in fp.compiles)
    assert r.compile_total_s == pytest.approx(r.trace_s + r.lower_s + r.backend_compile_s)
    assert 0 < r.compile_total_s <= r.wall_s
    assert "recompile" in r.insight_kinds()
    rec = next(i for i in r.insights if i.kind == "recompile")
    assert rec.function == "f" and "4 times" in rec.message


def test_cost_memory_and_jaxpr_are_reported():
    @jax.jit
    def matmul(a, b):
        return a @ b

    with Profiler() as prof:
        matmul(jnp.ones((32, 16)), jnp.ones((16, 8)))
    fp = prof.report().function("matmul")
    assert fp.flops == pytest.approx(2 * 32 * 16 * 8, rel=0.01)
    assert fp.bytes_accessed == pytest.approx(4 * (32 * 16 + 16 * 8 + 32 * 8), rel=0.01)
    assert fp.memory["argument_bytes"] == 4 * (32 * 16 + 16 * 8)
    assert fp.memory["output_bytes"] == 4 * 32 * 8
    assert "dot_general" in fp.jaxpr and "f32[32,8]" in fp.jaxpr
    assert fp.intensity == pytest.approx(fp.flops / fp.bytes_accessed)


def test_donation_shows_as_aliased_memory():
    f = jax.jit(lambda x: x * 2, donate_argnums=0)
    with Profiler() as prof:
        f(jnp.ones(1024))
    fp = prof.report().function("<lambda>")
    assert fp.donated_args == 1
    assert fp.memory["alias_bytes"] == 4096


def test_no_false_alarms_on_an_ordinary_block():
    @jax.jit
    def step(w, x):
        return w - 0.1 * jnp.tanh(w @ x)

    w, x = jnp.ones((8, 8)), jnp.ones((8, 8))
    step(w, x).block_until_ready()  # compiled before: the block is steady state
    with Profiler() as prof:
        for _ in range(50):
            w = step(w, x)
    r = prof.report()
    assert [i.kind for i in r.insights if i.severity == "warn"] == []
    assert r.functions == ()  # nothing compiled
    assert r.wall_s > 0


def test_eager_ops_and_host_syncs_are_detected():
    acc = jnp.zeros(3)
    with Profiler() as prof:
        for i in range(60):
            acc = acc + jnp.ones(3) * i
            float(acc[0])
    r = prof.report()
    kinds = r.insight_kinds()
    assert "eager-ops" in kinds and "host-sync" in kinds
    assert r.eager_ops["add"] >= 60 and r.eager_ops["multiply"] >= 60
    assert max(r.transfers.values()) >= 60
    assert all(f.kind == "eager" for f in r.functions)


def test_x64_truncation_warning_becomes_an_insight():
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        with Profiler() as prof:
            jnp.zeros(3, dtype=jnp.float64)
    assert "x64-truncated" in prof.report().insight_kinds()


def test_tracer_conversion_error_is_explained_and_propagates():
    @jax.jit
    def f(x):
        if x > 0:
            return x
        return -x

    prof = Profiler()
    with pytest.raises(jax.errors.TracerBoolConversionError):
        with prof:
            f(1.0)
    r = prof.report(error="TracerBoolConversionError")
    assert not r.complete
    assert "tracer-conversion" in r.insight_kinds()


def test_state_is_restored_after_normal_exit_exception_and_interrupt():
    before = global_state()
    with Profiler():
        jax.jit(lambda x: x + 1)(jnp.ones(2))
    assert global_state() == before
    with pytest.raises(ValueError):
        with Profiler():
            raise ValueError("boom")
    assert global_state() == before
    with pytest.raises(KeyboardInterrupt):
        with Profiler():
            raise KeyboardInterrupt
    assert global_state() == before


def test_user_enabled_explain_flag_is_kept_and_its_logs_still_flow(caplog):
    jax.config.update("jax_explain_cache_misses", True)
    try:
        with caplog.at_level(logging.WARNING, logger="jax"):
            with Profiler() as prof:
                jax.jit(lambda x: x - 1)(jnp.ones(2))
        assert jax.config.jax_explain_cache_misses is True
        assert any("TRACING CACHE MISS" in m for m in caplog.messages)
        assert prof.report().functions[0].cache_misses == ["first compile"]
    finally:
        jax.config.update("jax_explain_cache_misses", False)


def test_nested_profilers_both_see_inner_work_and_unwind_cleanly():
    before = global_state()
    g = jax.jit(lambda x: x * 3)
    with Profiler() as outer:
        with Profiler() as inner:
            g(jnp.ones(4))
        g(jnp.ones(5))
    assert len(inner.report().function("<lambda>").compiles) == 1
    assert len(outer.report().function("<lambda>").compiles) == 2
    assert global_state() == before
    with pytest.raises(RuntimeError, match="already running"):
        with outer:
            with outer:
                pass
    assert global_state() == before


def test_jit_recreated_in_a_loop_is_named():
    with Profiler() as prof:
        for _ in range(3):
            jax.jit(lambda x: x + 1)(jnp.ones(2))
    assert "jit-recreated" in prof.report().insight_kinds()


def test_report_dict_is_json_and_has_the_documented_shape():
    with Profiler() as prof:
        jax.jit(lambda x: x * 2)(jnp.ones(2))
    d = json.loads(prof.report().to_json())
    assert {"wall_s", "compile_total_s", "backend_compile_s", "functions", "insights"} <= set(d)
    f = d["functions"][0]
    assert {
        "name",
        "compiles",
        "trace_s",
        "lower_s",
        "backend_compile_s",
        "compile_total_s",
        "cache_misses",
        "calls",
        "flops",
        "bytes_accessed",
        "memory",
        "jaxpr",
    } <= set(f)


@pytest.mark.parametrize(
    "message,reason,kind",
    [
        (
            "TRACING CACHE MISS at /c.py:3:1 (<module>):\n  for f defined at /c.py:1\n  all previously seen cache"
            " keys differ. For the closest previous key:\n  different input types:\n  * at x, now f32[]({}){weak_type=False}"
            " and before f32[]({}){weak_type=True}https://docs.jax.dev/x",
            "x changed weak type: f32[] was weakly typed, now strongly typed (a Python scalar vs a jnp value)",
            "weak_type",
        ),
        (
            "TRACING CACHE MISS at /c.py:21:19 (<module>):\n  for <lambda> defined at /c.py:20\n  all previously seen"
            " cache keys differ. For the closest previous key:\n  different input pytree:\n  * at input path [0][1], now"
            " <class 'jax._src.tree_util.Static'> with pytree metadata Static(val=2) and before <class"
            " 'jax._src.tree_util.Static'> with pytree metadata Static(val=1), so the pytree node metadata does not match",
            "static argument [0][1] changed from 1 to 2",
            "static",
        ),
        (
            "TRACING CACHE MISS at /c.py:19:59 (<module>):\n  for f defined at /c.py:17\n  all previously seen cache keys"
            " differ. For the closest previous key:\n  different input pytree:\n  * at input path [0], now tuple of length"
            " 2 and before tuple of length 1, so the lengths do not match",
            "input structure at [0] changed from tuple of length 1 to tuple of length 2 (the lengths do not match)",
            "structure",
        ),
    ],
)
def test_miss_messages_become_plain_words(message, reason, kind):
    m = misses.parse(message)
    assert m.reasons == (reason,) and m.kinds == (kind,)


def test_unrelated_log_messages_are_ignored():
    assert misses.parse("Finished tracing f in 0.1 s") is None


def test_static_argument_recompile_reason_end_to_end():
    g = jax.jit(lambda x, n: x * n, static_argnums=1)
    with Profiler() as prof:
        g(jnp.ones(2), 1)
        g(jnp.ones(2), 2)
    fp = prof.report().function("<lambda>")
    assert fp.compiles[1].kinds == ("static",)
    assert "changed from 1 to 2" in fp.compiles[1].reasons[0]


def test_unusable_donation_is_explained():
    f = jax.jit(lambda x: x.sum(), donate_argnums=0)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        with Profiler() as prof:
            f(jnp.ones(100))
    assert "donation-unusable" in prof.report().insight_kinds()


def test_use_after_donation_is_explained():
    g = jax.jit(lambda x: x * 2, donate_argnums=0)
    prof = Profiler()
    with pytest.raises(RuntimeError, match="deleted"):
        with prof:
            a = jnp.ones(4)
            g(a)
            a + 1
    assert "deleted-array" in prof.report().insight_kinds()


def test_large_captured_constant_is_flagged_and_small_is_not():
    big, small = jnp.ones((512, 1024)), jnp.ones(8)
    with Profiler() as prof:
        jax.jit(lambda x: x + big)(jnp.ones((512, 1024)))
        jax.jit(lambda x: x + small)(jnp.ones(8))
    found = [i for i in prof.report().insights if i.kind == "captured-constant"]
    assert len(found) == 1 and "2.0 MiB" in found[0].message


def test_nnx_jit_functions_are_profiled_like_jax_jit():
    from flax import nnx

    model = nnx.Linear(4, 2, rngs=nnx.Rngs(0))

    @nnx.jit
    def loss(m, x):
        return (m(x) ** 2).mean()

    with Profiler() as prof:
        loss(model, jnp.ones((3, 4)))
        loss(model, jnp.ones((5, 4)))
    fp = prof.report().function("loss")
    assert fp.kind == "jit" and len(fp.compiles) == 2
    assert fp.compiles[1].reasons == ("x changed from f32[3,4] to f32[5,4]",)
    assert fp.flops and fp.flops > 0
