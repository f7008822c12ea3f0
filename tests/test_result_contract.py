"""Every result type keeps the Result contract, checked once for all of them: a one-line repr,
the full text, self-contained HTML and a JSON-serialisable to_dict.

Each result is built from real, tiny objects (real JAX compiles, a real NNX model, a real
Orbax checkpoint, a real training run), the way pyinstrument's ``test_renderers`` runs every
renderer over one real session. The faces:

- ``repr``: one short line ``Type(...)``;
- ``text/plain`` through IPython's pretty printer: the full text report (``to_text()``);
- ``_repr_html_``: balanced, self-contained HTML that says something;
- ``to_dict()``: strict JSON (no NaN) that survives ``json.dumps`` then ``json.loads`` unchanged.

A new ``Result`` subclass without an entry in ``BUILDERS`` fails ``test_every_result_type_is_covered``.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from IPython.lib.pretty import pretty
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import jaxmagic
from jaxmagic._result import Result
from tests.helpers import TinyMLP, dataset, loss_fn, one_device, parse_html

# builds every result type from real objects once (~10 s): the whole suite runs it, not the fast loop
pytestmark = pytest.mark.slow


def _profile() -> Result:
    from jaxmagic.profile import Profiler

    @jax.jit
    def f(x):
        return jnp.sin(x) * 2

    with Profiler() as prof:
        f(jnp.ones(3))
        f(jnp.ones(4))  # a recompile, with its reason
        jnp.ones(2) + 1  # an eager op
    return prof.report()


def _profile_memory() -> Result:
    from jaxmagic.profile import Profiler

    ns: dict[str, Any] = {}
    with Profiler() as prof:
        ns["w"] = jax.jit(lambda x: x * 2, donate_argnums=0)(jnp.ones((8, 8)))
    return prof.report(namespace=ns)


def _profile_incomplete() -> Result:
    from jaxmagic.profile import Profiler

    prof = Profiler()
    with pytest.raises(KeyError):
        with prof:
            jax.jit(lambda x: x + 1)(jnp.ones(2))
            raise KeyError("boom")
    return prof.report()


def _scan(x):
    return jax.lax.scan(lambda c, a: (c + a, c), 0.0, x)[0]


def _ir(stage: str, optimized: bool = False) -> Callable[[], Result]:
    def build() -> Result:
        from jaxmagic.ir import inspect_call

        return inspect_call(_scan, jnp.ones(3), stage=stage, optimized=optimized)

    return build


def _check(index: int) -> Callable[[], Result]:
    def build() -> Result:
        from jaxmagic.check import check_call

        def pick(x, i):
            return jnp.log(x[i])

        return check_call(pick, jnp.arange(3.0), index)

    return build


def _tree_model() -> Result:
    return jaxmagic.tree(TinyMLP(rngs=nnx.Rngs(0), batchnorm=True, dropout=0.1), name="<model>")


def _tree_sharded() -> Result:
    mesh = jax.make_mesh((2, 4), ("data", "model"))
    x = jax.device_put(jnp.ones((8, 16)), NamedSharding(mesh, P("data", "model")))
    return jaxmagic.tree({"x": x, "opt": optax.adam(1e-3).init({"w": jnp.ones(3)}), "n": 3})


def _tree_checkpoint(tmp_path) -> Result:
    import orbax.checkpoint as ocp

    model = TinyMLP(rngs=nnx.Rngs(0))
    with ocp.CheckpointManager(tmp_path / "ck") as mgr:
        mgr.save(
            1,
            args=ocp.args.Composite(
                model=ocp.args.StandardSave(nnx.state(model, nnx.Param)), meta=ocp.args.JsonSave({"lr": 0.1})
            ),
        )
        mgr.wait_until_finished()
    return jaxmagic.tree(tmp_path / "ck")


def _sharding_array() -> Result:
    mesh = jax.make_mesh((2, 4), ("data", "model"))
    x = jax.device_put(jnp.zeros((8, 6, 4)), NamedSharding(mesh, P("data", None, "model")))
    return jaxmagic.sharding(x, name="x")


def _sharding_plan() -> Result:
    mesh = jax.make_mesh((8,), ("data",))
    step = jax.jit(jax.grad(lambda w, x: jnp.mean(jnp.tanh(x @ w))))
    report = jaxmagic.sharding(
        fn=step, args=(jnp.ones((16, 8)), jnp.ones((32, 16))), mesh=mesh, specs=(None, P("data"))
    )
    return report.with_spec("w", P("data", None))


def _sharding_what_if() -> Result:
    return jaxmagic.sharding(shape=(64, 32), mesh={"data": 4, "model": 2}, spec=P("data", None))


def _sharding_tree() -> Result:
    mesh = jax.make_mesh((2, 4), ("data", "model"))
    with jax.set_mesh(mesh):
        model = nnx.Linear(
            8,
            16,
            rngs=nnx.Rngs(0),
            kernel_init=nnx.with_partitioning(nnx.initializers.lecun_normal(), ("data", "model")),
        )
    return jaxmagic.sharding(model, name="model")


def _devices() -> Result:
    return jaxmagic.devices()


def _history(tmp_path) -> Result:
    from jaxmagic.train import Trainer

    X, y = dataset(64)
    trainer = Trainer(
        TinyMLP(rngs=nnx.Rngs(0)),
        optax.adam(1e-2),
        loss_fn,
        devices=one_device(),
        checkpoint_dir=tmp_path / "train",
    )
    return trainer.fit((X, y), epochs=2, batch_size=16, eval_data=(X[:32], y[:32]), progress=None)


def _history_diverged() -> Result:
    from jaxmagic.train import Trainer, TrainingDivergedError

    X, y = dataset(64)
    X[20:] = np.nan  # the second batch's loss is NaN
    trainer = Trainer(TinyMLP(rngs=nnx.Rngs(0)), optax.adam(1e-2), loss_fn, devices=one_device())
    with pytest.raises(TrainingDivergedError):
        trainer.fit((X, y), steps=4, batch_size=16, shuffle=False, progress=None, steps_per_call=1)
    return trainer.history


def _divergence_replay() -> Result:
    from jaxmagic.train import Trainer, TrainingDivergedError

    X, y = dataset(64)
    X[20:] = np.nan  # the second batch's loss is NaN
    trainer = Trainer(TinyMLP(rngs=nnx.Rngs(0)), optax.adam(1e-2), loss_fn, devices=one_device())
    with pytest.raises(TrainingDivergedError):
        trainer.fit((X, y), steps=4, batch_size=16, shuffle=False, progress=None, steps_per_call=2)
    return trainer.replay_diverged()


# type name -> {variant: builder}. Builders that take an argument get a fresh ``tmp_path``.
def _memory() -> Result:
    from jaxmagic.memories.live import memory

    held = {"params": {"w": jnp.ones((64, 32)), "b": jnp.zeros(32)}, "same": None}
    held["same"] = held["params"]["w"]  # one buffer under two names: counted once
    return memory(held, top=5)


def _oom() -> Result:
    from jaxmagic.memories.oom import explain_oom

    keep = {"x": jnp.ones((128, 128))}
    try:
        jnp.zeros((2**38,), jnp.float32).block_until_ready()  # ~1 TiB: a real RESOURCE_EXHAUSTED
    except Exception as e:  # noqa: BLE001 - the real error is what is explained
        return explain_oom(e, keep)
    raise AssertionError("allocating 1 TiB did not fail")


def _plan() -> Result:
    from jaxmagic.memories.plan import plan

    mesh = jax.make_mesh((8,), ("data",))

    def loss(w, x):
        return jnp.mean(jnp.tanh(x @ w) ** 2)

    grad = jax.grad(loss)
    w, x = jax.ShapeDtypeStruct((16, 8), jnp.float32), jax.ShapeDtypeStruct((64, 16), jnp.float32)
    return plan(grad, w, x, mesh=mesh, specs=(None, P("data")), device="h100")


def _ledger() -> Result:
    from jaxmagic.ledger import CompileLedger

    ledger = CompileLedger()
    ledger.install()
    try:
        f = jax.jit(lambda x: x * 3)
        for n in range(1, 4):
            f(jnp.ones(n))  # recompiles
        jnp.arange(5) + 1  # eager ops
    finally:
        ledger.uninstall()
    return ledger.report()


def _ledger_empty() -> Result:
    from jaxmagic.ledger import CompileLedger

    return CompileLedger().report()


def _comparison() -> Result:
    return jaxmagic.compare(_profile(), _profile_incomplete())


def _tabulate() -> Result:
    return jaxmagic.tabulate(TinyMLP(rngs=nnx.Rngs(0)), jnp.ones((4, 8)))


def _loop_python() -> Result:
    step = jax.jit(lambda w: (w * 0.9, jnp.sum(w**2)))
    w = jnp.ones(3)
    bar = jaxmagic.track(range(30), name="descent", progress=None)
    for _ in bar:
        w, loss = step(w)
        bar.log(loss=loss)
    return bar.report()


def _loop_stopped() -> Result:
    for i in jaxmagic.track(range(100), name="search", progress=None):
        if i == 40:
            break
    return jaxmagic.progress.last()


def _loop_scan_nested() -> Result:
    P = jaxmagic.progress

    def inner(c, x):
        c = c * 0.5 + x
        P.log(c=c)
        return c, None

    def outer(c, _):
        return P.scan(inner, c, jnp.ones(10), every=5, name="inner")[0], None

    jax.jit(jax.vmap(lambda c: P.scan(outer, c, None, length=12, every=4, name="outer", progress=None)))(
        jnp.arange(3.0)
    )
    return P.last()


BUILDERS: dict[str, dict[str, Callable[..., Result]]] = {
    "ProfileReport": {"compiles": _profile, "incomplete": _profile_incomplete, "memory": _profile_memory},
    "IRReport": {"jaxpr": _ir("jaxpr"), "stablehlo": _ir("stablehlo"), "optimized": _ir("stablehlo", True)},
    "CheckReport": {"finding": _check(10), "clean": _check(1)},
    "TreeSummary": {"nnx": _tree_model, "sharded": _tree_sharded, "checkpoint": _tree_checkpoint},
    "ShardingReport": {
        "array": _sharding_array,
        "what-if": _sharding_what_if,
        "tree": _sharding_tree,
        "plan-mode": _sharding_plan,
    },
    "DevicesReport": {"devices": _devices},
    "History": {"fit": _history, "diverged": _history_diverged},
    "DivergenceReport": {"replay": _divergence_replay},
    "MemoryReport": {"live": _memory},
    "OOMReport": {"oom": _oom},
    "PlanReport": {"data-parallel": _plan},
    "CompileLedgerReport": {"session": _ledger, "empty": _ledger_empty},
    "ComparisonReport": {"two-profiles": _comparison},
    "LayerCostReport": {"mlp": _tabulate},
    "ProgressReport": {"python": _loop_python, "stopped": _loop_stopped, "scan-nested": _loop_scan_nested},
}
CASES = [(kind, variant) for kind, variants in BUILDERS.items() for variant in variants]


def _result_types() -> set[str]:
    """Names of every ``Result`` subclass in the package (every module imported first)."""
    for mod in pkgutil.walk_packages(jaxmagic.__path__, "jaxmagic."):
        importlib.import_module(mod.name)
    found, todo = set(), list(Result.__subclasses__())
    while todo:
        cls = todo.pop()
        if cls.__module__.startswith("jaxmagic.") and cls.__name__ not in found:
            found.add(cls.__name__)
            todo.extend(cls.__subclasses__())
    return found


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> dict[tuple[str, str], Any]:
    """Each result built once: the faces below read the same object."""
    built = {}
    for kind, variant in CASES:
        build = BUILDERS[kind][variant]
        args = (tmp_path_factory.mktemp(f"{kind}-{variant}"),) if build.__code__.co_argcount else ()
        built[kind, variant] = build(*args)
    return built


def test_every_result_type_is_covered():
    assert _result_types() == set(BUILDERS)


@pytest.mark.parametrize("kind,variant", CASES)
def test_built_from_real_objects(results, kind, variant):
    assert type(results[kind, variant]).__name__ == kind


@pytest.mark.parametrize("kind,variant", CASES)
def test_repr_is_one_short_line(results, kind, variant):
    r = results[kind, variant]
    line = repr(r)
    assert "\n" not in line and len(line) <= 160, line
    assert line.startswith(f"{kind}(") and line.endswith(")") and line == f"{kind}({r.summary()})"


@pytest.mark.parametrize("kind,variant", CASES)
def test_pretty_printer_shows_the_full_text(results, kind, variant):
    r = results[kind, variant]
    text = pretty(r)
    assert text == r.to_text() and len(text.splitlines()) > 1 and repr(r) != text


@pytest.mark.parametrize("kind,variant", CASES)
def test_html_is_balanced_self_contained_and_says_something(results, kind, variant):
    r = results[kind, variant]
    page = parse_html(r._repr_html_())
    again = parse_html(r.to_html())  # element ids differ per rendering; structure and words do not
    assert (page.tags, page.words) == (again.tags, again.words)
    assert page.tags and len(page.words) > 20, page.words


@pytest.mark.parametrize("kind,variant", CASES)
def test_to_dict_is_strict_json_that_round_trips(results, kind, variant):
    d = results[kind, variant].to_dict()
    assert isinstance(d, dict) and d
    text = json.dumps(d, allow_nan=False)
    assert json.loads(text) == d
    assert results[kind, variant].to_json() == json.dumps(d)
