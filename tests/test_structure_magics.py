"""%jaxtree, %jaxsharding, %jaxdevices in a real IPython shell."""

from __future__ import annotations

import pytest
from IPython.core.error import UsageError
from IPython.utils.capture import capture_output

SETUP = """
import jax, jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P
from flax import nnx
mesh = jax.make_mesh((2, 4), ("data", "model"))
x = jax.device_put(jnp.zeros((8, 16)), NamedSharding(mesh, P("data", "model")))
model = nnx.Linear(4, 8, rngs=nnx.Rngs(0))
"""


@pytest.fixture
def shell(ip):
    ip.run_cell(SETUP)
    return ip


def test_help_is_real(shell):
    for name in ("jaxtree", "jaxsharding", "jaxdevices"):
        doc = shell.find_line_magic(name).__doc__
        assert "-o" in doc and "--output" in doc and "-q" in doc
    assert "--kind" in shell.find_line_magic("jaxtree").__doc__


def test_jaxtree_output_and_filters(shell):
    with capture_output() as cap:
        r = shell.run_line_magic("jaxtree", "model --kind Param -o -q")
    assert cap.stdout == "" and not cap.outputs
    assert type(r).__name__ == "TreeSummary" and r.totals.elements == 40 and r.name == "model"
    with capture_output() as cap:
        res = shell.run_line_magic("jaxtree", "model")
    assert res is None and len(cap.outputs) == 1
    # terminal IPython switches the HTML formatter off: the full text report is what shows
    assert cap.outputs[0].data["text/plain"].startswith("TreeSummary model: 2 leaves, 40 elements, 160 B")


def test_jaxtree_expression_with_spaces_and_quotes(shell):
    r = shell.run_line_magic("jaxtree", "{'a': x, 'b': [x, x]} --depth 1 -o -q")
    assert [row.path for row in r.rows()] == ["a", "b"]


@pytest.mark.parametrize(
    "line,message",
    [
        ("model --bogus", "valid flags:"),
        ("undefined_name", "could not evaluate 'undefined_name': NameError"),
        ("1/0", "ZeroDivisionError"),
        ("", "missing EXPR"),
        ("model --kind Nope", "no leaves of kind 'Nope'"),
        ("'/nonexistent/ckpt'", "no such file or directory"),
    ],
)
def test_jaxtree_bad_input(shell, line, message):
    with pytest.raises(UsageError, match=message):
        shell.run_line_magic("jaxtree", line)


def test_jaxsharding_widget_static_and_output(shell):
    with capture_output() as cap:
        shell.run_line_magic("jaxsharding", "x")
    data = cap.outputs[0].data
    assert "application/vnd.jupyter.widget-view+json" in data and "text/html" in data
    with capture_output() as cap:
        shell.run_line_magic("jaxsharding", "x --static")
    assert "application/vnd.jupyter.widget-view+json" not in cap.outputs[0].data
    r = shell.run_line_magic("jaxsharding", 'mesh --shape 8,16,4 --spec "data, None, model" --dims 0,2 -o -q')
    assert r.arrays[0].spec_text == "P('data', None, 'model')" and r.dims == (0, 2)
    r = shell.run_line_magic("jaxsharding", "P('data') --mesh mesh --shape 8 -o -q")
    assert r.arrays[0].shard_shape == (4,)


@pytest.mark.parametrize(
    "line,message",
    [
        ('mesh --shape 8,16 --spec "nope"', "unknown mesh axis 'nope'; the mesh has axes 'data', 'model'"),
        ('mesh --shape 6 --spec "model"', "not divisible by 4"),
        ("x --shape abc", "comma-separated integers"),
        ("x --wat", "valid flags:"),
        ("nothing_here", "could not evaluate"),
        ("P('data') --mesh nomesh --shape 8", "could not evaluate 'nomesh'"),
    ],
)
def test_jaxsharding_bad_input(shell, line, message):
    ns_before = set(shell.user_ns)
    with pytest.raises(UsageError, match=message):
        shell.run_line_magic("jaxsharding", line)
    assert set(shell.user_ns) == ns_before


def test_jaxdevices(shell):
    r = shell.run_line_magic("jaxdevices", "-o -q")
    assert len(r.devices) == 8 and "8 cpu device(s), 8 local" in repr(r)
    assert "memory stats: not reported" in r.to_text() or "in use" in r.to_text()


def test_errors_through_run_cell_show_no_traceback(shell):
    with capture_output() as cap:
        res = shell.run_cell("%jaxsharding mesh --shape 8 --spec nope")
    assert not res.success and "UsageError" in cap.stderr and "Traceback" not in cap.stderr


PLAN_SETUP = """
def loss(params, x):
    return jnp.mean(jnp.tanh(x @ params["w1"]))
step = jax.jit(jax.grad(loss))
params = {"w1": jnp.ones((16, 32))}
batch = jnp.ones((8, 16))
mesh8 = jax.make_mesh((8,), ("data",))
def wrong(params, x):
    return params["w1"] @ params["w1"]
"""


def test_jaxsharding_plan_mode(shell):
    shell.run_cell(PLAN_SETUP)
    with capture_output() as cap:
        shell.run_line_magic(
            "jaxsharding", """--plan "step(params, batch)" --mesh mesh8 --specs "(None, P('data'))\""""
        )
    data = cap.outputs[0].data
    assert "application/vnd.jupyter.widget-view+json" in data
    assert (
        "plan of loss(params, x) for this layout" in data["text/plain"] and "all-reduce" in data["text/plain"]
    )
    r = shell.run_line_magic("jaxsharding", """--plan "step(params, batch)" --mesh mesh8 -o""")
    from jaxmagic.memories.plan import plan

    assert (
        r.plan.memory
        == plan(
            shell.user_ns["step"],
            shell.user_ns["params"],
            shell.user_ns["batch"],
            mesh=shell.user_ns["mesh8"],
        ).memory
    )
    assert [a.name for a in r.arrays] == ["params.w1", "x"] and r.call.label == "loss(params, x)"
    assert "not laid out on this mesh, planned replicated (P()): params.w1, x" in r.to_text()
    r = shell.run_line_magic(
        "jaxsharding", """--plan "step(params, batch)" --mesh mesh8 --specs "(None, P('data'))" -o"""
    )
    assert [c.kind for c in r.plan.collectives] == ["all-reduce"]
    assert r.plan.collectives[0].source.startswith("In["), r.plan.collectives[
        0
    ].source  # the cell, by its number


@pytest.mark.parametrize(
    "line,message",
    [
        ('--plan "wrong(params, batch)" --mesh mesh8', "JAX could not trace wrong: TypeError"),
        (
            """--plan "step(params, batch)" --mesh mesh8 --specs "(None, P('batch'))\"""",
            "unknown mesh axis 'batch'; the mesh has axes 'data'",
        ),
        ('--plan "step(params, batch)"', "pass mesh="),
        ('--plan "step(params, nothing)" --mesh mesh8', "could not evaluate"),
        ('--plan "step" --mesh mesh8', "needs a call"),
        ('x --plan "step(params, batch)" --mesh mesh8', "takes the call and --mesh/--specs only"),
        ("""x --specs "(None,)\"""", "--specs goes with --plan"),
    ],
)
def test_jaxsharding_plan_mode_bad_input(shell, line, message):
    shell.run_cell(PLAN_SETUP)
    ns_before = set(shell.user_ns)
    w1 = shell.user_ns["params"]["w1"]
    with pytest.raises(UsageError, match=message):
        shell.run_line_magic("jaxsharding", line)
    assert set(shell.user_ns) == ns_before and shell.user_ns["params"]["w1"] is w1 and not w1.is_deleted()
