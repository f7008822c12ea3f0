"""The widgets' Python side, fed like the browser feeds it (no browser): the values they send are
computed by jaxmagic (layouts as JAX places shards, strings as ``jaxmagic._format`` writes them),
so the JavaScript only draws. Also: one stylesheet for reports and widgets, with no dead rules."""

from __future__ import annotations

import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxmagic._format import fmt_bytes, fmt_count, fmt_seconds
from jaxmagic.render import html as H
from jaxmagic.render.sharding import device_ranges
from jaxmagic.render.training import _series, fmt_metric, svg_chart
from jaxmagic.shardings.report import sharding
from jaxmagic.widgets.progress import TrainingProgressWidget, WidgetProgress
from jaxmagic.widgets.sharding import ShardingExplorer

PKG = pathlib.Path(H.__file__).parents[1]


@pytest.fixture(scope="module")
def mesh():
    return jax.make_mesh((2, 4), ("data", "model"))


def _rng(s: slice, n: int) -> str:
    a, b, _ = s.indices(n)
    return f"[{a}:{b}]"


def _jax_grid(sharding_, shape, rdim, cdim, facet=None):
    """{(row range, col range): device ids} as JAX's devices_indices_map places the shards."""
    out: dict[tuple[str, str], list[int]] = {}
    for dev, idx in sharding_.devices_indices_map(shape).items():
        if facet and any(_rng(idx[d], shape[d]) != r for d, r in facet.items()):
            continue
        key = (_rng(idx[rdim], shape[rdim]) if rdim is not None else "", _rng(idx[cdim], shape[cdim]))
        out.setdefault(key, []).append(dev.id)
    return {k: sorted(v) for k, v in out.items()}


def _view_grid(view):
    g = view["grid"]
    return {
        (row["head"], head): sorted(cell["devices"])
        for row in g["rows"]
        for head, cell in zip(g["col_heads"], row["cells"])
        if cell["devices"]
    }


def test_spec_edit_from_the_browser_sends_the_layout_jax_implies(mesh):
    x = jax.device_put(jnp.zeros((8, 16)), NamedSharding(mesh, P("data")))
    w = sharding({"x": x, "b": jnp.zeros(3)}).explore()
    assert w.view["name"] == "x" and w.dims == [0, 1]
    assert _view_grid(w.view) == _jax_grid(x.sharding, x.shape, 0, 1)

    w.spec_request = {"name": "x", "entries": ["model", "data"], "n": 1}  # the editor's texts
    assert w.error == "" and w.view["spec_text"] == "P('model', 'data')"
    target = NamedSharding(mesh, P("model", "data"))
    assert _view_grid(w.view) == _jax_grid(target, x.shape, 0, 1)
    cells = [c for row in w.view["grid"]["rows"] for c in row["cells"]]
    assert all(c["label"] == device_ranges(c["devices"]) for c in cells)
    assert {c["bytes"] for c in cells} == {fmt_bytes(2 * 8 * 4)}

    # per-device bytes and the table, in _format's words, match what the shards would hold
    shard_bytes = {
        d.id: 4 * int(np.prod([len(range(*s.indices(n))) for s, n in zip(idx, x.shape)]))
        for d, idx in target.devices_indices_map(x.shape).items()
    }
    bias = {0: 12}  # the replicated-on-one-device bias of shape (3,)
    assert {r["device"]: r["bytes"] for r in w.data["devices"]} == {
        d: fmt_bytes(b + bias.get(d, 0)) for d, b in shard_bytes.items()
    }
    row = next(a for a in w.data["arrays"] if a["name"] == "x")
    assert (row["label"], row["per_device"], row["shard"]) == (
        "x *",
        fmt_bytes(max(shard_bytes.values())),
        "f32[2,8]",
    )
    w.pinned = 5  # device 5 holds a block of x and nothing of the bias
    holds = {a["name"]: h for a, h in zip(w.data["arrays"], w.view["holds"])}
    assert holds["b"] == {"text": "—", "held": False} and holds["x"]["held"]


def test_bad_spec_keeps_the_layout_and_what_was_typed(mesh):
    x = jax.device_put(jnp.zeros((8, 16)), NamedSharding(mesh, P("data", "model")))
    w = ShardingExplorer(sharding(x, name="x"))
    data, grid = w.data_json, w.view["grid"]
    w.spec_request = {"name": "x", "entries": ["model", "model"], "n": 1}
    assert "mesh axis 'model' is used in dimensions 0 and dimension 1" in w.error
    assert (
        w.data_json == data and w.view["grid"] == grid and w.report.arrays[0].spec == (("data",), ("model",))
    )
    assert w.view["spec_inputs"] == ["model", "model"]  # the draft survives the redraw
    w.spec_request = {"name": "x", "entries": ["data, model", ""], "n": 2}
    assert w.error == "" and w.view["spec_inputs"] == ["data,model", ""]
    assert w.view["spec_text"] == "P(('data', 'model'), None)"


def test_dims_facets_and_pinning_are_computed_in_python(mesh):
    sh = NamedSharding(mesh, P("data", None, "model"))
    x = jax.device_put(jnp.zeros((4, 6, 8)), sh)
    w = ShardingExplorer(sharding(x, name="x"))
    assert w.dims == [0, 2] and w.view["facets"] == [
        {"dim": 1, "index": 0, "count": 1, "label": " dim 1 [0:6] (1/1)"}
    ]
    w.dims = [2, 2]  # the row picker chose the column's dimension: the two swap
    assert w.dims == [2, 0] and _view_grid(w.view) == _jax_grid(sh, x.shape, 2, 0)
    w.dims = [0, 1]  # dim 2 (split 4 ways) becomes a facet: one slider with four positions
    assert [(f["dim"], f["count"]) for f in w.view["facets"]] == [(2, 4)]
    w.facet = [2]
    assert w.view["facets"][0]["label"] == " dim 2 [4:6] (3/4)"
    assert _view_grid(w.view) == _jax_grid(sh, x.shape, 0, 1, facet={2: "[4:6]"})
    w.dims = [7, 0]  # out of range: back to the default
    assert w.dims == [0, 2]

    w.pinned = 5
    idx = sh.devices_indices_map(x.shape)[next(d for d in jax.devices() if d.id == 5)]
    expected = (
        "[" + ", ".join(_rng(s, n)[1:-1] for s, n in zip(idx, x.shape)) + "] " + fmt_bytes(2 * 6 * 2 * 4)
    )
    assert w.view["holds_head"] == "device 5 holds" and w.view["holds"] == [{"text": expected, "held": True}]
    w.pinned = -1
    assert w.view["holds"] == [] and w.view["holds_head"] == ""
    with pytest.raises(Exception, match="selected must be in 0..0"):
        w.selected = 3


@pytest.mark.slow
def test_explorer_build_stays_small(mesh):
    tree = {
        f"l{i}": jax.ShapeDtypeStruct((64, 32), jnp.float32, sharding=NamedSharding(mesh, P("data", None)))
        for i in range(2000)
    }
    w = sharding(tree).explore()
    # the old payload carried per-device starts/stops of every array (~1.2 MB here)
    assert len(w.data_json) < 500_000 and len(w.view_json) < 10_000
    assert len(w.data["arrays"]) == 2000


@pytest.mark.slow
def test_progress_widget_sends_formatted_values_and_stop_reaches_the_trainer():
    import optax
    from flax import nnx

    from jaxmagic.train import Callback, Trainer
    from tests.helpers import TinyMLP, dataset, loss_fn, one_device

    views: list[dict] = []

    class Recorded(WidgetProgress):
        def on_train_begin(self, trainer, info):
            super().on_train_begin(trainer, info)
            self.widget.observe(lambda c: views.append(c["new"]), names="view")

    X, y = dataset()
    trainer = Trainer(TinyMLP(rngs=nnx.Rngs(0)), optax.adam(1e-2), loss_fn, devices=one_device())
    progress = Recorded(max_rate=1e6)
    h = trainer.fit(
        (X, y),
        steps=24,
        batch_size=16,
        eval_data=(X[:32], y[:32]),
        eval_every=8,
        steps_per_call=4,
        progress=progress,
    )
    v = views[-1]
    p = trainer.progress
    assert isinstance(progress.widget, TrainingProgressWidget)
    assert (v["status"], v["status_kind"], v["running"]) == ("completed", "ok", False)
    assert (v["percent"], v["aria"]) == ("100.0%", "100") and v["label"].startswith("step 24 / 24 · epoch ")
    stats = dict(v["stats"])
    assert stats["steps/s"] == fmt_count(p.steps_per_second) and stats["examples/s"] == fmt_count(
        p.examples_per_second
    )
    assert stats["compile"] == fmt_seconds(p.compile_seconds) and stats["ETA"] == "—"
    assert stats["loss"] == fmt_metric(p.last["loss"])
    assert v["chart"] == svg_chart(_series(h), x_max=24) and 'class="jm-series jm-series-loss"' in v["chart"]
    assert v["table"]["headers"][:3] == ["epoch", "step", "loss"]
    assert v["table"]["rows"][-1] == [fmt_metric(h.epochs[-1].get(k)) for k in v["table"]["headers"]]

    class PressStop(Callback):  # what a click on Stop does: the browser sets the trait
        def on_steps(self, trainer, steps, logs):
            stopper.widget.stop_requested = True

    stopper = WidgetProgress()
    trainer2 = Trainer(TinyMLP(rngs=nnx.Rngs(1)), optax.adam(1e-2), loss_fn, devices=one_device())
    h2 = trainer2.fit(
        (X, y), steps=10_000, batch_size=16, steps_per_call=4, progress=stopper, callbacks=[PressStop()]
    )
    assert h2.status == "stopped" and "stopped from the widget" in h2.message and trainer2.step < 10_000


def _css_classes(css: str) -> set[str]:
    css = re.sub(r"/\*.*?\*/", "", css, flags=re.S)
    css = re.sub(r"\{[^}]*\}", "{}", css)  # drop declarations (colours such as #2f6fdc)
    return set(re.findall(r"\.(jm[\w-]*|hl-[\w-]+)", css)) - {"jm"}


def test_one_stylesheet_for_reports_and_widgets_and_every_rule_is_used():
    sheet = H.CSS_PATH.read_text()
    assert str(ShardingExplorer._css) == str(TrainingProgressWidget._css) == sheet
    assert H.CSS in H.document("x")
    sources = "\n".join(p.read_text() for p in PKG.rglob("*") if p.suffix in (".py", ".js"))
    dynamic = {"jm-ok", "jm-warn", "jm-bad", "jm-info"}  # html.badge(kind) and progress.js's status_kind
    unused = {c for c in _css_classes(sheet) - dynamic if c not in sources}
    assert unused == set()
    scripts = [p.read_text() for p in PKG.rglob("*.js")]
    assert len(scripts) == 2 and not any('createElement("style")' in js or "<style" in js for js in scripts)


def test_loop_widget_sends_formatted_values_and_stop_ends_the_python_loop():
    import jaxmagic
    from jaxmagic.progress.state import ProgressReport
    from jaxmagic.render.loops import loop_stats
    from jaxmagic.widgets.loops import LoopWidgetView

    views: list[dict] = []

    class Recorded(LoopWidgetView):
        def start(self, run, report):
            super().start(run, report)
            views.append(self.widget.view)
            self.widget.observe(lambda c: views.append(c["new"]), names="view")

    view = Recorded()
    bar = jaxmagic.track(range(50), name="descent", progress=view, max_rate=1e9)
    losses = []
    for i in bar:
        losses.append(1.0 / (i + 1))
        bar.log(loss=jnp.float32(losses[-1]))
        if i == 19:
            view.widget.stop_requested = True  # what a click on Stop does: the browser sets the trait
    r: ProgressReport = bar.report()
    assert (r.status, r.done, r.message) == ("stopped", 20, "stopped from the widget at step 20")
    first, live, last = views[0], views[-2], views[-1]
    assert (first["title"], first["label"], first["stoppable"], first["percent"]) == (
        "descent",
        "step 0 / 50",
        True,
        "0.0%",
    )
    assert live["status"] == "running" and live["running"] is True
    assert (last["status"], last["status_kind"], last["running"]) == ("stopped", "warn", False)
    assert (last["label"], last["percent"], last["aria"]) == ("step 20 / 50", "40.0%", "40")
    assert last["stats"] == [list(s) for s in loop_stats(r)] and dict(last["stats"])["loss"] == fmt_metric(
        float(np.float32(losses[-1]))
    )
    assert last["chart"] == svg_chart(
        [{"name": "loss", "x": list(range(1, 21)), "y": r.series["loss"][1]}],
        x_max=50,
        title="descent values",
    )
    assert last["table"] == {"headers": [], "rows": []} and last["message"] == r.message

    # a jitted loop: no Stop button; nested loops are the table's rows
    from jaxmagic import progress as P

    view = Recorded()

    def outer(c, _):
        return P.scan(lambda c, x: (c + x, None), c, jnp.ones(6), every=3, name="inner")[0], None

    jax.jit(lambda: P.scan(outer, 0.0, None, length=8, every=2, name="outer", progress=view, max_rate=1e9))()
    last = views[-1]
    assert (last["title"], last["stoppable"], last["label"]) == ("scan outer", False, "step 8 / 8")
    assert last["table"] == {
        "headers": ["nested loop", "step", "passes", "last values"],
        "rows": [["inner", "6 / 6", "8", "—"]],
    }
    assert dict(last["stats"])["reported every"] == "2 steps"


# -- plan mode: the inputs of a call, and its plan for the layout shown -------------------------

TRACES: list[int] = []


def _loss(params, x):
    TRACES.append(1)  # runs when JAX traces the call, never when it runs
    return jnp.mean(jnp.tanh(x @ params["w1"]) @ params["w2"])


STEP = jax.jit(jax.grad(_loss))


def _inputs():
    params = {"w1": jnp.ones((64, 128)), "w2": jnp.ones((128, 16))}
    return params, jax.ShapeDtypeStruct((32, 64), jnp.float32)


def _drawn(plan):
    """What the explorer draws for ``plan`` (a PlanReport), in %jaxplan's own formatting."""
    from jaxmagic.render.memory import _MEM_ROWS, _collective_rows

    return {
        "peak": fmt_bytes(plan.peak),
        "memory": [[label, fmt_bytes(plan.memory[key])] for label, key in _MEM_ROWS],
        "collectives": _collective_rows(plan),
    }


def _sent(w):
    return {k: w.plan[k] for k in ("peak", "memory", "collectives")}


def test_plan_mode_replans_on_a_spec_edit_as_jaxmagic_plan_does():
    from jaxmagic.memories.plan import plan

    mesh8 = jax.make_mesh((8,), ("data",))
    params, x = _inputs()
    w = sharding(fn=STEP, args=(params, x), mesh=mesh8, specs=(None, P("data"))).explore()
    assert [a["name"] for a in w.data["arrays"]] == ["params.w1", "params.w2", "x"]
    dp = plan(STEP, params, x, mesh=mesh8, specs=(None, P("data")))
    assert _sent(w) == _drawn(dp) and w.plan["title"] == "Plan of _loss(params, x) for this layout"
    assert [c.kind for c in dp.collectives] == ["all-reduce"]

    w.spec_request = {"name": "params.w1", "entries": ["data", ""], "n": 1}  # the editor's texts
    assert w.error == "" and w.view["spec_text"] == "P('data', None)"
    fsdp = plan(STEP, params, x, mesh=mesh8, specs=({"w1": P("data", None), "w2": None}, P("data")))
    assert _sent(w) == _drawn(fsdp)
    assert fsdp.peak < dp.peak and "all-gather" in [c.kind for c in fsdp.collectives]
    # the layout the grid draws is the one planned: per-device bytes of w1 split 8 ways
    row = next(a for a in w.data["arrays"] if a["name"] == "params.w1")
    assert row["per_device"] == fmt_bytes(64 * 128 * 4 // 8)
    # nothing ran and no object of the caller changed
    assert not params["w1"].is_deleted() and float(params["w1"].sum()) == 64 * 128

    w.spec_request = {"name": "params.w1", "reset": True, "n": 2}
    assert _sent(w) == _drawn(dp)
    html = w._repr_mimebundle_()[0]["text/html"]  # the static snapshot shows the last plan
    assert "Collectives XLA inserted (1," in html and "all-reduce" in html
    assert w.report.to_dict()["plan"]["memory"]["peak_bytes"] == dp.peak


def test_plan_mode_bad_spec_changes_nothing_and_runs_nothing():
    mesh8 = jax.make_mesh((8,), ("data",))
    params, x = _inputs()
    w = sharding(fn=STEP, args=(params, x), mesh=mesh8).explore()
    before, traces = (w.data_json, w.plan_json), len(TRACES)
    w.spec_request = {"name": "x", "entries": ["batch", ""], "n": 1}  # no axis 'batch' on this mesh
    assert "batch" in w.error and "data" in w.error, w.error
    assert (w.data_json, w.plan_json) == before and len(TRACES) == traces  # not even traced
    w.spec_request = {"name": "x", "entries": ["data", "data"], "n": 2}
    assert "mesh axis 'data' is used in dimensions 0 and dimension 1" in w.error
    assert (w.data_json, w.plan_json) == before and not params["w1"].is_deleted()
    from jaxmagic.shardings.spec import SpecError

    with pytest.raises(SpecError, match="'batch'"):
        sharding(fn=STEP, args=(params, x), mesh=mesh8, specs=(None, P("batch")))


def test_plan_mode_call_that_does_not_trace():
    from jaxmagic.ir import NotTraceableError

    mesh8 = jax.make_mesh((8,), ("data",))
    params, x = _inputs()

    def wrong(params, x):
        return params["w2"] @ x  # (128, 16) @ (32, 64)

    with pytest.raises(NotTraceableError, match="JAX could not trace wrong: TypeError"):
        sharding(fn=wrong, args=(params, x), mesh=mesh8)
    assert not params["w1"].is_deleted()
    with pytest.raises(ValueError, match="pass mesh="):
        sharding(fn=STEP, args=({"w1": jnp.ones((4, 4))}, jnp.ones(4)))
    with pytest.raises(ValueError, match="plan mode"):
        sharding(params, fn=STEP, args=(params, x), mesh=mesh8)


def test_plan_mode_output_is_updated_so_a_saved_notebook_shows_the_last_plan(ip):
    from IPython.display import display
    from IPython.utils.capture import capture_output

    mesh8 = jax.make_mesh((8,), ("data",))
    params, x = _inputs()
    w = sharding(fn=STEP, args=(params, x), mesh=mesh8, specs=(None, P("data"))).explore()
    with capture_output() as cap:
        display(w)
        w.spec_request = {"name": "params.w1", "entries": ["data", ""], "n": 1}
        w.spec_request = {"name": "x", "entries": ["nope", ""], "n": 2}  # invalid: no update
    assert len(cap.outputs) == 2  # the display, then one update of it
    first, last = (o.data for o in cap.outputs)
    assert (
        first["application/vnd.jupyter.widget-view+json"] == last["application/vnd.jupyter.widget-view+json"]
    )
    assert "all-gather" not in first["text/html"] and "all-gather" in last["text/html"]
    assert "all-gather" in last["text/plain"] and "nope" in w.error
