"""%jaxpr, %jaxhlo and %jaxcheck on models written the way the JAX AI stack tutorials and the
Flax examples write them: a miniGPT with ``@nnx.jit`` methods and a generate loop, a VAE whose
encoder samples from ``nnx.Rngs``, a CNN with BatchNorm and Dropout, an ``nnx.jit`` train step
with an optimizer. Every magic must work on them and leave every user object exactly as it
was (fingerprinted: graph, values, RNG counts, Python attributes), on success and on failure.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest
from flax import nnx
from IPython.utils.capture import capture_output

from jaxmagic.check import check_call
from jaxmagic.ir import NotTraceableError, inspect_call
from tests.fingerprint import fingerprint, namespace_fingerprint

# compiles the tutorial models under every magic (~15 s): the whole suite runs it, not the fast loop
pytestmark = pytest.mark.slow

MODELS = """
import jax, jax.numpy as jnp, optax
from flax import nnx

vocab, maxlen, dim, heads = 16, 8, 8, 2

class TransformerBlock(nnx.Module):
    def __init__(self, rngs):
        self.attn = nnx.MultiHeadAttention(heads, dim, dropout_rate=0.1, decode=False, rngs=rngs)
        self.ln1 = nnx.LayerNorm(dim, rngs=rngs)
        self.ln2 = nnx.LayerNorm(dim, rngs=rngs)
        self.mlp = nnx.Linear(dim, dim, rngs=rngs)
        self.drop = nnx.Dropout(0.1, rngs=rngs)

    def __call__(self, x, training: bool = False):
        mask = nnx.make_causal_mask(jnp.ones(x.shape[:2]))
        x = x + self.attn(self.ln1(x), mask=mask, deterministic=not training)
        return x + self.drop(nnx.relu(self.mlp(self.ln2(x))), deterministic=not training)

class MiniGPT(nnx.Module):
    def __init__(self, rngs):
        self.token_emb = nnx.Embed(vocab, dim, rngs=rngs)
        self.pos_emb = nnx.Embed(maxlen, dim, rngs=rngs)
        self.blocks = nnx.List([TransformerBlock(rngs) for _ in range(2)])
        self.head = nnx.Linear(dim, vocab, rngs=rngs)

    def __call__(self, tokens, training: bool = False):
        x = self.token_emb(tokens) + self.pos_emb(jnp.arange(tokens.shape[1]))
        for block in self.blocks:
            x = block(x, training=training)
        return self.head(x)

    @nnx.jit
    def sample_from(self, logits):
        logits, indices = jax.lax.top_k(logits, k=4)
        return jax.random.choice(jax.random.PRNGKey(0), indices, p=nnx.softmax(logits))

    @nnx.jit(donate_argnums=(1,))
    def generate_step(self, padded_tokens, sample_index):
        logits = self(padded_tokens)
        return self.sample_from(logits[0][sample_index])

    def generate_text(self, max_tokens, start_tokens):
        generated = []
        for _ in range(max_tokens):
            sample_index = len(start_tokens) + len(generated) - 1
            padded = jnp.array(start_tokens + generated
                               + [0] * (maxlen - len(start_tokens) - len(generated)))[None, :]
            generated.append(int(self.generate_step(padded, sample_index)))
        return generated

class Encoder(nnx.Module):
    def __init__(self, din, dmid, dout, *, rngs):
        self.linear1 = nnx.Linear(din, dmid, rngs=rngs)
        self.linear_mean = nnx.Linear(dmid, dout, rngs=rngs)
        self.linear_std = nnx.Linear(dmid, dout, rngs=rngs)
        self.rngs = rngs

    def __call__(self, x):
        x = nnx.relu(self.linear1(x))
        mean, std = self.linear_mean(x), jnp.exp(self.linear_std(x))
        z = mean + std * jax.random.normal(self.rngs.noise(), mean.shape)
        return z, mean, std

class VAE(nnx.Module):
    def __init__(self, din, hidden, latent, *, rngs):
        self.encoder = Encoder(din, hidden, latent, rngs=rngs)
        self.decoder = nnx.Linear(latent, din, rngs=rngs)

    def __call__(self, x):
        z, mean, std = self.encoder(x)
        return nnx.sigmoid(self.decoder(z)), mean, std

class CNN(nnx.Module):
    def __init__(self, rngs):
        self.conv = nnx.Conv(1, 4, kernel_size=(3, 3), rngs=rngs)
        self.bn = nnx.BatchNorm(4, rngs=rngs)
        self.dropout = nnx.Dropout(0.25, rngs=rngs)
        self.out = nnx.Linear(4 * 6 * 6, 3, rngs=rngs)

    def __call__(self, x, training: bool = False):
        x = nnx.relu(self.bn(self.conv(x), use_running_average=not training))
        x = nnx.avg_pool(x, window_shape=(2, 2), strides=(2, 2))
        x = self.dropout(x.reshape(x.shape[0], -1), deterministic=not training)
        return self.out(x)

class MLP(nnx.Module):
    def __init__(self, din, dmid, dout, *, rngs):
        self.linear1 = nnx.Linear(din, dmid, rngs=rngs)
        self.dropout = nnx.Dropout(0.2, rngs=rngs)
        self.linear2 = nnx.Linear(dmid, dout, rngs=rngs)

    def __call__(self, x, training: bool = False):
        x = self.dropout(nnx.relu(self.linear1(x)), deterministic=not training)
        return self.linear2(x)

def loss_fn(model, batch):
    logits = model(batch["inputs"], training=True)
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch["labels"]).mean()

@nnx.jit
def train_step(model, optimizer, batch):
    loss, grads = nnx.value_and_grad(loss_fn)(model, batch)
    optimizer.update(model, grads)
    return loss

gpt = MiniGPT(nnx.Rngs(0, dropout=1))
vae = VAE(12, 8, 4, rngs=nnx.Rngs(0, noise=2))
cnn = CNN(nnx.Rngs(0, dropout=3))
mlp = MLP(6, 8, 3, rngs=nnx.Rngs(0, dropout=5))
optimizer = nnx.Optimizer(gpt, optax.adamw(1e-3), wrt=nnx.Param)
mlp_optimizer = nnx.Optimizer(mlp, optax.sgd(0.1), wrt=nnx.Param)
tokens = jnp.array([[1, 5, 7, 2, 0, 0, 0, 0]])
batch = {"inputs": jnp.tile(tokens, (2, 1)), "labels": jnp.ones((2, 8), jnp.int32)}
mlp_batch = {"inputs": jnp.linspace(-1.0, 1.0, 12).reshape(2, 6), "labels": jnp.array([0, 2])}
images = jnp.ones((2, 12, 12, 1))
pixels = jnp.linspace(0.0, 1.0, 24).reshape(2, 12)
"""

FAILING = '''
class Sampler(nnx.Module):
    """Draws noise, then fails in the ways user code fails."""
    def __init__(self, rngs):
        self.lin = nnx.Linear(4, 4, rngs=rngs)
        self.rngs = rngs
        self.steps = nnx.Variable(jnp.zeros((), jnp.int32))
        self.label = "sampler"

    @nnx.jit
    def untraceable(self, x):
        self.steps[...] += 1
        noisy = self.lin(x) + jax.random.normal(self.rngs.noise(), x.shape)
        if noisy.sum() > 0:
            return noisy
        return -noisy

    @nnx.jit
    def raising(self, x):
        self.steps[...] += 1
        self.label = "changed"
        raise ValueError("boom in raising")

    @nnx.jit
    def step(self, x):
        self.steps[...] += 1
        return self.lin(x) + jax.random.normal(self.rngs.noise(), x.shape)

sampler = Sampler(nnx.Rngs(0, noise=4))
x4 = jnp.ones((2, 4))
'''


def run(ip, cell):
    """Run a cell; its result and all it showed as text."""
    with capture_output() as cap:
        result = ip.run_cell(cell)
    shown = "".join(o.data.get("text/plain", "") + "\n" for o in cap.outputs)
    return result, cap.stdout + cap.stderr + shown


@pytest.fixture(scope="module")
def models_shell(ipshell):
    """The session shell with the models defined once for this module (they are small, but
    building them 38 times is not); every name they add is removed at the end."""
    before = set(ipshell.user_ns)
    assert ipshell.run_cell(MODELS).success and ipshell.run_cell(FAILING).success
    yield ipshell
    for name in set(ipshell.user_ns) - before:
        ipshell.user_ns.pop(name, None)


@pytest.fixture
def mip(models_shell):
    if "jaxmagic" not in models_shell.extension_manager.loaded:
        models_shell.run_line_magic("load_ext", "jaxmagic")
    return models_shell


def result_of(ip, line):
    res, _ = run(ip, line)
    assert res.success, (line, res.error_in_exec)
    return res.result


# -- miniGPT: nnx.jit methods, a donating generate step, a generate loop -------------------


def test_jaxpr_of_an_nnx_jit_method_works_and_leaves_the_model_as_it_was(mip):
    before = namespace_fingerprint(mip.user_ns)
    r = result_of(mip, "%jaxpr -o gpt.generate_step(tokens, 3)")
    assert "dot_general" in r.jaxpr and r.out_signature == "i32[]"
    assert r.signature == "padded_tokens: i32[1,8], sample_index: i32[]"
    assert namespace_fingerprint(mip.user_ns) == before
    assert hasattr(mip.user_ns["gpt"], "blocks") and not mip.user_ns["tokens"].is_deleted()


def test_generate_loop_gives_the_same_tokens_after_every_magic(mip):
    expected = mip.user_ns["gpt"].generate_text(4, [1, 5, 7])
    for line in (
        "%jaxpr -q gpt.generate_step(tokens, 3)",
        "%jaxhlo -q --optimized gpt.generate_step(tokens, 3)",
        "%jaxcheck -q gpt.generate_step(tokens, 3)",
        "%jaxpr -q gpt.sample_from(jnp.arange(16.0))",
    ):
        result_of(mip, line)
    assert mip.user_ns["gpt"].generate_text(4, [1, 5, 7]) == expected


def test_title_is_the_users_call_not_nnx_state_paths(mip):
    r = result_of(mip, "%jaxpr -o train_step(gpt, optimizer, batch)")
    head = r.to_text().splitlines()[0]
    assert head == "jaxpr of train_step(model: MiniGPT, optimizer: Optimizer, batch: dict(2 leaves)) -> f32[]"
    assert "states[" not in r.to_text().splitlines()[0] and len(head) < 200
    r = inspect_call(
        mip.user_ns["gpt"].generate_step, mip.user_ns["tokens"], 3, call_name="gpt.generate_step"
    )
    assert r.summary().startswith("jaxpr of gpt.generate_step(padded_tokens: i32[1,8], ")


def test_title_is_bounded_for_many_arguments():
    def many(*xs):
        return sum(x.sum() for x in xs)

    r = inspect_call(many, *[jnp.ones((3, 4))] * 40)
    assert len(r.signature) <= 160 and r.signature.endswith(", …")


def test_training_flag_is_static_and_dropout_runs_in_the_trace(mip):
    before = namespace_fingerprint(mip.user_ns)
    train = result_of(mip, "%jaxpr -o gpt(tokens, training=True)")
    infer = result_of(mip, "%jaxpr -o gpt(tokens, training=False)")
    assert "random_bits" in train.jaxpr and "random_bits" not in infer.jaxpr
    assert train.signature == "tokens: i32[1,8], training=True"
    r = result_of(mip, "%jaxpr -o nnx.Dropout(0.5, rngs=nnx.Rngs(0))(x4, deterministic=True)")
    assert "random_bits" not in r.jaxpr and r.signature == "inputs: f32[2,4], deterministic=True"
    assert namespace_fingerprint(mip.user_ns) == before


def test_string_argument_is_static_and_picks_the_branch_in_every_magic(mip):
    """A Python ``str`` picks code (an activation by name): kept static, never traced."""
    mip.run_cell(
        "class Act(nnx.Module):\n"
        "    def __init__(self, rngs):\n"
        "        self.lin = nnx.Linear(4, 4, rngs=rngs)\n"
        "    def __call__(self, x, act='relu'):\n"
        "        y = self.lin(x)\n"
        "        return jnp.tanh(y) if act == 'tanh' else nnx.relu(y)\n"
        "act_model = Act(nnx.Rngs(0))"
    )
    before = namespace_fingerprint(mip.user_ns)
    tanh = result_of(mip, "%jaxpr -o act_model(x4, 'tanh')")
    relu = result_of(mip, "%jaxpr -o act_model(x4, act='relu')")
    assert "tanh" in tanh.jaxpr and "max" not in tanh.jaxpr
    assert "max" in relu.jaxpr and "tanh" not in relu.jaxpr
    assert tanh.signature == "x: f32[2,4], act='tanh'" and relu.signature == "x: f32[2,4], act='relu'"
    assert "tanh" in result_of(mip, "%jaxhlo -o act_model(x4, 'tanh')").stablehlo
    assert result_of(mip, "%jaxcheck -o act_model(x4, 'tanh')").findings == ()
    assert namespace_fingerprint(mip.user_ns) == before
    mip.user_ns.pop("act_model"), mip.user_ns.pop("Act")


def test_jaxhlo_of_the_donating_generate_step(mip):
    r = result_of(mip, "%jaxhlo -o gpt.generate_step(tokens, 3)")
    assert r.stage == "stablehlo" and r.cost["flops"] > 0 and r.memory["argument_bytes"] > 0
    assert not mip.user_ns["tokens"].is_deleted()


def test_out_of_range_token_is_found_with_what_embed_really_did(mip):
    r = result_of(mip, "%jaxcheck -o gpt(jnp.array([[1, 20, 3, 0, 0, 0, 0, 0]]))")
    f = r.finding("index")
    assert "index 20 is out of bounds for axis 0 with size 16" in f.message
    assert f.source == "x = self.token_emb(tokens) + self.pos_emb(jnp.arange(tokens.shape[1]))"
    assert "fill value (NaN)" in f.silent and "clamped" not in f.silent
    assert r.finding("nan") is not None  # the NaN row flows on, as plain JAX would


def test_train_step_with_integer_label_cross_entropy_runs_the_checks_that_work(mip):
    before = namespace_fingerprint(mip.user_ns)
    r = result_of(mip, "%jaxcheck -o train_step(mlp, mlp_optimizer, mlp_batch)")
    assert r.checks == ("nan", "div", "user") and r.skipped == ("index",)
    assert any(n.startswith("index checks skipped: checkify could not transform") for n in r.notes)
    assert r.clean and r.summary().endswith("clean (nan, div, user checks; index skipped)")
    assert "index skipped" in r.to_text().splitlines()[1]
    assert namespace_fingerprint(mip.user_ns) == before  # no optimizer step was taken
    assert int(mip.user_ns["mlp_optimizer"].step[...]) == 0


# -- VAE: an encoder that samples from nnx.Rngs ------------------------------------------


@pytest.mark.parametrize("magic", ["%jaxpr", "%jaxhlo", "%jaxcheck"])
def test_vae_sampling_works_and_no_rng_counter_advances(mip, magic):
    vae = mip.user_ns["vae"]
    count = int(vae.encoder.rngs.noise.count[...])
    before = fingerprint(vae)
    result_of(mip, f"{magic} -q vae(pixels)")
    assert int(vae.encoder.rngs.noise.count[...]) == count
    assert fingerprint(vae) == before
    vae(mip.user_ns["pixels"])  # the user's own call still advances it
    assert int(vae.encoder.rngs.noise.count[...]) == count + 1


# -- CNN: BatchNorm statistics and Dropout -----------------------------------------------


def test_batchnorm_statistics_stay_untouched(mip):
    cnn = mip.user_ns["cnn"]
    mean = jnp.array(cnn.bn.mean[...])
    for magic in ("%jaxpr", "%jaxhlo", "%jaxcheck"):
        result_of(mip, f"{magic} -q cnn(images, training=True)")
    assert jnp.array_equal(cnn.bn.mean[...], mean)
    r = result_of(mip, "%jaxcheck -o cnn(images, training=True)")
    assert r.clean and r.signature == "x: f32[2,12,12,1], training: bool"


# -- findings on real code: inf, integer division, source lines --------------------------


def test_inf_from_log_of_zero_is_reported_with_its_line(mip):
    mip.run_cell("def neg_log_likelihood(p):\n    return -jnp.log(p).sum()")
    r = result_of(mip, "%jaxcheck -o neg_log_likelihood(jnp.array([0.0, 0.5]))")
    f = r.finding("inf")
    assert not r.clean and f.title == "inf produced" and f.primitive == "log"
    assert f.source == "return -jnp.log(p).sum()" and f.where.endswith("line 2")
    _, out = run(mip, "%jaxcheck neg_log_likelihood(jnp.array([0.0, 0.5]))")
    assert "✗ inf produced: inf generated by primitive: log." in out


def test_masked_attention_infs_that_never_reach_the_result_are_not_blamed():
    def attention(scores):
        masked = jnp.where(jnp.tril(jnp.ones((3, 3), bool)), scores, -jnp.inf)
        return jax.nn.softmax(masked, axis=-1)

    assert check_call(attention, jnp.ones((3, 3))).clean


def test_inf_already_in_the_input_is_a_note_not_a_finding():
    r = check_call(lambda x: x * 2.0, jnp.array([jnp.inf, 1.0]))
    assert r.clean and "the result contains inf that an input already held" in r.notes


def test_integer_division_and_take_findings_have_their_source_line(mip):
    mip.run_cell(
        "def per_bucket(counts, sizes):\n    return counts // sizes\n"
        "def lookup(table, ids):\n    return jnp.take(table, ids, axis=0)"
    )
    f = result_of(mip, "%jaxcheck -o per_bucket(jnp.array([4, 6]), jnp.array([2, 0]))").finding("div")
    assert f.source == "return counts // sizes" and f.where.endswith("line 2")
    f = result_of(mip, "%jaxcheck -o lookup(jnp.ones((3, 2)), jnp.array([5]))").finding("index")
    assert f.source == "return jnp.take(table, ids, axis=0)" and f.where.endswith("line 4")


# -- Python numbers used as Python values ------------------------------------------------


def test_int_used_as_a_loop_count_is_kept_static_with_a_note(mip):
    mip.run_cell("def repeat(x, n):\n    for _ in range(n):\n        x = jnp.sin(x)\n    return x")
    r = result_of(mip, "%jaxpr -o repeat(x4, 3)")
    assert r.jaxpr.count("sin") == 3
    assert r.notes == (
        (
            "Python numbers were kept static (n=3): traced as arrays, the call fails "
            "with TracerIntegerConversionError."
        ),
    )
    assert "note: Python numbers were kept static (n=3)" in r.to_text()
    assert result_of(mip, "%jaxcheck -o repeat(x4, 3)").clean


# -- the guarantee: every user object unchanged, on success and on every failure path ----

CASES = {
    "success": ("sampler.step(x4)", True),
    "untraceable": ("sampler.untraceable(x4)", False),
    "raising": ("sampler.raising(x4)", False),
    "bad args": ("sampler.step(jnp.ones((2, 7)))", False),
    "missing arg": ("sampler.step()", False),
    "module wrong shape": ("gpt(jnp.ones((1, 8, 3)))", False),
}


@pytest.mark.parametrize("magic", ["%jaxpr", "%jaxhlo", "%jaxcheck"])
@pytest.mark.parametrize("case", list(CASES))
def test_every_user_object_is_unchanged(mip, magic, case):
    call, ok = CASES[case]
    before = namespace_fingerprint(mip.user_ns)
    assert {"gpt", "optimizer", "vae", "cnn", "mlp", "sampler", "tokens", "batch"} <= set(before)
    res, _ = run(mip, f"{magic} -q {call}")
    assert res.success is ok, res.error_in_exec
    assert namespace_fingerprint(mip.user_ns) == before
    sampler = mip.user_ns["sampler"]
    assert hasattr(sampler, "lin") and sampler.label == "sampler"
    assert int(sampler.steps[...]) == 0 and int(sampler.rngs.noise.count[...]) == 0


def test_failures_say_what_failed(mip):
    for magic in ("%jaxpr", "%jaxhlo", "%jaxcheck"):
        res, _ = run(mip, f"{magic} sampler.untraceable(x4)")
        assert "TracerBoolConversionError" in str(res.error_in_exec)
        assert "if noisy.sum() > 0:" in str(res.error_in_exec)
        res, _ = run(mip, f"{magic} sampler.raising(x4)")
        assert "JAX could not trace" in str(res.error_in_exec) and "boom in raising" in str(res.error_in_exec)


def test_a_closure_that_changes_a_global_model_is_refused_with_a_hint(mip):
    mip.run_cell(
        "def noisy_global(x):\n    return sampler.lin(x) + jax.random.normal(sampler.rngs.noise(), x.shape)"
    )
    before = namespace_fingerprint(mip.user_ns)
    with pytest.raises(NotTraceableError, match="pass that object as an argument"):
        inspect_call(mip.user_ns["noisy_global"], mip.user_ns["x4"])
    with pytest.raises(NotTraceableError, match="pass that object as an argument"):
        check_call(mip.user_ns["noisy_global"], mip.user_ns["x4"])
    assert namespace_fingerprint(mip.user_ns) == before


def test_the_fingerprint_sees_each_kind_of_change():
    model = nnx.Dropout(0.5, rngs=nnx.Rngs(0))
    fp = fingerprint(model)
    model(jnp.ones(3))  # advances the RNG counter
    assert fingerprint(model) != fp
    lin = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
    fp = fingerprint(lin)
    lin.kernel[...] = lin.kernel[...] + 1
    assert fingerprint(lin) != fp
    fp = fingerprint(lin)
    lin.note = "attribute"
    assert fingerprint(lin) != fp
    fp = fingerprint(lin)
    del lin.bias
    assert fingerprint(lin) != fp
    x = jnp.ones(3)
    fp = fingerprint(x)
    jax.jit(lambda a: a, donate_argnums=0)(x)
    assert fingerprint(x) != fp


# -- the three faces carry notes and skipped checks --------------------------------------


def test_faces_carry_notes_and_skipped_checks(mip):
    import json

    from jaxmagic.check import CheckReport

    r = result_of(mip, "%jaxcheck -o train_step(mlp, mlp_optimizer, mlp_batch)")
    assert "checks: nan, div, user; skipped: index" in r.to_html()
    assert json.loads(r.to_json())["skipped"] == ["index"]
    mip.run_cell("def repeat(x, n):\n    for _ in range(n):\n        x = jnp.sin(x)\n    return x")
    ir = result_of(mip, "%jaxpr -o repeat(x4, 2)")
    assert "note: Python numbers were kept static (n=2)" in ir.to_html()
    assert json.loads(ir.to_json())["notes"] == list(ir.notes)
    nothing = CheckReport(
        name="f",
        signature="x: f32[2]",
        checks=(),
        findings=(),
        output="f32[2]",
        seconds=0.1,
        notes=("index checks skipped: ...",),
        skipped=("index",),
    )
    assert not nothing.clean and nothing.summary() == "f(x: f32[2]): no checks could run (index skipped)"
    assert nothing.to_text().splitlines()[1].startswith("nothing checked (no check could run; index skipped)")
    assert "nothing checked" in nothing.to_html() and "No errors found" not in nothing.to_html()


def test_argument_list_names_each_kind_compactly():
    from jaxmagic._calls import describe_args

    def f(params, state, n, lr, flag, name, fn, rest=None):
        return params

    lin = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
    args = ({"w": jnp.ones(3)}, nnx.state(lin), 3, 0.5, True, "relu", jnp.tanh)
    assert describe_args(f, args, {}) == (
        "params: dict(1 leaves), state: State(2 leaves), n: i32[], lr: f32[], flag=True, name='relu', fn=tanh"
    )
    assert describe_args(f, args, {}, values=False).startswith(
        "params: dict, state: State, n: int, lr: float, flag: bool, name: str, fn: "
    )
    assert describe_args(lin, (jnp.ones((4, 2)),), {}) == "inputs: f32[4,2]"


def test_linen_train_state_step_titles_its_value_as_the_user_sees_it():
    import flax.linen as nn
    import optax
    from flax.training import train_state

    class Classifier(nn.Module):
        @nn.compact
        def __call__(self, x, training: bool = False):
            x = nn.Dropout(0.5, deterministic=not training)(nn.relu(nn.Dense(4)(x)))
            return nn.Dense(3)(x)

    model, x = Classifier(), jnp.ones((2, 5))
    state = train_state.TrainState.create(
        apply_fn=model.apply, tx=optax.adam(1e-3), params=model.init(jax.random.key(0), x)["params"]
    )

    @jax.jit
    def train_step(state, batch, key):
        def loss_fn(params):
            logits = state.apply_fn({"params": params}, batch["x"], training=True, rngs={"dropout": key})
            return optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()

        loss, grads = jax.value_and_grad(loss_fn)(state.params)
        return state.apply_gradients(grads=grads), loss

    batch, before = {"x": x, "y": jnp.array([0, 2])}, fingerprint(state)
    r = inspect_call(train_step, state, batch, jax.random.key(1))
    assert r.to_text().splitlines()[0] == (
        "jaxpr of train_step(state: TrainState(14 leaves), "
        "batch: dict(2 leaves), key: key<fry>[]) -> "
        "TrainState(14 leaves), f32[]"
    )
    assert check_call(train_step, state, batch, jax.random.key(1)).skipped == ("index",)
    assert fingerprint(state) == before


def test_a_jit_functions_static_arguments_show_their_values():
    import functools

    @functools.partial(jax.jit, static_argnums=1, static_argnames="mode")
    def smooth(x, n, params, mode="same"):
        for _ in range(n):
            x = jnp.sin(x) * params["w"]
        return x if mode == "same" else -x

    r = inspect_call(smooth, jnp.ones(3), 2, {"w": jnp.ones(3)}, mode="flip")
    assert r.signature == "x: f32[3], n=2, params: dict(1 leaves), mode='flip'"


@pytest.mark.parametrize(
    "fn,said",
    [
        (lambda x, i: x[i], "the index was clamped into range (a dynamic slice's start index"),
        (lambda x, i: x[jnp.array([i])], "the out-of-bounds read was clamped to the nearest valid index"),
        (lambda x, i: jnp.take(x, i), "returned the fill value (NaN) instead of an element"),
        (lambda x, i: jnp.take(x, i, mode="clip"), "the out-of-bounds read was clamped"),
        (lambda x, i: x.at[i].set(0.0), "the out-of-bounds write was dropped"),
        (lambda x, i: x.at[i].set(0.0, mode="clip"), "the out-of-bounds write was clamped"),
    ],
)
def test_out_of_bounds_findings_say_what_the_operation_did(fn, said):
    f = check_call(fn, jnp.arange(3.0), 7).finding("index")
    assert said in f.silent and f.source is not None
