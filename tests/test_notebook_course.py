"""The course notebooks (04+) show what they teach: checks on tagged cells' executed outputs.

Each notebook runs once per session (``tests.helpers.execute``); errors and run time are
checked for every notebook by ``test_notebooks.py``.
"""

from __future__ import annotations

import re

import pytest

from tests import helpers

pytestmark = pytest.mark.slow  # executes notebooks in a real kernel


def html_of(nb_name: str, tag: str) -> str:
    outs = helpers.cell_outputs(helpers.execute(nb_name)[0], tag)
    assert outs, f"{nb_name}: no outputs for cell tagged {tag!r}"
    return "".join(o.get("data", {}).get("text/html", "") for o in outs)


def text_of(nb_name: str, tag: str) -> str:
    outs = helpers.cell_outputs(helpers.execute(nb_name)[0], tag)
    assert outs, f"{nb_name}: no outputs for cell tagged {tag!r}"
    return helpers.text_of(outs)


# -- 04 jit pipeline -------------------------------------------------------------

JIT = "04_jit_pipeline.ipynb"


def test_jit_eager_loop_is_flagged_and_jit_compiles_once():
    assert 'data-kind="eager-ops"' in html_of(JIT, "eager")
    jit = text_of(JIT, "jit")
    assert "1 function · 1 compile" in jit and 'data-kind="eager-ops"' not in jit


def test_jit_new_shape_and_static_values_recompile_with_reasons():
    assert "x changed from f32[256,128] to f32[100,128]" in text_of(JIT, "newshape")
    static = html_of(JIT, "static")
    assert 'data-kind="recompile"' in static and "smooth compiled 3 times" in static
    assert "static argument" in static and "changed from 1 to 2" in static


def test_jit_pipeline_stages_are_shown():
    assert "stablehlo.dot_general" in text_of(JIT, "stablehlo")
    optimized = text_of(JIT, "optimized")
    assert "HloModule jit_block" in optimized and "fusion" in optimized


def test_jit_host_sync_in_loop_is_flagged():
    assert 'data-kind="host-sync"' in html_of(JIT, "hostsync")


# -- 05 autodiff -----------------------------------------------------------------

AD = "05_autodiff.ipynb"


def test_autodiff_values_and_programs():
    grad = text_of(AD, "grad")
    first = re.search(r"f'\(1\.0\) = ([\d.]+)\s+expected: ([\d.]+)", grad)
    assert first and first.group(1) == first.group(2)
    assert "cos a" in grad and "add_any" in grad  # backward pass in the jaxpr
    assert "'w': Array([-0.84, -1.01, -1.18]" in text_of(AD, "vgrad")
    assert "f''(1.0) = 3.00" in text_of(AD, "grad2")
    # the title names the callee as written in the cell: jax.jacfwd(g), not the inner g
    assert "jaxpr of jax.jacfwd(g)(v: f32[3]) -> f32[3,3]" in text_of(AD, "jac")
    jvp = text_of(AD, "jvp")
    assert "J @ e0 = [ 2. -0.  2.] == first column: [ 2. -0.  2.]" in jvp


def test_autodiff_stop_gradient_cuts_the_backward_pass():
    out = text_of(AD, "stopgrad")
    assert "h'(2.0) = 4.0" in out and "stop_gradient" in out


# -- 06 vmap ---------------------------------------------------------------------

VM = "06_vmap.ipynb"


def test_vmap_batches_the_matmul_and_gives_per_example_grads():
    assert "x: f32[5,3]) -> f32[5,2]" in text_of(VM, "vmapjaxpr")
    out = text_of(VM, "perexample")
    assert "[(5, 2, 3), (5, 2)]" in out and "equals the batch gradient: True" in out


def test_vmap_python_loop_is_flagged_and_vmap_is_not():
    loop, batched = html_of(VM, "loop"), html_of(VM, "batched")
    assert 'data-kind="eager-ops"' in loop
    assert 'data-kind="eager-ops"' not in batched and "1 compile" in text_of(VM, "batched")


# -- 08 gotchas -------------------------------------------------------------------

GO = "08_gotchas.ipynb"


def test_gotchas_jaxcheck_finds_out_of_bounds_index_nan_and_division():
    oob = html_of(GO, "oob")
    assert 'data-kind="index"' in oob and "index 10 is out of bounds for axis 0 with size 5" in oob
    assert "return x[i] * 2" in oob
    clean = text_of(GO, "clean")
    assert "clean: no errors found" in clean and 'data-kind="index"' not in clean
    nan = html_of(GO, "nan")
    assert 'data-kind="div"' in nan and 'data-kind="nan"' in nan


def test_gotchas_profiler_explains_constants_tracers_and_x64():
    assert 'data-kind="captured-constant"' in html_of(GO, "constant")
    tracer = text_of(GO, "tracer")
    assert "TracerBoolConversionError" in tracer and 'data-kind="tracer-conversion"' in tracer
    assert 'data-kind="x64-truncated"' in html_of(GO, "x64")


def said(nb_name: str, tag: str) -> str:
    """What a cell printed and showed, whitespace collapsed: the kernel may send one ``print`` in
    several stream chunks, and where it splits depends on timing."""
    return helpers.words(text_of(nb_name, tag))


def test_gotchas_outputs_show_each_behaviour():
    assert "JAX arrays are immutable" in said(GO, "inplace")
    assert "sum requires ndarray or scalar arguments" in said(GO, "nonarray")
    prng = said(GO, "prng")
    assert "reused key, same numbers: True" in prng and "split keys, different numbers: True" in prng
    assert "[0. 2.] -0.0 9.0" in said(GO, "fixes")
    debug = said(GO, "debugprint")
    assert debug.count("python print sees") == 1 and debug.count("debug.print sees") == 2
    assert "disable_jit: 3.0 0.0" in said(GO, "disablejit")


# -- 12 MLP on digits ------------------------------------------------------------

MLP = "12_mlp_digits.ipynb"


def accuracy(tag: str) -> float:
    m = re.search(r"test accuracy: ([\d.]+)", text_of(MLP, tag))
    assert m, f"no accuracy printed by {tag}"
    return float(m.group(1))


def test_mlp_from_scratch_reaches_95_percent_and_compiles_once():
    assert accuracy("scratch-accuracy") >= 0.95
    train = text_of(MLP, "scratch-train")
    assert re.search(r"train_step\s+line \d+\s+1\s", train), "train_step should compile exactly once"
    assert 'data-kind="recompile"' not in train and 'data-kind="host-sync"' not in train


# -- 07 pytrees -------------------------------------------------------------------

PT = "07_pytrees.ipynb"


def test_pytrees_structure_view_shows_paths_and_custom_nodes():
    params = text_of(PT, "params")
    assert "TreeSummary params: 5 leaves" in params and "encoder.w" in params
    custom = text_of(PT, "custom")
    assert "TreeSummary layers: 4 leaves" in custom and "0.1" in custom
    named = text_of(PT, "dataclass")
    assert (
        "l1.w" in named and "l2.b" in named and "relu" not in named.split("TreeSummary")[1].split("path")[0]
    )


def test_pytrees_aux_data_change_recompiles_with_reason():
    out = html_of(PT, "auxrecompile")
    assert 'data-kind="recompile"' in out and "pytree node metadata does not match" in out


def test_pytrees_tuple_gotcha_and_fix():
    gotcha = text_of(PT, "tuplegotcha")
    assert "TreeSummary shapes: 3 leaves" in gotcha and "w.1" in gotcha
    assert "built arrays of shapes: {'b': ((32,),), 'w': ((16,), (32,))}" in gotcha
    fixed = text_of(PT, "tuplefix")
    assert "{'b': (32,), 'w': (16, 32)}" in fixed and "TreeSummary specs: 2 leaves" in fixed


# -- 09 parallelism ----------------------------------------------------------------

PAR = "09_parallelism.ipynb"
WIDGET = "application/vnd.jupyter.widget-view+json"


def widgets_of(nb_name: str, tag: str) -> list:
    return [o for o in helpers.cell_outputs(helpers.execute(nb_name)[0], tag) if WIDGET in o.get("data", {})]


def test_parallelism_devices_and_pmap_sync():
    assert "8 cpu device(s)" in text_of(PAR, "devices")
    layout = text_of(PAR, "pmap-layout")
    assert "P('devices', None)" in layout and "8 distinct shard(s)" in layout


def test_parallelism_layouts_are_shown_in_the_explorer_widget():
    for tag in ("pmap-layout", "named-layout", "auto-layout", "ppermute"):
        views = widgets_of(PAR, tag)
        assert len(views) == 1, tag
        assert "ShardingReport" in views[0]["data"]["text/plain"]  # fallback faces kept
        assert 'class="jm' in views[0]["data"]["text/html"]
    assert "shard f32[4,4] = 64 B per device · 8 distinct shard(s)" in text_of(PAR, "named-layout")


def test_parallelism_results_agree_and_compiler_inserts_all_reduce():
    auto = text_of(PAR, "auto")
    assert "output sharding: P('data',)" in auto and "all-reduce(" in auto
    assert "matches pmap: True" in text_of(PAR, "dp-jit")
    assert "same result as automatic: True" in text_of(PAR, "shardmap")
    assert "(16, 4) P('data',) True" in text_of(PAR, "ppermute")


def test_mlp_nnx_with_trainer_reaches_95_percent_with_live_widget():
    assert accuracy("side-by-side") >= 0.95
    fit = helpers.text_of(helpers.cell_outputs(helpers.execute(MLP)[0], "trainer-fit"))
    # the trainer's live widget ends as its static snapshot: progress, curves, epoch table
    assert "jm-progress" in fit and "<polyline" in fit and "completed 630 steps" in fit


# -- 10 Flax NNX -----------------------------------------------------------------

NNX = "10_flax_nnx.ipynb"


def test_nnx_structure_views_show_every_variable_kind():
    model = text_of(NNX, "model")
    for kind in ("Param", "BatchStat", "RngState", "Count"):
        assert re.search(rf"^\s+{kind}\s+\d+", model, re.M), kind
    assert "GraphDef | params leaves: 6 | rest leaves: 5" in text_of(NNX, "split")
    assert "kernel doubled: True" in text_of(NNX, "merge") and "after update: True" in text_of(NNX, "merge")
    assert "TreeSummary grads: 6 leaves" in text_of(NNX, "grads")
    assert "OptState" in text_of(NNX, "optstate")
    bs = text_of(NNX, "batchstats")
    assert "2 of 11 leaves" in bs and "bn.mean" in bs


def test_nnx_train_step_compiles_once_and_modes_switch():
    train = text_of(NNX, "train")
    assert re.search(r"train_step\s+line \d+\s+1\s", train) and "calls: 101" in train
    modes = text_of(NNX, "modes")
    assert "eval: deterministic: True" in modes and "outputs differ (dropout): True" in modes
    assert "running mean moved: True" in modes


# -- 11 Linen, Optax, Orbax --------------------------------------------------------

LIN = "11_linen_optax_orbax.ipynb"


def test_linen_collections_apply_and_trainstate():
    variables = text_of(LIN, "variables")
    assert "source: Linen variables" in variables and "BatchStat" in variables
    assert "updated collections: ['batch_stats'] | running mean changed: True" in text_of(LIN, "apply")
    assert "{0: 0.0, 25: 0.0015" in text_of(LIN, "schedule")
    m = re.search(r"step 300: loss [\d.]+, test accuracy ([\d.]+)", text_of(LIN, "trainstate"))
    assert m and float(m.group(1)) >= 0.9


def test_orbax_checkpoint_inspected_on_disk_and_restored():
    saved = text_of(LIN, "orbax-save")
    assert "steps on disk: [300]" in saved and "source: Orbax checkpoint" in saved
    restored = text_of(LIN, "orbax-restore")
    assert "restored step 300 | identical: True" in restored


def test_linen_through_bridge_trains_logs_lr_checkpoints_and_resumes():
    assert "source: NNX FromLinen" in text_of(LIN, "bridged")
    fit = text_of(LIN, "fit")
    assert "jm-progress" in fit and "<polyline" in fit and "eval_accuracy" in fit  # widget snapshot
    result = text_of(LIN, "fit-result")
    m = re.search(r"step 1 ([\d.e+-]+), step 50 ([\d.e+-]+) \(peak\), step 400 ([\d.e+-]+)", result)
    assert m and float(m.group(1)) == 0.0 and float(m.group(2)) > float(m.group(3)) > 0
    assert "checkpoints: [399, 400]" in result
    tree = text_of(LIN, "ckpt-tree")
    assert "Orbax checkpoint" in tree and "state.params.inner" in tree
    resume = text_of(LIN, "resume")
    assert "resumed at step 400" in resume and "final step 600" in resume
    assert float(re.search(r"eval accuracy ([\d.]+)", resume).group(1)) >= 0.95
