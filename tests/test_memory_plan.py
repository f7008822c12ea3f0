"""``jaxmagic.plan`` / ``%jaxplan``: memory equals ``compiled.memory_analysis()``, collectives
equal those in the compiled HLO text on meshes 8, 2×4 and 2×2×2, nothing runs, bad input is
a clear error that changes nothing."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from IPython.core.error import UsageError
from IPython.utils.capture import capture_output
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxmagic.ir import NotTraceableError
from jaxmagic.memories.hlo import KINDS, collectives
from jaxmagic.memories.plan import DEVICES, device_capacity, plan
from jaxmagic.shardings.spec import SpecError


def mesh_of(shape, names):
    return Mesh(np.array(jax.devices()).reshape(shape), names)


def loss(w, x):
    h = jnp.tanh(x @ w)
    return jnp.mean(h**2)


step = jax.grad(loss)
W = jax.ShapeDtypeStruct((64, 128), jnp.float32)
X = jax.ShapeDtypeStruct((32, 64), jnp.float32)

# (mesh shape, axis names, specs for (w, x)) — data parallel, tensor parallel, FSDP-like
CASES = [
    ((8,), ("data",), (None, P("data"))),
    ((8,), ("data",), (P("data", None), None)),
    ((2, 4), ("data", "model"), (P(None, "model"), P("data"))),
    ((2, 4), ("data", "model"), (P("model", None), P("data", "model"))),
    ((2, 2, 2), ("data", "fsdp", "model"), (P("fsdp", "model"), P(("data", "fsdp")))),
    ((2, 2, 2), ("data", "fsdp", "model"), (P(None, ("fsdp", "model")), P("data"))),
]


def compiled_independently(fn, mesh, specs, *args):
    sds = [
        jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=NamedSharding(mesh, s if s is not None else P()))
        for a, s in zip(args, specs)
    ]
    return jax.jit(fn).trace(*sds).lower().compile()


def hlo_collectives(text):
    """(kind, result type) of each collective line, read with one plain regex."""
    out = []
    for line in text.splitlines():
        m = re.match(r"^\s*(?:ROOT )?%\S+ = (.+?) (" + "|".join(KINDS) + r")(-start)?\(", line)
        if m:
            out.append((m.group(2), re.sub(r"\{[^}]*\}", "", m.group(1))))
    return out


@pytest.mark.parametrize("shape, names, specs", CASES)
@pytest.mark.slow
def test_memory_and_collectives_equal_the_compiled_program(shape, names, specs):
    mesh = mesh_of(shape, names)
    report = plan(step, W, X, mesh=mesh, specs=specs)
    compiled = compiled_independently(step, mesh, specs, W, X)
    m = compiled.memory_analysis()
    assert report.memory == {
        "argument_bytes": m.argument_size_in_bytes,
        "output_bytes": m.output_size_in_bytes,
        "alias_bytes": m.alias_size_in_bytes,
        "temp_bytes": m.temp_size_in_bytes,
        "generated_code_bytes": m.generated_code_size_in_bytes,
        "peak_bytes": m.argument_size_in_bytes
        + m.output_size_in_bytes
        + m.temp_size_in_bytes
        - m.alias_size_in_bytes
        + m.generated_code_size_in_bytes,
    }
    expected = hlo_collectives(compiled.as_text())
    assert expected, "each case is chosen to need communication"
    assert [(c.kind, c.out_type) for c in report.collectives] == expected
    assert report.devices == 8 and report.mesh.startswith(
        " × ".join(f"{n}={s}" for n, s in zip(names, shape))
    )
    for c in report.collectives:
        assert c.axes and set(c.axes) <= set(names), c
        assert c.source and "test_memory_plan.py" in c.source, c


def test_data_parallel_gradient_is_one_all_reduce_over_data():
    report = plan(step, W, X, mesh=mesh_of((8,), ("data",)), specs=(None, P("data")))
    assert [(c.kind, c.axes, c.group_size, c.out_bytes) for c in report.collectives] == [
        ("all-reduce", ("data",), 8, 64 * 128 * 4)
    ]
    assert report.memory["argument_bytes"] == 64 * 128 * 4 + 4 * 64 * 4  # w replicated, x split 8 ways
    assert report.cost["flops"] and report.intensity


def test_group_forms_parse_to_the_same_axes():
    from jaxmagic.memories.hlo import mesh_axes_of

    names, sizes = ("data", "model"), (2, 4)
    assert mesh_axes_of([[0, 1, 2, 3], [4, 5, 6, 7]], names, sizes) == ("model",)
    assert mesh_axes_of([[0, 4], [1, 5], [2, 6], [3, 7]], names, sizes) == ("data",)
    assert mesh_axes_of([list(range(8))], names, sizes) == ("data", "model")
    assert mesh_axes_of([[0, 2], [1, 3]], names, sizes) is None
    text = """HloModule m
ENTRY %e (p: f32[8]) -> f32[8] {
  %p = f32[8]{0} parameter(0)
  %a = f32[8]{0} all-reduce(%p), channel_id=1, replica_groups=[2,4]<=[8], to_apply=%add, metadata={op_name="x" source_file="/a.py" source_line=7}
  %b = f32[8]{0} all-reduce(%a), channel_id=2, replica_groups=[4,2]<=[2,4]T(1,0), to_apply=%add
  %c = f32[32]{0} all-gather(%b), channel_id=3, replica_groups={{0,1,2,3},{4,5,6,7}}, dimensions={0}
  %s = f32[2]{0} reduce-scatter(%b), channel_id=4, replica_groups={{0,1,2,3},{4,5,6,7}}, dimensions={0}
  %d = (f32[8]{0}, f32[8]{0}) collective-permute-start(%b), source_target_pairs={{0,1},{1,2}}
  ROOT %e = f32[8]{0} collective-permute-done(%d)
}"""
    found = collectives(text, (names, sizes))
    assert [(c.kind, c.axes, c.out_bytes, c.in_bytes) for c in found] == [
        ("all-reduce", ("model",), 32, 32),
        ("all-reduce", ("data",), 32, 32),
        ("all-gather", ("model",), 128, 32),
        ("reduce-scatter", ("model",), 8, 32),
        ("collective-permute", ("model",), 32, 32),
    ]
    assert found[0].source == "/a.py:7"


def test_nothing_runs_and_no_argument_changes():
    w = jnp.ones((64, 128))
    x = jnp.ones((32, 64))
    before = {id(a) for a in jax.live_arrays()}
    donating = jax.jit(step, donate_argnums=0)
    report = plan(donating, w, x, mesh=mesh_of((8,), ("data",)), specs=(None, P("data")))
    assert not w.is_deleted() and not x.is_deleted()
    new = [a for a in jax.live_arrays() if id(a) not in before]
    assert not [a for a in new if a.size >= 32 * 64], "plan allocated input-sized arrays"
    assert report.memory["alias_bytes"] == 64 * 128 * 4  # the donated w is reused for its gradient


def test_nnx_module_argument_is_left_alone():
    model = nnx.Linear(64, 16, rngs=nnx.Rngs(0))
    kernel = model.kernel.get_raw_value()

    def forward(m, x):
        return m(x).sum()

    report = plan(forward, model, X, mesh=mesh_of((2, 4), ("data", "model")), specs=(None, P("data")))
    assert report.memory["argument_bytes"] == 64 * 16 * 4 + 16 * 4 + 16 * 64 * 4
    assert model.kernel.get_raw_value() is kernel and not kernel.is_deleted()


def test_capacity_verdicts():
    report = plan(step, W, X, device="h100")
    assert report.capacity == ("h100", 80 * 1024**3) and report.fits and report.headroom > 0
    tight = plan(step, W, X, device="64KiB")
    assert tight.fits is False and tight.headroom < 0 and "does NOT fit" in tight.to_text()
    assert device_capacity(17179869184) == ("16.0 GiB", 17179869184)
    assert device_capacity("16e9")[1] == 16 * 10**9
    assert device_capacity("tpu-v5e")[1] == DEVICES["tpu-v5e"]


def test_bad_input_is_clear_and_changes_nothing():
    mesh = mesh_of((2, 4), ("data", "model"))
    with pytest.raises(ValueError, match="unknown device 'h900'.*h100"):
        plan(step, W, X, device="h900")
    with pytest.raises(SpecError, match="argument 1.*unknown mesh axis 'batch'.*'data', 'model'"):
        plan(step, W, X, mesh=mesh, specs=(None, P("batch")))
    with pytest.raises(ValueError, match="specs need a mesh"):
        plan(step, W, X, specs=(None, P("data")))
    with pytest.raises(ValueError, match="specs has 1 entries but the call has 2"):
        plan(step, W, X, mesh=mesh, specs=(None,))
    calls = []

    def concrete(x):
        calls.append(1)
        return float(x.sum())

    x = jnp.ones(8)
    with pytest.raises(NotTraceableError, match="could not trace concrete"):
        plan(concrete, x)
    assert not x.is_deleted()


def test_faces():
    report = plan(step, W, X, mesh=mesh_of((8,), ("data",)), specs=(None, P("data")), device="tpu-v5e")
    text = report.to_text()
    assert "compiled only (nothing ran)" in text and "all-reduce  data" in text
    assert "estimates by this backend's compiler (cpu)" in " ".join(text.split())
    d = report.to_dict()
    assert d["fits"] is True and d["collectives"][0]["axes"] == ["data"]
    assert "<table" in report.to_html()
    assert repr(report).startswith("PlanReport(loss: peak")


@pytest.fixture
def shell(ip):
    ip.run_cell(
        "import jax, jax.numpy as jnp, numpy as np\nfrom jax.sharding import Mesh, PartitionSpec as P\n"
        "mesh = Mesh(np.array(jax.devices()), ('data',))\n"
        "def loss(w, x):\n    return jnp.mean(jnp.tanh(x @ w) ** 2)\n"
        "step = jax.grad(loss)\n"
        "dp, tp = (None, P('data')), (None, P('model'))\n"
        "def concrete(a):\n    return float(a.sum())\n"
        "w = jax.ShapeDtypeStruct((64, 128), jnp.float32)\nx = jax.ShapeDtypeStruct((32, 64), jnp.float32)\n"
    )
    return ip


def test_magic_o_q_and_flags_anywhere(shell):
    for line in (
        "%jaxplan -o --mesh mesh --specs dp --device h100 step(w, x)",
        "%jaxplan step(w, x) --mesh mesh --specs '(None, P(\"data\"))' --device h100 -o",
    ):
        with capture_output() as cap:
            res = shell.run_cell(line)
        assert res.error_in_exec is None, res.error_in_exec
        report = res.result
        assert type(report).__name__ == "PlanReport" and report.fits
        assert [c.kind for c in report.collectives] == ["all-reduce"]
        assert not cap.outputs
    with capture_output() as cap:
        res = shell.run_cell("%jaxplan -q step(w, x)")
    assert res.result is None and not cap.outputs and cap.stdout == ""
    doc = shell.find_line_magic("jaxplan").__doc__
    for flag in ("--mesh", "--specs", "--device", "-o", "-q"):
        assert flag in doc


@pytest.mark.parametrize(
    "line, message",
    [
        ("--device h900 step(w, x)", "unknown device 'h900'"),
        ("--mesh mesh --specs tp step(w, x)", "unknown mesh axis 'model'"),
        ("step", "needs a call"),
        ("undefined_fn(w)", "could not evaluate"),
        ("concrete(w)", "could not trace concrete"),
    ],
)
def test_magic_bad_input(shell, line, message):
    with pytest.raises(UsageError, match=message):
        shell.run_line_magic("jaxplan", line)


@pytest.mark.slow
def test_batch_sweep_finds_the_largest_batch_that_fits():
    mesh = mesh_of((2, 4), ("data", "model"))
    specs = (P(None, "model"), P("data"))
    small = plan(step, W, X, mesh=mesh, specs=specs)
    capacity = small.peak * 3  # room for a few times the batch
    report = plan(step, W, X, mesh=mesh, specs=specs, device=capacity, batch_sweep=True)
    best = report.max_batch
    assert best and best % 2 == 0 and best > 32  # a multiple of the data axis, larger than given
    fits = plan(step, W, jax.ShapeDtypeStruct((best, 64), jnp.float32), mesh=mesh, specs=specs)
    over = plan(step, W, jax.ShapeDtypeStruct((best + 2, 64), jnp.float32), mesh=mesh, specs=specs)
    assert fits.peak <= capacity < over.peak
    assert dict(report.sweep)[best] == fits.peak
    assert f"the largest batch that fits {report.capacity[0]} is {best}" in report.to_text()
    with pytest.raises(ValueError, match="batch_sweep needs a device"):
        plan(step, W, X, batch_sweep=True)


@pytest.mark.slow
def test_nnx_jit_train_step_with_optimizer_is_planned_not_run():
    import optax

    model = nnx.Sequential(
        nnx.Linear(64, 256, rngs=nnx.Rngs(0)), nnx.relu, nnx.Linear(256, 10, rngs=nnx.Rngs(1))
    )
    optimizer = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)

    @nnx.jit
    def train_step(model, optimizer, x, y):
        def loss_fn(m):
            return optax.softmax_cross_entropy_with_integer_labels(m(x), y).mean()

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    kernel = model.layers[0].kernel.get_raw_value()
    x, y = jax.ShapeDtypeStruct((128, 64), jnp.float32), jax.ShapeDtypeStruct((128,), jnp.int32)
    report = plan(
        train_step,
        model,
        optimizer,
        x,
        y,
        mesh=mesh_of((8,), ("data",)),
        specs=(None, None, P("data"), P("data")),
    )
    assert [(c.kind, c.axes) for c in report.collectives] == [("all-reduce", ("data",))]
    params = (64 * 256 + 256 + 256 * 10 + 10) * 4
    assert report.memory["argument_bytes"] >= 3 * params  # parameters + two Adam moments, replicated
    assert int(optimizer.step.get_raw_value()) == 0  # no update ran
    assert model.layers[0].kernel.get_raw_value() is kernel and not kernel.is_deleted()


def test_magic_names_the_cell_a_collective_comes_from(shell):
    shell.run_cell(
        "def loss2(w, x):\n    return jnp.mean(jnp.tanh(x @ w) ** 2)\nstep2 = jax.grad(loss2)\n",
        store_history=True,
    )
    cell = shell.execution_count - 1
    report = shell.run_cell("%jaxplan -o --mesh mesh --specs dp step2(w, x)").result
    assert [c.source for c in report.collectives] == [f"In[{cell}], line 2 (loss2)"]


def test_tuple_results_are_shown_without_layouts_or_index_comments():
    text = (
        "  %a2a = (f32[1,2]{1,0}, f32[1,2]{1,0}, f32[1,2]{1,0}, f32[1,2]{1,0}, f32[1,2]{1,0}, "
        "/*index=5*/f32[1,2]{1,0}) all-to-all(%p), channel_id=1, replica_groups={{0,1,2,3,4,5}}\n"
    )
    (c,) = collectives(text)
    assert c.out_type == "(f32[1,2], f32[1,2], f32[1,2], f32[1,2], f32[1,2], f32[1,2])"
    assert c.out_bytes == 6 * 8 and c.group_size == 6


def test_donatable_bytes_are_what_xla_aliases_once_donated():
    def update(params, grads, x):
        return jax.tree.map(lambda p, g: p - 0.1 * g, params, grads), (x * 2).sum()

    params = {"w": jax.ShapeDtypeStruct((64, 32), jnp.float32), "b": jax.ShapeDtypeStruct((32,), jnp.float32)}
    x = jax.ShapeDtypeStruct((16, 8), jnp.float32)
    report = plan(jax.jit(update), params, params, x)
    donated = jax.jit(update, donate_argnums=(0, 1, 2)).lower(params, params, x).compile()
    assert report.donatable == donated.memory_analysis().alias_size_in_bytes == (64 * 32 + 32) * 4
    assert "would let outputs reuse 8.1 KiB per device" in " ".join(report.to_text().split())
    already = plan(jax.jit(update, donate_argnums=0), params, params, x)
    assert already.memory["alias_bytes"] == (64 * 32 + 32) * 4 and already.donatable == 0
    assert report.to_dict()["donatable_bytes"] == report.donatable
