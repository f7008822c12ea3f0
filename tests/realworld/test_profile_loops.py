"""%%jaxprofile / %jaxprofile over tutorial-style training and generation loops.

Each test counts XLA compiles with its own ``jax.monitoring`` listener and requires the
report's per-function compile counts to equal it, and requires exactly the insights that are
really there: a clean loop gets no ``recompile`` / ``jit-recreated`` / ``host-sync`` /
``eager-ops`` warning, a loader with a short last batch gets exactly its one recompile.
"""

from __future__ import annotations

import collections

import pytest

from tests.fingerprint import values
from tests.realworld.shell import run, setup

pytestmark = [pytest.mark.realworld, pytest.mark.slow]  # whole models under every magic: ~1 min

FALSE_ALARMS = {"recompile", "jit-recreated", "host-sync", "eager-ops", "captured-constant"}


def profile(ip, body: str, flags: str = ""):
    """Run ``body`` under ``%%jaxprofile -o -q``; return (report, cell run)."""
    cell = run(ip, f"%%jaxprofile -o -q {flags}\n{body}")
    assert cell.error is None, f"profiled cell failed: {cell.error!r}\n{cell.text[-2000:]}"
    return cell.result.result, cell


def compiles_by_function(report) -> collections.Counter:
    return collections.Counter({f.name: len(f.compiles) for f in report.functions if f.compiles})


def assert_counts_match(report, cell) -> None:
    assert compiles_by_function(report) == +cell.compiles.by_name, (
        f"report {dict(compiles_by_function(report))} != listener {dict(cell.compiles.by_name)}"
    )
    assert report.n_compiles == cell.compiles.total


def warnings_of(report) -> set[str]:
    return {i.kind for i in report.insights if i.severity == "warn"}


GPT_LOOP = """
for epoch in range(2):
    for batch in data:
        loss = gpt_train_step(gpt, gpt_opt, batch)
"""


def test_clean_nnx_jit_training_loop_has_no_false_alarm(ip):
    setup(ip, "gpt")
    ip.run_cell("data = token_batches(4)")
    report, cell = profile(ip, GPT_LOOP)
    assert_counts_match(report, cell)
    assert cell.compiles.by_name["gpt_train_step"] <= 1  # same-shaped batches: at most the first compile
    assert not warnings_of(report) & FALSE_ALARMS, [i.message for i in report.insights]


MLP_SETUP = """
X, y = classification_data(64)
data = [(X[i:i + 16], y[i:i + 16]) for i in range(0, 64, 16)]
mlp, twin = MLP(rngs=nnx.Rngs(0)), MLP(rngs=nnx.Rngs(0))
mlp_opt = nnx.Optimizer(mlp, tx, wrt=nnx.Param)
twin_opt = nnx.Optimizer(twin, tx, wrt=nnx.Param)

@nnx.jit
def mlp_step(model, optimizer, batch):
    (loss, _), grads = nnx.value_and_grad(mlp_loss_fn, has_aux=True)(model, batch)
    optimizer.update(model, grads)
    return loss
"""
MLP_LOOP = "for batch in data:\n    loss = mlp_step(mlp, mlp_opt, batch)\n"


def test_profiled_loop_leaves_exactly_the_state_of_the_unprofiled_loop(ip):
    """Same model, same dropout RNG stream, same optimizer: profiling changes nothing the cell does."""
    setup(ip)
    ip.run_cell(MLP_SETUP)
    profile(ip, MLP_LOOP)
    assert run(ip, MLP_LOOP.replace("mlp, mlp_opt", "twin, twin_opt")).error is None
    ns = ip.user_ns
    assert values(ns["mlp"]) == values(ns["twin"]) and values(ns["mlp_opt"]) == values(ns["twin_opt"])
    assert int(ns["mlp_opt"].step[...]) == 4


def test_failing_cell_raises_the_same_error_and_keeps_the_same_steps(ip):
    setup(ip)
    ip.run_cell(MLP_SETUP + "data.insert(2, (X[:16, :3], y[:16]))\n")  # a bad batch after two good ones
    profiled = run(ip, "%%jaxprofile -q\n" + MLP_LOOP)
    plain = run(ip, MLP_LOOP.replace("mlp, mlp_opt", "twin, twin_opt"))
    assert profiled.error is not None and type(profiled.error) is type(plain.error)
    ns = ip.user_ns
    assert values(ns["mlp"]) == values(ns["twin"]) and values(ns["mlp_opt"]) == values(ns["twin_opt"])
    assert int(ns["mlp_opt"].step[...]) == 2


def test_new_optimizer_recompile_is_explained_with_the_users_names(ip):
    setup(ip)
    ip.run_cell(MLP_SETUP)
    report, cell = profile(
        ip,
        """
for lr in (1e-2, 1e-3):
    optimizer = nnx.Optimizer(mlp, optax.adam(lr), wrt=nnx.Param)   # a new transformation: a new program
    for batch in data:
        loss = mlp_step(mlp, optimizer, batch)
""",
    )
    assert_counts_match(report, cell)
    recompiles = [i for i in report.insights if i.kind == "recompile"]
    assert len(recompiles) == 1 and recompiles[0].function == "mlp_step"
    assert "optimizer" in recompiles[0].message and "[0][1]" not in recompiles[0].message, recompiles[
        0
    ].message
    assert len(recompiles[0].message) < 400, len(recompiles[0].message)


def test_one_float_per_epoch_is_not_a_host_sync(ip):
    setup(ip, "gpt")
    ip.run_cell("data = token_batches(2)")
    report, cell = profile(
        ip,
        """
for epoch in range(25):
    for batch in data:
        loss = gpt_train_step(gpt, gpt_opt, batch)
    print(f"epoch {epoch}: loss {float(loss):.3f}")
""",
    )
    assert_counts_match(report, cell)
    assert "host-sync" not in warnings_of(report), [i.message for i in report.insights]


def test_generate_loop_compiles_the_step_at_most_once(ip):
    setup(ip, "gpt")
    report, cell = profile(ip, "out = gpt.generate_text(5, [1, 2])")
    assert len(ip.user_ns["out"]) == 7
    assert_counts_match(report, cell)
    assert cell.compiles.by_name["generate_step"] <= 1
    assert not warnings_of(report) & {"recompile", "jit-recreated"}, [i.message for i in report.insights]


def test_loader_with_short_last_batch_gives_exactly_one_recompile(ip):
    setup(ip)
    ip.run_cell("""
X, y = classification_data(70)   # 4 batches of 16, then one of 6
mlp = MLP(rngs=nnx.Rngs(0))
mlp_opt = nnx.Optimizer(mlp, tx, wrt=nnx.Param)

@nnx.jit
def mlp_step(model, optimizer, batch):
    (loss, _), grads = nnx.value_and_grad(mlp_loss_fn, has_aux=True)(model, batch)
    optimizer.update(model, grads)
    return loss
""")
    report, cell = profile(
        ip, "for batch in NumpyLoader(X, y, batch_size=16):\n    loss = mlp_step(mlp, mlp_opt, batch)\n"
    )
    assert_counts_match(report, cell)
    assert cell.compiles.by_name["mlp_step"] == 2
    recompiles = [i for i in report.insights if i.kind == "recompile"]
    assert len(recompiles) == 1 and recompiles[0].function == "mlp_step"
    assert "f32[16,8]" in recompiles[0].message and "f32[6,8]" in recompiles[0].message
    assert not warnings_of(report) & (FALSE_ALARMS - {"recompile"})


def test_vae_loop_with_rngs_is_clean(ip):
    setup(ip, "vae")
    ip.run_cell("xs = [jnp.asarray(images(16, seed=i)) for i in range(4)]")
    report, cell = profile(ip, "for x in xs:\n    loss = vae_train_step(vae, vae_opt, x)\n")
    assert_counts_match(report, cell)
    assert not warnings_of(report) & FALSE_ALARMS, [i.message for i in report.insights]
    assert int(ip.user_ns["vae"].encoder.rngs.noise.count[...]) == 4  # one noise draw per step, as unprofiled


def test_slicing_counts_what_the_user_wrote(ip):
    setup(ip, "vae")
    ip.run_cell("xs = jnp.asarray(images(64)).reshape(4, 16, 8, 8)")
    report, cell = profile(ip, "for i in range(4):\n    loss = vae_train_step(vae, vae_opt, xs[i])\n")
    assert_counts_match(report, cell)
    assert sum(report.eager_ops.values()) == 4, report.eager_ops


def test_cnn_train_and_eval_epochs_switching_modes_do_not_recompile(ip):
    setup(ip, "cnn")
    ip.run_cell("train_ds, test_ds = digit_batches(3), digit_batches(2, seed=1)")
    report, cell = profile(
        ip,
        """
for epoch in range(2):
    cnn.train()
    for batch in train_ds:
        cnn_train_step(cnn, cnn_opt, metrics, batch)
    cnn.eval()
    for batch in test_ds:
        cnn_eval_step(cnn, metrics, batch)
    history = metrics.compute()
    metrics.reset()
""",
    )
    assert_counts_match(report, cell)
    assert cell.compiles.by_name["cnn_train_step"] <= 1 and cell.compiles.by_name["cnn_eval_step"] <= 1
    assert not warnings_of(report) & FALSE_ALARMS, [i.message for i in report.insights]


def test_linen_train_state_loop_is_clean(ip):
    setup(ip, "linen")
    ip.run_cell("X, y = classification_data(64)")
    report, cell = profile(
        ip,
        """
for i in range(4):
    state, loss = linen_train_step(state, (X[i * 16:(i + 1) * 16], y[i * 16:(i + 1) * 16]))
""",
    )
    assert_counts_match(report, cell)
    assert int(ip.user_ns["state"].step) == 4
    assert not warnings_of(report) & FALSE_ALARMS, [i.message for i in report.insights]


def test_unet_loop_splitting_keys_is_clean(ip):
    setup(ip, "unet")
    report, cell = profile(
        ip,
        """
for step in range(3):
    key, step_key = jax.random.split(key)
    loss = unet_train_step(unet, unet_opt, x0, step_key)
""",
    )
    assert_counts_match(report, cell)
    assert cell.compiles.by_name["unet_train_step"] <= 1
    assert not warnings_of(report) & FALSE_ALARMS, [i.message for i in report.insights]


def test_line_magic_on_a_train_step(ip):
    setup(ip, "linen")
    cell = run(ip, "r = %jaxprofile -o state, loss = linen_train_step(state, (Xl, yl))")
    assert cell.error is None
    report = ip.user_ns["r"]
    assert_counts_match(report, cell)
    assert int(ip.user_ns["state"].step) == 1


def test_grad_of_jitted_function_is_not_a_recompile(ip):
    setup(ip)
    ip.run_cell("@jax.jit\ndef energy(z):\n    return jnp.sum(jnp.sin(z) ** 2)\nz = jnp.ones(5)")
    report, cell = profile(ip, "g = jax.grad(energy)(z)")
    assert_counts_match(report, cell)
    assert "recompile" not in warnings_of(report), [i.message for i in report.insights]


def test_trace_counts_every_call_of_a_precompiled_step(ip, tmp_path):
    setup(ip, "vae")
    ip.run_cell(
        "xs = [jnp.asarray(images(16, seed=i)) for i in range(12)]\n"
        "loss = vae_train_step(vae, vae_opt, xs[0])"
    )  # compiled before the profiled cell
    report, cell = profile(
        ip, "for x in xs:\n    loss = vae_train_step(vae, vae_opt, x)\n", f"--trace {tmp_path}"
    )
    assert_counts_match(report, cell)
    assert report.function("vae_train_step").calls == 12


def test_background_thread_work_is_not_charged_to_a_sleeping_cell(ip):
    setup(ip)
    ip.run_cell("""
import threading, time
stop = threading.Event()
def background_loader():
    a = jnp.ones(4)
    while not stop.is_set():
        a = a * 1.0001
        time.sleep(0.002)
loader = threading.Thread(target=background_loader, daemon=True)
loader.start()
time.sleep(0.05)
""")
    try:
        report, cell = profile(ip, "time.sleep(0.3)")
    finally:
        ip.run_cell("stop.set(); loader.join()")
    assert report.eager_ops == {}, report.eager_ops
    assert "eager-ops" not in warnings_of(report)


def test_function_defined_in_the_profiled_cell_is_labelled_with_its_cell(ip):
    setup(ip)
    cell = run(
        ip,
        "%%jaxprofile -o -q\n@jax.jit\ndef double(v):\n    return v * 2\nout = double(jnp.ones(3))",
        store_history=True,
    )  # numbered as in a notebook
    assert cell.error is None
    defined = cell.result.result.function("double").defined_at
    assert defined == f"In[{cell.result.execution_count}]:1", defined  # the decorator, line 1 of the body


def test_int64_truncated_to_int32_is_reported(ip):
    setup(ip)
    ip.run_cell("import numpy as np")
    report, cell = profile(ip, "big = jnp.asarray(np.int64(2**40))")
    assert_counts_match(report, cell)
    assert "x64-truncated" in {i.kind for i in report.insights}


def test_abstract_model_for_an_orbax_restore_compiles_nothing(ip):
    """The Flax checkpoint guide's restore target: nnx.eval_shape builds the model abstractly."""
    setup(ip)
    report, cell = profile(
        ip,
        "abstract_model = nnx.eval_shape(lambda: MLP(rngs=nnx.Rngs(0)))\n"
        "graphdef, abstract_state = nnx.split(abstract_model)",
    )
    assert cell.compiles.total == 0
    assert_counts_match(report, cell)
