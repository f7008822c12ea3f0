"""The profiler on code written the way the JAX AI stack tutorials write it: an ``@nnx.jit``
train step with ``nnx.Optimizer``, a Dropout model with ``nnx.Rngs``, epoch loops, a
background loader, jaxmagic's own Trainer. Counts are checked against the test's own
``jax.monitoring`` listener; only the insights that are really there may fire."""

from __future__ import annotations

import threading
import time
import warnings
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxmagic.profile import Profiler


class Compiles:
    """An independent count of backend compiles per function name (our own listener)."""

    def __init__(self):
        self.names: list[str] = []

    def __call__(self, event, seconds, **kw):
        if event == "/jax/core/compile/backend_compile_duration":
            name = str(kw.get("fun_name", "?"))
            self.names.append(name[4:-1] if name.startswith("jit(") else name)

    def __enter__(self):
        jax.monitoring.register_event_duration_secs_listener(self)
        return self

    def __exit__(self, *exc):
        jax.monitoring.unregister_event_duration_listener(self)


class MLP(nnx.Module):
    def __init__(self, din: int, dmid: int, dout: int, *, rngs: nnx.Rngs):
        self.linear1 = nnx.Linear(din, dmid, rngs=rngs)
        self.dropout = nnx.Dropout(0.2, rngs=rngs)
        self.linear2 = nnx.Linear(dmid, dout, rngs=rngs)

    def __call__(self, x):
        return self.linear2(self.dropout(nnx.relu(self.linear1(x))))


def make_model():
    model = MLP(4, 8, 2, rngs=nnx.Rngs(0, dropout=1))
    optimizer = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)
    return model, optimizer


@nnx.jit
def train_step(model, optimizer, batch):
    x, y = batch

    def loss_fn(model):
        return ((model(x) - y) ** 2).mean()

    loss, grads = nnx.value_and_grad(loss_fn)(model)
    optimizer.update(model, grads)
    return loss


@partial(nnx.jit, static_argnames="training")
def predict(model, x, training):
    return model(x) if training else model(x) * 0


def batch_of(n: int):
    return jnp.ones((n, 4)), jnp.ones((n, 2))


@pytest.mark.slow
def test_nnx_train_step_inputs_and_misses_use_the_users_names():
    model, optimizer = make_model()
    with Compiles() as independent, Profiler() as prof:
        for n in (8, 8, 16):
            train_step(model, optimizer, batch_of(n))
    fp = prof.report().function("train_step")
    assert len(fp.compiles) == independent.names.count("train_step") == 2
    sig = fp.compiles[0].signature
    assert "model.linear1.kernel: f32[4,8]" in sig and "model.dropout.rngs.count: u32[]" in sig
    assert "optimizer.opt_state.0.mu.linear2.kernel: f32[8,2]" in sig
    assert "states[0]" not in sig
    assert fp.compiles[1].reasons == (
        "batch[0] changed from f32[8,4] to f32[16,4]",
        "batch[1] changed from f32[8,2] to f32[16,2]",
    )


def test_static_argument_miss_names_the_parameter():
    model, _ = make_model()
    with Profiler() as prof:
        predict(model, jnp.ones((2, 4)), True)
        predict(model, jnp.ones((2, 4)), False)
    fp = prof.report().function("predict")
    assert fp.compiles[1].reasons == ("static argument training changed from True to False",)


def test_jax_jit_static_argnums_miss_names_the_parameter():
    scale = jax.jit(lambda x, factor: x * factor, static_argnums=1)
    with Profiler() as prof:
        scale(jnp.ones(2), 1)
        scale(jnp.ones(2), 2)
    assert prof.report().function("<lambda>").compiles[1].reasons == (
        "static argument factor changed from 1 to 2",
    )


def test_grad_of_a_jitted_function_is_not_a_recompile():
    @jax.jit
    def loss(w):
        return jnp.sum(jnp.tanh(w) ** 2)

    with Compiles() as independent, Profiler() as prof:
        jax.grad(loss)(jnp.ones(3))
    r = prof.report()
    fp = r.function("loss")
    assert len(fp.compiles) == independent.names.count("loss") == 2  # forward and backward
    assert [c.kinds for c in fp.compiles] == [("first",), ("derived",)]
    assert fp.cache_misses == ["first compile"]
    assert "recompile" not in r.insight_kinds() and "jit-recreated" not in r.insight_kinds()
    assert "Cache misses" not in r.to_text()


@pytest.mark.slow
def test_a_real_recompile_is_still_reported():
    model, optimizer = make_model()

    @nnx.jit
    def fresh_step(model, optimizer, batch):  # a cache of its own: only this test's calls
        x, y = batch
        grads = nnx.grad(lambda m: ((m(x) - y) ** 2).mean())(model)
        optimizer.update(model, grads)

    with Profiler() as prof:
        for n in (8, 16, 24):
            fresh_step(model, optimizer, batch_of(n))
    rec = [i for i in prof.report().insights if i.kind == "recompile"]
    assert len(rec) == 1 and "3 times" in rec[0].message and "batch[0]" in rec[0].message


@pytest.mark.slow
def test_one_host_read_per_epoch_is_not_a_host_sync_problem():
    model, optimizer = make_model()
    batches = [batch_of(8) for _ in range(5)]
    train_step(model, optimizer, batches[0])
    losses = []
    with Profiler() as prof:
        for _epoch in range(30):
            for batch in batches:
                loss = train_step(model, optimizer, batch)
            losses.append(float(loss))
    r = prof.report()
    assert sum(r.transfers.values()) == 30
    assert "host-sync" not in r.insight_kinds()


def test_one_host_read_per_step_is_a_host_sync_problem():
    model, optimizer = make_model()
    batch = batch_of(8)
    train_step(model, optimizer, batch)
    losses = []
    with Profiler() as prof:
        for _step in range(30):
            loss = train_step(model, optimizer, batch)
            losses.append(float(loss))
    r = prof.report()
    found = [i for i in r.insights if i.kind == "host-sync"]
    assert len(found) == 1 and "30 times" in found[0].message


def test_slicing_an_array_counts_one_op_per_slice():
    Xb = jnp.asarray(np.arange(40.0, dtype=np.float32).reshape(20, 2))
    with Profiler() as prof:
        rows = [Xb[i] for i in range(20)]
        total = Xb + 1
    r = prof.report()
    assert len(rows) == 20 and total.shape == (20, 2)
    assert r.eager_ops == {"getitem": 20, "add": 1}


def test_work_of_another_thread_is_not_charged_to_the_cell():
    stop = threading.Event()
    done = []

    errors = []

    def loader():
        try:
            while not stop.is_set():
                done.append(jax.device_put(np.ones(3, np.float32)) + 1)
                time.sleep(0.001)
        except BaseException as e:  # surfaced below: a dead loader would prove nothing
            errors.append(e)

    thread = threading.Thread(target=loader)
    thread.start()
    try:
        while len(done) < 3:
            time.sleep(0.01)
        with Profiler() as prof:  # the cell only sleeps while the loader works
            start = len(done)
            while len(done) < start + 3:
                time.sleep(0.01)
    finally:
        stop.set()
        thread.join()
    assert errors == []
    r = prof.report()
    assert r.eager_ops == {} and r.functions == () and r.insights == ()
    assert r.other_threads["eager_ops"] > 0
    assert "Other threads" in r.to_text()


def test_silent_int64_truncation_is_found():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # JAX gives no warning here
        with Profiler() as prof:
            big = jnp.asarray(np.int64(2**40))
    assert int(big) == 0  # what JAX really did: the value was lost
    found = [i for i in prof.report().insights if i.kind == "x64-truncated"]
    assert len(found) == 1 and found[0].severity == "warn"
    assert "1099511627776" in found[0].message and found[0].message.endswith(".")


def test_silent_float64_to_float32_is_noted():
    data = np.linspace(0, 1, 12)  # float64, as NumPy and sklearn give it
    with Profiler() as prof:
        x = jnp.asarray(data)
    assert x.dtype == jnp.float32
    found = [i for i in prof.report().insights if i.kind == "x64-truncated"]
    assert len(found) == 1 and "float64 array [12] into float32" in found[0].message


def test_explicit_float32_conversion_is_not_flagged():
    with Profiler() as prof:
        jnp.asarray(np.linspace(0, 1, 12), dtype=jnp.float32)
        jnp.asarray(np.ones(3, np.float32))
    assert "x64-truncated" not in prof.report().insight_kinds()


def test_x64_warning_insight_is_not_cut_mid_sentence():
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        with Profiler() as prof:
            jnp.zeros(3, dtype=jnp.float64)
    (found,) = [i for i in prof.report().insights if i.kind == "x64-truncated"]
    assert found.message.endswith("truncated to dtype float32."), found.message


@pytest.mark.slow
def test_jaxmagics_own_trainer_profiles_clean_with_readable_names(monkeypatch):
    from jaxmagic import devicepeak
    from jaxmagic.train import Trainer

    monkeypatch.setattr(devicepeak, "_measured", {})  # as a process's first fit: the peak is measured

    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 4)).astype(np.float32)
    y = (X.sum(axis=1) > 0).astype(np.int32)
    model = MLP(4, 8, 2, rngs=nnx.Rngs(0, dropout=1))

    def loss_fn(model, batch):
        x, labels = batch
        logits = model(x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(), logits

    trainer = Trainer(model, optax.adam(1e-3), loss_fn, metrics={"accuracy": nnx.metrics.Accuracy()})
    with Profiler() as prof:
        trainer.fit((X, y), epochs=3, batch_size=32, eval_data=(X[:70], y[:70]), progress=None)
    r = prof.report()
    assert [i.kind for i in r.insights if i.severity == "warn"] == []
    # the flight recorder's probe compiles only once a run has trained long enough: it may be absent
    names = {f.name for f in r.functions if f.kind == "jit"} - {"Trainer.flight_probe"}
    assert names == {
        "Trainer.train_steps",
        "Trainer.evaluate",
        "Trainer.check_loss_fn",
        "Trainer.check_metrics",
        "Trainer.measure_peak_flops",
    }
    assert not [f.name for f in r.functions if f.kind == "eager" and "Trainer" in f.name]


def test_dropout_model_forward_with_rngs_under_the_profiler_leaves_the_model_usable():
    model, _ = make_model()
    before = model.dropout.rngs.count[...]
    with Compiles() as independent, Profiler() as prof:
        out = nnx.jit(lambda m, x: m(x))(model, jnp.ones((3, 4)))
    assert out.shape == (3, 2)
    assert model.dropout.rngs.count[...] == before + 1  # the call itself advanced the stream
    assert len(prof.report().function("<lambda>").compiles) == independent.names.count("<lambda>") == 1


@pytest.mark.parametrize("steps", [50])
@pytest.mark.slow
def test_compile_counts_match_an_independent_listener(steps):
    model, optimizer = make_model()
    with Compiles() as independent, Profiler() as prof:
        for i in range(steps):
            train_step(model, optimizer, batch_of(8 if i % 2 else 16))
    fp = prof.report().function("train_step")
    assert len(fp.compiles) == independent.names.count("train_step") == 2


def log_loss(losses, loss):
    losses.append(float(loss))  # the copy is in a helper; the loop is in the caller


def test_host_read_in_a_helper_called_every_step_is_flagged_at_the_helper():
    model, optimizer = make_model()
    batch = batch_of(8)
    train_step(model, optimizer, batch)
    losses = []
    with Profiler() as prof:
        for _step in range(25):
            log_loss(losses, train_step(model, optimizer, batch))
    assert "host-sync" in prof.report().insight_kinds()


def test_host_reads_in_a_comprehension_are_per_step():
    values = [jnp.float32(i) for i in range(25)]
    with Profiler() as prof:
        floats = [float(v) for v in values]
    assert len(floats) == 25 and "host-sync" in prof.report().insight_kinds()


@pytest.mark.slow
def test_new_model_objects_recompile_with_a_readable_reason():
    first_model, first_optimizer = make_model()
    train_step(first_model, first_optimizer, batch_of(8))
    model, optimizer = make_model()
    with Profiler() as prof:
        train_step(model, optimizer, batch_of(8))
    (record,) = prof.report().function("train_step").compiles
    assert record.kinds[0] == "graph"
    assert record.reasons[0].startswith("the NNX graph of optimizer differs from the closest earlier call")
    assert "GraphDef(" not in " ".join(record.reasons)


def test_without_miss_explanations_a_second_compile_is_not_called_derived():
    f = jax.jit(lambda x: x + 1)
    with Profiler(explain_cache_misses=False) as prof:
        f(jnp.ones(2))
        f(jnp.ones(3))
    r = prof.report()
    assert [c.kinds for c in r.function("<lambda>").compiles] == [(), ()]
    assert "recompile" in r.insight_kinds()


def test_converters_keep_their_signatures_under_the_profiler():
    data = np.array([1, 2**40, 3, 4], dtype=np.int64)
    with Profiler() as prof:
        a = jnp.asarray(a=data)
        b = jnp.array(object=data, dtype=jnp.int32)  # asked for explicitly: not a finding
        c = jax.device_put(x=np.arange(4))  # int64 values that fit: nothing lost
    assert a.dtype == b.dtype == c.dtype == jnp.int32
    found = [i for i in prof.report().insights if i.kind == "x64-truncated"]
    assert len(found) == 1 and found[0].message.startswith("test_profile_realworld.py:"), found[0].message
    assert "jnp.asarray turned int64 array [4] into int32 (1 value out of range)" in found[0].message
    assert "more such" not in found[0].message
