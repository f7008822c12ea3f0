"""%jaxtree, %jaxsharding and %jaxdevices on tutorial-style models, optimizers, a Linen
TrainState and Orbax checkpoints written by hand (StandardCheckpointer, CheckpointManager).

Every view is checked against numbers computed independently, and every user object (and
every checkpoint file) is unchanged afterwards, on success and on failure.
"""

from __future__ import annotations

import math

import jax
import pytest
from flax import nnx
from IPython.core.error import UsageError

from tests.realworld.models import MLP, save_standard, save_with_manager
from tests.realworld.shell import run, setup

pytestmark = [pytest.mark.realworld, pytest.mark.slow]  # whole models under every magic: ~1 min


def files_of(directory) -> list[tuple[str, int, int]]:
    """Every file under ``directory`` with its size and modification time."""
    return sorted((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in directory.rglob("*"))


def param_elements(model) -> int:
    return sum(math.prod(x.shape) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


def stored_elements(model) -> int:
    """Elements Orbax stores for ``nnx.state(model)``: typed PRNG keys as their key data."""

    def size(x):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            x = jax.random.key_data(x)
        return math.prod(x.shape)

    return sum(size(x) for x in jax.tree.leaves(nnx.state(model)))


@pytest.mark.parametrize(
    "model,expr,kind",
    [
        ("gpt", "gpt", "Param"),
        ("gpt", "gpt_opt", "OptState"),
        ("vae", "vae", "RngState"),
        ("cnn", "cnn", "BatchStat"),
        ("cnn", "metrics", None),
        ("linen", "state", None),
        ("unet", "nnx.state(unet, nnx.Param)", "Param"),
    ],
)
def test_jaxtree_of_user_objects(ip, model, expr, kind):
    names = setup(ip, model)
    cell = run(ip, f"r = %jaxtree -o -q {expr}", names)
    assert cell.error is None and cell.changed == []
    summary = ip.user_ns["r"]
    leaves = jax.tree.leaves(eval(expr, ip.user_ns))  # independent count of array elements
    assert summary.totals.elements == sum(math.prod(getattr(x, "shape", ())) for x in leaves)
    if kind is not None:
        assert kind in summary.by_kind(), list(summary.by_kind())
    if model == "gpt" and expr == "gpt":
        assert summary.by_kind()["Param"].elements == param_elements(ip.user_ns["gpt"])
    shown = run(ip, f"%jaxtree {expr}", names)
    assert shown.error is None and shown.changed == [] and "TreeSummary" in shown.text


@pytest.mark.parametrize(
    "line,message",
    [
        ("gpt --kind Nope", "no leaves of kind 'Nope'"),
        ("gpt --depth deep", "--depth"),
        ("gpt.no_such_layer", "AttributeError"),
        ("gpt_opt --grep '('", "grep"),
    ],
)
def test_jaxtree_bad_requests_fail_clearly_and_change_nothing(ip, line, message):
    names = setup(ip, "gpt")
    cell = run(ip, f"%jaxtree {line}", names)
    assert isinstance(cell.error, UsageError), (line, cell.error)
    assert message in str(cell.error)
    assert cell.changed == []


@pytest.mark.parametrize("expr", ["gpt", "gpt_chain_opt"])
def test_jaxtree_has_no_false_shared_reference_notes(ip, expr):
    names = setup(ip, "gpt")
    ip.run_cell(
        "gpt_chain_opt = nnx.Optimizer(gpt, optax.chain(optax.clip_by_global_norm(1.0), "
        "optax.adamw(1e-3)), wrt=nnx.Param)"
    )
    cell = run(ip, f"r = %jaxtree -o -q {expr}", names + ["gpt_chain_opt"])
    assert cell.error is None and cell.changed == []
    assert not [n for n in ip.user_ns["r"].notes if "shared reference" in n], ip.user_ns["r"].notes


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """A StandardCheckpointer save and a CheckpointManager directory, written by hand."""
    root = tmp_path_factory.mktemp("user_ckpts")
    model = MLP(rngs=nnx.Rngs(0))
    save_standard(model, root / "standard")
    save_with_manager(model, root / "managed", steps=(1, 2))
    return root, stored_elements(model), model


def test_quoted_checkpoint_paths(ip, checkpoints):
    root, elements, _ = checkpoints
    before = files_of(root)
    for line in (f"'{root}/standard'", f"'{root}/managed' --step 1", f"'{root}/managed'"):
        cell = run(ip, f"r = %jaxtree -o -q {line}")
        assert cell.error is None, (line, cell.error)
        assert ip.user_ns["r"].totals.elements == elements, line
    assert files_of(root) == before


def test_bad_checkpoint_requests_fail_clearly_and_touch_nothing(ip, checkpoints):
    root, _, _ = checkpoints
    before = files_of(root)
    for line, message in ((f"'{root}/managed' --step 7", "7"), (f"'{root}/missing'", "no such file")):
        cell = run(ip, f"%jaxtree {line}")
        assert isinstance(cell.error, UsageError), (line, cell.error)
        assert message in str(cell.error)
    assert files_of(root) == before


@pytest.mark.parametrize("form", ["absolute", "relative", "home"])
def test_bare_checkpoint_paths(ip, checkpoints, monkeypatch, form):
    root, elements, _ = checkpoints
    monkeypatch.chdir(root)
    monkeypatch.setenv("HOME", str(root))
    path = {"absolute": f"{root}/managed", "relative": "managed", "home": "~/managed"}[form]
    before = files_of(root)
    cell = run(ip, f"r = %jaxtree -o -q {path} --step 2")
    assert cell.error is None, cell.error
    assert ip.user_ns["r"].totals.elements == elements
    assert files_of(root) == before


SHARDING_SETUP = """
from jax.sharding import NamedSharding, PartitionSpec as P
mesh = jax.make_mesh((8,), ('data',))
xs = jax.device_put(images(16), NamedSharding(mesh, P('data')))
vae_state = nnx.state(vae)
"""


def test_jaxsharding_of_a_batch_sharded_over_data(ip):
    names = setup(ip, "vae") + ["xs", "vae_state", "mesh"]
    ip.run_cell(SHARDING_SETUP)
    cell = run(ip, "r = %jaxsharding -o -q xs", names)
    assert cell.error is None and cell.changed == []
    assert list(ip.user_ns["r"].device_bytes().values()) == [16 * 8 * 8 * 4 // 8] * 8
    for bad in (
        "%jaxsharding xs --spec 'nope'",
        "%jaxsharding undefined_state",
        "%jaxsharding xs --shape abc",
    ):
        cell = run(ip, bad, names)
        assert isinstance(cell.error, UsageError), (bad, cell.error)
        assert cell.changed == []


def test_jaxsharding_of_a_model_state_with_rngs_counts_every_array(ip):
    names = setup(ip, "vae") + ["xs", "vae_state", "mesh"]
    ip.run_cell(SHARDING_SETUP)
    cell = run(ip, "r = %jaxsharding -o -q vae_state", names)
    assert cell.error is None and cell.changed == []
    leaves = jax.tree.leaves(ip.user_ns["vae_state"])
    report = ip.user_ns["r"]
    assert len(report.arrays) == len(leaves)
    assert report.logical_bytes == sum(x.nbytes for x in leaves)


def test_jaxdevices(ip):
    cell = run(ip, "r = %jaxdevices -o -q")
    assert cell.error is None
    assert len(ip.user_ns["r"].devices) == len(jax.devices()) == 8
