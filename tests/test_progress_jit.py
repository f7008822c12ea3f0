"""Progress inside jitted loops: real ``jit``, ``lax.scan``, ``fori_loop``, ``vmap``, ``grad``
and ``shard_map``. Results are compared with the plain ``lax`` loop bit for bit; the counts
and values a bar shows with the test's own count (NumPy over the same iterations)."""

from __future__ import annotations

import logging
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

import jaxmagic
from jaxmagic.progress import jit as pj
from jaxmagic.progress.state import ProgressReport
from jaxmagic.progress.views import LoopView

P = jaxmagic.progress


class Recorder(LoopView):
    def __init__(self):
        self.done: list[int] = []
        self.reports: list[ProgressReport] = []
        self.starts = 0
        self.finals: list[ProgressReport] = []

    def start(self, run, report):
        self.starts += 1

    def update(self, report):
        self.reports.append(report)
        if not self.done or self.done[-1] != report.done or report.status != "running":
            self.done.append(report.done)

    def finish(self, report):
        self.finals.append(report)

    @property
    def final(self) -> ProgressReport:
        assert len(self.finals) == 1, self.finals
        return self.finals[0]


def _cumsum_step(c, x):
    c = c + x
    P.log(c=c)
    return c, c * 2


def _plain_step(c, x):
    c = c + x
    return c, c * 2


@pytest.mark.parametrize(
    "n,every,reverse", [(1000, None, False), (1000, 300, False), (1000, 300, True), (7, 1, False)]
)
@pytest.mark.slow
def test_scan_matches_lax_scan_and_reports_each_chunk(n, every, reverse):
    xs = jnp.arange(n, dtype=jnp.float32) / 7
    view = Recorder()
    f = jax.jit(
        lambda c: P.scan(_cumsum_step, c, xs, every=every, reverse=reverse, progress=view, max_rate=1e9)
    )
    c, ys = f(jnp.float32(1.0))
    c0, ys0 = lax.scan(_plain_step, jnp.float32(1.0), xs, reverse=reverse)
    assert c == c0 and ys.shape == ys0.shape and bool((ys == ys0).all())
    k = every or pj.default_every(n)
    q, r = divmod(n, k)
    expected = [k * (i + 1) for i in range(q)] + ([n] if r else [])  # the short chunk runs last
    assert view.done == expected and view.starts == 1
    rep = view.final
    assert (rep.status, rep.done, rep.total, rep.every, rep.kind, rep.name) == (
        "completed",
        n,
        n,
        k,
        "scan",
        "_cumsum_step",
    )
    # each point is the mean of the logged value over its chunk (NumPy's count)
    order = np.arange(n)[::-1] if reverse else np.arange(n)
    cs = 1.0 + np.cumsum(np.asarray(xs)[order], dtype=np.float32)
    bounds = [0, *expected]
    means = [cs[a:b].mean() for a, b in zip(bounds, bounds[1:])]
    steps, vals = rep.series["c"]
    assert steps == tuple(expected) and np.allclose(vals, means, rtol=1e-6)


@pytest.mark.slow
def test_pytree_xs_no_xs_and_grad():
    xs = {"a": jnp.ones((250, 2)), "b": jnp.arange(250)}

    def body(c, x):
        return c + x["a"].sum() * x["b"], x["b"] * 2

    view = Recorder()
    out = jax.jit(lambda: P.scan(body, 0.0, xs, every=100, progress=view, max_rate=1e9))()
    ref = lax.scan(body, 0.0, xs)
    assert jax.tree.all(jax.tree.map(lambda a, b: bool((a == b).all()), out, ref))
    assert view.done == [100, 200, 250]

    view = Recorder()
    c, ys = P.scan(lambda c, _: (c * 1.5, None), 1.0, length=12, every=5, progress=view)
    assert (
        ys is None
        and c == lax.scan(lambda c, _: (c * 1.5, None), 1.0, length=12)[0]
        and view.final.done == 12
    )

    def loss(w, fn):
        return fn(lambda c, x: (jnp.sin(c * w + x), None), 0.3, jnp.arange(20.0))[0]

    g = jax.grad(loss)(1.1, lambda *a: P.scan(*a, every=6, progress=None))
    assert g == jax.grad(loss)(1.1, lax.scan)


def test_one_bar_under_jit_of_vmap_of_scan():
    xs = jnp.arange(1000.0)
    view = Recorder()
    f = jax.jit(jax.vmap(lambda c: P.scan(_cumsum_step, c, xs, every=100, progress=view, max_rate=1e9)))
    c, ys = f(jnp.arange(4.0))
    c0, ys0 = jax.vmap(lambda c: lax.scan(_plain_step, c, xs))(jnp.arange(4.0))
    assert bool((c == c0).all()) and bool((ys == ys0).all())
    assert view.starts == 1 and view.done == list(range(100, 1001, 100))  # 10 reports, not 40
    rep = view.final
    assert rep.lanes == 4 and rep.done == 1000
    lanes = np.arange(4.0)[:, None] + np.cumsum(np.asarray(xs))[None]  # each lane's running c
    means = [lanes[:, a : a + 100].mean() for a in range(0, 1000, 100)]
    assert np.allclose(rep.series["c"][1], means, rtol=1e-6)
    # one report site, in the outer loop: no conditional, no select, one host callback
    hlo = jax.jit(jax.vmap(lambda c: P.scan(_cumsum_step, c, xs, every=100, progress=None))).lower(
        jnp.ones(4)
    )
    hlo = hlo.as_text()
    assert _callbacks(hlo) == 1 and hlo.count("stablehlo.while") == 2
    assert "stablehlo.select" not in hlo and "stablehlo.case" not in hlo and "stablehlo.if" not in hlo


def _callbacks(hlo: str) -> int:
    return len(re.findall(r"custom_call @\w*python\w*callback", hlo))


def test_scans_that_do_not_start_at_zero():
    view = Recorder()
    body = lambda c, i: (c + i, None)  # noqa: E731
    c, _ = jax.jit(lambda: P.scan(body, 0, jnp.arange(5000, 10_000), progress=view, max_rate=1e9))()
    assert c == sum(range(5000, 10_000)) and view.done == list(range(50, 5001, 50))
    assert view.final.done == view.final.total == 5000


def test_tick_in_your_own_scan_with_an_offset_under_vmap():
    view = Recorder()

    def body(c, i):
        c = c + 1.0
        P.tick(i, 5000, start=5000, every=1000, progress=view, max_rate=1e9, c=c)
        return c, None

    jax.jit(lambda: lax.scan(body, 0.0, jnp.arange(5000, 10_000)))()
    assert view.done == [1, 1000, 2000, 3000, 4000, 5000] and view.final.series["c"][1] == (
        1,
        1000,
        2000,
        3000,
        4000,
        5000,
    )

    # batched i (each lane starts elsewhere): lane 0 counts, once; the cond stays a cond
    view = Recorder()

    def lane(start):
        def b(c, i):
            P.tick(i, 600, start=start, every=200, progress=view, max_rate=1e9, c=c)
            return c + 1.0, None

        return lax.scan(b, 0.0, start + jnp.arange(600))[0]

    out = jax.jit(jax.vmap(lane))(jnp.array([0, 100, 7]))
    assert bool((out == 600).all()) and view.done == [1, 200, 400, 600] and view.final.lanes == 3
    hlo = jax.jit(jax.vmap(lane)).lower(jnp.array([0, 100, 7])).as_text()
    assert _callbacks(hlo) == 1 and ("stablehlo.case" in hlo or "stablehlo.if" in hlo)

    # an index outside start..start+total-1 is named, not counted
    view = Recorder()

    def wrong(c, i):
        P.tick(i, 100, every=50, progress=view, max_rate=1e9)
        return c, None

    lax.scan(wrong, 0.0, jnp.arange(100, 200))
    assert view.starts == 1 and view.done == [0] and view.finals == []
    assert view.reports[-1].message == "index 199 is outside 0..99: pass tick(i, total, start=<first index>)"


def test_nested_loops_are_rows_of_the_outer_bar():
    view = Recorder()

    def inner(c, x):
        c = c + x
        P.log(c=c)
        return c, None

    def outer(c, _):
        c, _ = P.scan(inner, c, jnp.arange(10.0), every=5, name="inner")
        return c, None

    f = jax.jit(
        lambda c: P.scan(outer, c, None, length=20, every=4, name="outer", progress=view, max_rate=1e9)
    )
    c = f(0.0)[0]
    assert c == 20 * 45.0 and view.starts == 1
    rep = view.final
    assert (rep.name, rep.done, rep.total) == ("outer", 20, 20)
    (child,) = rep.children
    assert (child.name, child.done, child.total, child.passes, child.status) == (
        "inner",
        10,
        10,
        20,
        "completed",
    )
    assert child.last["c"] == np.mean([c - 45 + s for s in np.cumsum(np.arange(10.0))[5:]])
    assert "inner        10 / 10  20" in rep.to_text()


def test_each_call_of_a_cached_jitted_loop_is_a_run_and_tracing_alone_shows_nothing():
    view = Recorder()
    f = jax.jit(lambda c: P.scan(_plain_step, c, jnp.ones(100), every=50, progress=view))
    jax.make_jaxpr(f)(0.0)
    jax.eval_shape(f, 0.0)
    assert view.starts == 0 and view.finals == []
    for _ in range(3):
        f(0.0)[0].block_until_ready()
    assert view.starts == 3 and [r.done for r in view.finals] == [100, 100, 100]
    assert jaxmagic.progress.last().to_dict() == view.finals[-1].to_dict()


def test_fori_loop_static_and_traced_bounds():
    body = lambda i, x: x * 0.999 + i  # noqa: E731
    view = Recorder()
    x = jax.jit(lambda: P.fori_loop(10, 1010, body, 0.0, progress=view, max_rate=1e9))()
    assert x == lax.fori_loop(10, 1010, body, 0.0) and view.final.done == 1000 and view.final.kind == "scan"
    view = Recorder()
    x = jax.jit(lambda n: P.fori_loop(0, n, body, 0.0, every=250, progress=view, max_rate=1e9))(1000)
    assert x == lax.fori_loop(0, 1000, body, 0.0)
    assert (
        view.done == [1, 250, 500, 750, 1000] and view.final.kind == "fori_loop" and view.final.total == 1000
    )


def test_scan_of_length_zero_is_lax_scan_and_reports_nothing():
    before = jaxmagic.progress.last()
    view = Recorder()
    f = lambda c: P.scan(_cumsum_step, c, jnp.zeros((0,)), progress=view)  # noqa: E731
    c, ys = jax.jit(f)(1.0)
    c0, ys0 = lax.scan(_plain_step, 1.0, jnp.zeros((0,)))
    assert c == c0 and ys.shape == ys0.shape == (0,)
    assert "debug_callback" not in str(jax.make_jaxpr(f)(1.0))
    assert view.starts == 0 and jaxmagic.progress.last() is before
    # and a tick whose total is 0 compiles to nothing
    assert "debug_callback" not in str(jax.make_jaxpr(lambda i: P.tick(i, 0))(0))
    assert P.fori_loop(3, 3, lambda i, x: x + 1, 5) == 5


@pytest.mark.parametrize(
    "every,error", [(0, ValueError), (-3, ValueError), (2.5, TypeError), (True, TypeError)]
)
def test_bad_every_is_refused_before_tracing(every, error):
    traced = []

    def body(c, x):
        traced.append(x)
        return c, None

    with pytest.raises(error, match="every must be"):
        P.scan(body, 0.0, jnp.ones(10), every=every)
    with pytest.raises(error, match="every must be"):
        P.tick(0, 10, every=every)
    with pytest.raises(error, match="every must be"):
        P.fori_loop(0, 10, lambda i, x: x, 0.0, every=every)
    assert traced == []


def test_other_bad_input():
    with pytest.raises(RuntimeError, match="inside a jaxmagic.progress.scan/fori_loop body"):
        P.log(loss=1.0)
    with pytest.raises(ValueError, match=r"log\(v=...\) takes a scalar, got shape \(3,\)"):
        P.scan(lambda c, x: (P.log(v=jnp.ones(3)), (c, None))[1], 0.0, jnp.ones(4))
    with pytest.raises(ValueError, match="progress must be"):
        P.scan(_plain_step, 0.0, jnp.ones(4), progress="bar")
    with pytest.raises(ValueError, match="total must be >= 0"):
        P.tick(0, -1)
    with pytest.raises(ValueError, match="scan got values with different leading axis sizes"):
        P.scan(lambda c, x: (c, None), 0.0, (jnp.ones(3), jnp.ones(4)))


def test_a_failing_view_never_fails_the_computation(caplog):
    class Broken(LoopView):
        def update(self, report):
            raise RuntimeError("view bug")

    with caplog.at_level(logging.ERROR, logger="jaxmagic.progress"):
        c, _ = jax.jit(lambda: P.scan(_plain_step, 0.0, jnp.ones(100), every=10, progress=Broken()))()
    assert c == 100.0 and "the view of loop '_plain_step' failed" in caplog.text
    assert caplog.text.count("RuntimeError: view bug") == 1  # reported once; then no more updates


def test_shard_map_runs_one_bar_for_all_devices():
    from jax.sharding import PartitionSpec as Ps

    mesh = jax.make_mesh((8,), ("d",))
    view = Recorder()

    def per_device(x):
        c, _ = P.scan(lambda c, v: (c + v, None), x[0, 0] * 0, x[0], every=25, progress=view, max_rate=1e9)
        return c[None]

    f = jax.jit(jax.shard_map(per_device, mesh=mesh, in_specs=Ps("d"), out_specs=Ps("d")))
    out = f(jax.device_put(jnp.ones((8, 100)), jax.sharding.NamedSharding(mesh, Ps("d"))))
    assert bool((out == 100).all())
    assert view.starts == 1 and view.done == [25, 50, 75, 100] and view.final.done == 100


def test_default_cadence():
    assert pj.default_every(10_000) == 100 and pj.default_every(100) == 1 and pj.default_every(7) == 1
    assert pj.default_every(10_007) == 101  # a prime: ceil(n / 100), the last chunk shorter
    assert 12_000 % pj.default_every(12_000) == 0 and 12_000 // pj.default_every(12_000) == 100


def test_jax_debug_callback_is_the_fallback_when_host_report_is_unavailable(monkeypatch):
    from jaxmagic import _internals

    monkeypatch.setattr(_internals, "_report_primitive_or_none", lambda: None)
    view = Recorder()
    f = jax.jit(
        jax.vmap(lambda c: P.scan(_cumsum_step, c, jnp.arange(300.0), every=100, progress=view, max_rate=1e9))
    )
    c, _ = f(jnp.arange(2.0))
    assert "debug_callback" in str(jax.make_jaxpr(f)(jnp.arange(2.0)))
    assert view.done == [100, 200, 300] and view.final.lanes == 2
    assert np.isclose(
        view.final.last["c"], np.mean(np.arange(2.0)[:, None] + np.cumsum(np.arange(300.0))[None, 200:])
    )


def test_a_run_that_never_sent_its_last_report_is_closed_by_the_next_one():
    view = Recorder()

    def body(c, i):
        P.tick(i, 100, every=10, progress=view, max_rate=1e9)
        return c, None

    f = jax.jit(lambda n: lax.fori_loop(0, n, lambda i, c: body(c, i)[0], 0.0))
    f(35)  # the loop body thinks 100 iterations, the loop stops after 35: no last report
    assert view.finals == [] and view.done[-1] == 30
    f(100)
    first, second = view.finals
    assert (first.status, first.done, first.message) == (
        "stopped",
        30,
        "ended without its last report, after 30 steps",
    )
    assert (second.status, second.done) == ("completed", 100) and view.starts == 2
