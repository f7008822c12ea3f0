"""%jaxpr, %jaxhlo and %jaxcheck on tutorial-style models in a real IPython shell.

Every case runs on fresh objects and asserts: the magic succeeds (or, for a bad call, fails
with a clear UsageError), every user object is exactly as before (graph, values, RNG counts,
Python attributes; pytree bytes for Linen/TrainState), and the XLA compiles the test's own
listener counted are the ones the magic must do (``%jaxpr`` compiles nothing, ``%jaxhlo``
one program).
"""

from __future__ import annotations

import pytest
from IPython.core.error import UsageError

from tests.realworld.shell import run, setup

pytestmark = [pytest.mark.realworld, pytest.mark.slow]  # whole models under every magic: ~1 min


def _case(model, line, expect):
    return pytest.param(model, line, expect, id=f"{model}:{line}")


# (model, magic line, text the report must contain)
SUCCESS = [
    # miniGPT: the forward pass, the tutorial's @nnx.jit methods, the training step
    _case("gpt", "%jaxpr gpt(prompt)", "dot_general"),
    _case("gpt", "%jaxpr gpt(prompt, training=True)", "dot_general"),
    _case("gpt", "%jaxpr gpt.generate_step(prompt, 2)", "top_k"),
    _case("gpt", "%jaxhlo gpt.generate_step(prompt, 2)", "stablehlo"),
    _case("gpt", "%jaxcheck gpt.generate_step(prompt, 2)", "clean"),
    _case("gpt", "%jaxpr gpt_train_step(gpt, gpt_opt, gpt_batch)", "dot_general"),
    _case("gpt", "%jaxcheck gpt_train_step(gpt, gpt_opt, gpt_batch)", "gpt_train_step"),
    # VAE: an encoder that samples with self.rngs.noise()
    _case("vae", "%jaxpr vae(x)", "random_bits"),
    _case("vae", "%jaxhlo vae(x)", "stablehlo"),
    _case("vae", "%jaxcheck vae(x)", "clean"),
    _case("vae", "%jaxpr vae_train_step(vae, vae_opt, x)", "random_bits"),
    # CNN: BatchNorm + Dropout, train and eval mode
    _case("cnn", "%jaxpr cnn_train_step(cnn, cnn_opt, metrics, batch)", "conv_general_dilated"),
    _case("cnn", "%jaxhlo cnn(batch['image'])", "stablehlo"),
    _case("cnn", "%jaxcheck cnn_eval_step(cnn, metrics, batch)", "clean"),
    # Linen + TrainState
    _case("linen", "%jaxpr linen_train_step(state, (Xl, yl))", "dot_general"),
    _case("linen", "%jaxhlo linen_train_step(state, (Xl, yl))", "stablehlo"),
    _case("linen", "%jaxcheck state.apply_fn({'params': state.params}, Xl)", "clean"),
    _case("linen", "%jaxcheck linen_train_step(state, (Xl, yl))", "linen_train_step"),
    # diffusion-style UNet
    _case("unet", "%jaxhlo unet(x0, t)", "stablehlo"),
    _case("unet", "%jaxcheck unet(x0, t)", "clean"),
    _case("unet", "%jaxpr unet_train_step(unet, unet_opt, x0, key)", "conv_general_dilated"),
    _case("unet", "%jaxcheck q_sample(x0, t, key)", "clean"),
]


@pytest.mark.parametrize("model,line,expect", SUCCESS)
def test_magic_succeeds_and_leaves_every_object_unchanged(ip, model, line, expect):
    names = setup(ip, model)
    cell = run(ip, line, names)
    assert cell.error is None, f"{line} failed: {cell.error}"
    assert cell.changed == [], f"{line} changed user objects: {cell.changed}"
    assert expect in cell.text, cell.text[:2000]
    magic = line.split()[0]
    if magic == "%jaxpr":  # nothing is compiled or executed
        assert cell.compiles.total == 0, dict(cell.compiles.by_name)
    elif magic == "%jaxhlo":  # exactly the one program shown
        assert cell.compiles.total == 1, dict(cell.compiles.by_name)


@pytest.mark.parametrize(
    "model,line,message",
    [
        ("gpt", "%jaxpr gpt.generate_step(prompt)", "sample_index"),
        ("gpt", "%jaxhlo gpt(prompt[:, :3].astype(jnp.float32))", "could not trace"),
        ("vae", "%jaxhlo vae(jnp.ones((2, 3)))", "dot_general"),
        ("vae", "%jaxcheck vae_train_step(vae, vae_opt)", "missing"),
        (
            "cnn",
            "%jaxcheck cnn_train_step(cnn, cnn_opt, metrics)",
            "missing 1 required positional argument: 'batch'",
        ),
        ("cnn", "%jaxpr cnn(batch['image'][:, :, :, 0])", "could not trace"),
        ("linen", "%jaxpr linen_train_step(state, (Xl[:, :3], yl))", "could not trace"),
        ("unet", "%jaxcheck unet(x0)", "missing 1 required positional argument: 't'"),
        ("unet", "%jaxhlo unet_train_step(unet, unet_opt, x0)", "missing"),
    ],
)
def test_bad_call_fails_clearly_and_changes_nothing(ip, model, line, message):
    names = setup(ip, model)
    cell = run(ip, line, names)
    assert isinstance(cell.error, UsageError), repr(cell.error)
    assert message in str(cell.error)
    assert "Traceback" not in cell.text
    assert cell.changed == [], f"{line} changed user objects: {cell.changed}"


def test_model_still_works_after_jaxpr_of_its_jitted_method(ip):
    """The issue's severe case: %jaxpr on the tutorial's generate_step must not strip the model."""
    setup(ip, "gpt")
    run(ip, "%jaxpr -q gpt.generate_step(prompt, 2)")
    assert hasattr(ip.user_ns["gpt"], "embedding_layer")
    cell = run(ip, "out = gpt.generate_text(2, [1, 2])")
    assert cell.error is None and len(ip.user_ns["out"]) == 4


def test_generate_loop_still_works_after_every_magic(ip):
    """After %jaxpr/%jaxhlo/%jaxcheck of the forward pass, the tutorial's generate loop runs."""
    names = setup(ip, "gpt")
    for line in ("%jaxpr -q gpt(prompt)", "%jaxhlo -q gpt(prompt)"):
        cell = run(ip, line, names)
        assert cell.error is None and cell.changed == []
    before = run(ip, "out = gpt.generate_text(3, [1, 2])")
    assert before.error is None and len(ip.user_ns["out"]) == 5


def test_check_signature_of_bound_method_uses_its_parameter_names(ip):
    names = setup(ip, "linen")
    cell = run(ip, "r = %jaxcheck -o state.apply_fn({'params': state.params}, Xl)", names)
    assert cell.error is None
    assert ip.user_ns["r"].signature.startswith("variables: dict")


def test_jaxpr_title_of_a_train_step_uses_the_users_names(ip):
    names = setup(ip, "gpt")
    cell = run(ip, "r = %jaxpr -o gpt_train_step(gpt, gpt_opt, gpt_batch)", names)
    assert cell.error is None and cell.changed == []
    title = ip.user_ns["r"].to_text().splitlines()[0]
    assert len(title) <= 200 and "states[0]" not in title, title[:300]


def test_token_id_past_the_vocabulary_is_found_with_its_line(ip):
    names = setup(ip, "gpt")
    ip.run_cell("bad_prompt = jnp.array([[1, 2, VOCAB + 8, 0, 0, 0, 0, 0]])")
    cell = run(ip, "r = %jaxcheck -o gpt.embedding_layer(bad_prompt)", names + ["bad_prompt"])
    assert cell.error is None and cell.changed == []
    finding = ip.user_ns["r"].finding("index")
    assert finding is not None
    assert finding.source is not None and "token_emb" in finding.source, finding.source
    assert "clamp" not in (finding.silent + finding.message).lower()
