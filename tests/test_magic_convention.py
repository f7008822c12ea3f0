"""One convention for all eight magics, checked on each in a real IPython shell:
``-o`` returns the result (shown once, as ``Out[n]``) and displays nothing else, ``-q``
displays nothing, flags may stand before or after the expression, ``--`` ends the flags,
a trailing ``;`` is not part of the expression, unknown flags name the valid ones and
``%magic?`` documents every flag."""

from __future__ import annotations

import os

import pytest
from IPython.core.error import UsageError
from IPython.utils.capture import capture_output

SETUP = """
import jax, jax.numpy as jnp
from flax import nnx
import orbax.checkpoint as ocp
@jax.jit
def f(x):
    return jnp.sin(x) * 2
x = jnp.ones(3)
model = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
from jaxmagic.profile import Profiler
with Profiler() as _prof:
    f(x)
rep_a = rep_b = _prof.report()
"""

# magic -> (expression, result type); the expression is what each magic inspects.
MAGICS = {
    "jaxprofile": ("y = f(x)", "ProfileReport"),  # a statement; its own value shows as in a cell
    "jaxpr": ("f(x)", "IRReport"),
    "jaxhlo": ("f(x)", "IRReport"),
    "jaxcheck": ("f(x)", "CheckReport"),
    "jaxtree": ("model", "TreeSummary"),
    "jaxsharding": ("x", "ShardingReport"),
    "jaxdevices": ("", "DevicesReport"),
    "jaxmemory": ("", "MemoryReport"),
    "jaxplan": ("f(x)", "PlanReport"),
    "jaxcompiles": ("", "CompileLedgerReport"),
    "jaxdiff": ("rep_a rep_b", "ComparisonReport"),
    "jaxtabulate": ("model(jnp.ones((4, 2)))", "LayerCostReport"),
}


@pytest.fixture
def shell(ip):
    ip.run_cell(SETUP)
    return ip


def run(ip, line):
    with capture_output() as cap:
        res = ip.run_cell(line)
    return res, cap


@pytest.mark.parametrize("name", MAGICS)
def test_o_returns_the_result_and_displays_nothing_else(shell, name):
    expr, typ = MAGICS[name]
    for line in (f"%{name} -o {expr}", f"%{name} {expr} -o".replace("  ", " ")):
        res, cap = run(shell, line)
        assert res.error_in_exec is None, res.error_in_exec
        assert type(res.result).__name__ == typ
        # shown once, as IPython's Out[n] of the returned object; never displayed as well
        assert not cap.outputs, [o.data.get("text/plain", "")[:80] for o in cap.outputs]
        assert cap.stdout.count(res.result.to_text()) == 1


@pytest.mark.parametrize("name", MAGICS)
def test_q_displays_nothing(shell, name):
    expr, _ = MAGICS[name]
    for line in (f"%{name} -q {expr}", f"%{name} {expr} -q"):
        res, cap = run(shell, line)
        assert res.error_in_exec is None and res.result is None
        assert not cap.outputs and cap.stdout == ""


@pytest.mark.parametrize("name", MAGICS)
def test_plain_call_displays_once(shell, name):
    expr, typ = MAGICS[name]
    res, cap = run(shell, f"%{name} {expr}")
    assert res.error_in_exec is None and res.result is None
    assert len(cap.outputs) == 1 and cap.outputs[0].data["text/plain"].strip()


@pytest.mark.parametrize("name", MAGICS)
def test_unknown_flag_names_the_valid_ones(shell, name):
    expr, _ = MAGICS[name]
    for line in (f"--bogus {expr}", f"{expr} --bogus"):
        with pytest.raises(UsageError, match=r"valid flags: .*-o.*-q"):
            shell.run_line_magic(name, line)


@pytest.mark.parametrize("name", MAGICS)
def test_help_documents_every_flag(shell, name):
    magic = shell.find_line_magic(name)
    doc = magic.__doc__
    for action in magic.parser._actions:
        for flag in action.option_strings:
            assert flag in doc, (name, flag)


@pytest.mark.parametrize("name", ["jaxpr", "jaxhlo", "jaxcheck", "jaxtree", "jaxsharding"])
def test_trailing_semicolon_is_not_part_of_the_expression(shell, name):
    expr, typ = MAGICS[name]
    res, cap = run(shell, f"%{name} -o {expr};")
    assert res.error_in_exec is None, res.error_in_exec
    assert not cap.outputs  # ';' silences Out[n]
    assert type(shell.run_line_magic(name, f"-o {expr};")).__name__ == typ


def test_double_dash_ends_the_flags(shell):
    shell.user_ns["q"] = 1.0
    r = shell.run_line_magic("jaxtree", "-o -- x -q")  # the expression is x - q
    assert r.name == "x -q" and r.totals.elements == 3
    # without "--", a trailing known flag is a flag
    assert shell.run_line_magic("jaxtree", "x -q") is None


def test_values_with_spaces_keep_their_quotes(shell):
    shell.run_cell(
        "from jax.sharding import PartitionSpec as P\nmesh = jax.make_mesh((2, 4), ('data', 'model'))"
    )
    r = shell.run_line_magic("jaxsharding", 'mesh --shape 8,16 --spec "data, model" -o')
    assert r.arrays[0].shape == (8, 16)
    assert "data" in r.arrays[0].spec_text and "model" in r.arrays[0].spec_text


def test_flag_values_keep_inner_quotes(shell):
    shell.run_cell(
        "from jax.sharding import PartitionSpec as P\nmesh = jax.make_mesh((8,), ('data',))\n"
        "xs = jnp.ones((8, 4))"
    )
    for spec in ("\"(P('data'),)\"", "'(P(\"data\"),)'", "(P('data'),)"):
        r = shell.run_line_magic("jaxplan", f"--mesh mesh --specs {spec} f(xs) -o")
        assert type(r).__name__ == "PlanReport", spec
    with pytest.raises(UsageError, match="No closing quotation"):
        shell.run_cell_magic("jaxprofile", "--json 'unbalanced", "1")


def test_expressions_are_not_var_expanded(shell):
    # IPython would format {x} in a magic line unless the magic opts out, as %timeit does
    r = shell.run_line_magic("jaxtree", "{'a': x} -o")
    assert r.name == "{'a': x}" and [row.path for row in r.rows()] == ["a"]


def test_jaxtree_bare_checkpoint_paths(shell, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # so the ~ form is always exercised
    ckpt = tmp_path / "ckpt"
    shell.user_ns["ckpt_dir"] = str(ckpt)
    shell.run_cell(
        "mngr = ocp.CheckpointManager(ckpt_dir)\n"
        "mngr.save(100, args=ocp.args.StandardSave({'w': jnp.ones((2, 3))}))\n"
        "mngr.wait_until_finished(); mngr.close()"
    )
    absolute = shell.run_line_magic("jaxtree", f"{ckpt} --step 100 -o")
    assert absolute.totals.elements == 6
    old = os.getcwd()
    os.chdir(tmp_path)
    try:
        relative = shell.run_line_magic("jaxtree", "ckpt --step 100 -o")
        assert relative.totals.elements == 6
        assert shell.run_line_magic("jaxtree", "~/ckpt --step 100 -o").totals.elements == 6
    finally:
        os.chdir(old)
    with pytest.raises(UsageError, match="no such file or directory|does not exist"):
        shell.run_line_magic("jaxtree", "/nonexistent/ckpt --step 1")


def test_jaxsharding_none_says_none(shell):
    shell.user_ns["nothing"] = None
    with pytest.raises(UsageError, match="nothing is None"):
        shell.run_line_magic("jaxsharding", "nothing")


def test_articles_in_messages(shell):
    with pytest.raises(UsageError, match="is an attribute, not a call"):
        shell.run_line_magic("jaxpr", "x.T")
    with pytest.raises(UsageError, match="is a list, not a call"):
        shell.run_line_magic("jaxpr", "[f(x)]")


def test_jaxdevices_takes_no_expression(shell):
    with pytest.raises(UsageError, match="takes no expression"):
        shell.run_line_magic("jaxdevices", "x")
