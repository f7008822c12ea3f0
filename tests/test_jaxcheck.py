"""%jaxcheck and check_call: what checkify finds, the three faces, every flag, bad input."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxmagic.check import CheckReport, check_call, parse_checks
from jaxmagic.ir import NotTraceableError
from tests.helpers import global_state, parse_html, run

SETUP = """
import jax, jax.numpy as jnp
from jax.experimental import checkify
from flax import nnx

def pick(x, i):
    return x[i]

def many(x, i):
    y = x[i]
    z = jnp.log(x - 2.0)
    return y + z.sum() / (i - 10)

def write(x, i):
    return x.at[i].set(-1.0)

def safe(x):
    return jnp.tanh(x) * 2

def positive(x):
    checkify.check(jnp.all(x > 0), "x must be positive, min is {m}", m=x.min())
    return jnp.sqrt(x)

def scaled(x, how, *, factor=1.0):
    return x * factor if how == "scale" else x

def branchy(x):
    if x.sum() > 0:
        return x
    return -x

def pytree_fn(params, x):
    return params["w"][x]

jitted = jax.jit(pick)
lin = nnx.Linear(2, 3, rngs=nnx.Rngs(0))

@nnx.jit
def apply(m, x, i):
    return m(x)[0, i]
"""


@pytest.fixture
def cip(ip):
    ip.run_cell(SETUP)
    return ip


# -- what it finds --------------------------------------------------------------


def test_out_of_bounds_read_is_found_with_its_cell_line(cip):
    res, out = run(cip, "%jaxcheck pick(jnp.arange(3.0), 10)")
    assert res.success and res.result is None
    assert out.startswith("jaxcheck of pick(x: f32[3], i: int)\n1 error found")
    assert "index 10 is out of bounds for axis 0 with size 3" in " ".join(out.split())
    assert "    return x[i]" in out
    assert "line 6 in pick" in out  # line 6 of the SETUP cell
    assert "clamped" in out
    assert "returned: f32[] 2.0" in out  # plain JAX clamps to x[2]


def test_out_of_bounds_write_is_dropped_and_reported(cip):
    r = cip.run_cell("%jaxcheck -o write(jnp.arange(3.0), 5)").result
    f = r.finding("index")
    assert f is not None and f.source == "return x.at[i].set(-1.0)"
    assert r.output == "f32[3] [0. 1. 2.]"  # the write was dropped


def test_all_three_automatic_checks_in_order(cip):
    r = cip.run_cell("%jaxcheck -o many(jnp.arange(3.0), 10)").result
    assert [f.kind for f in r.findings] == ["index", "nan", "div"]
    assert r.finding("nan").primitive == "log" and r.finding("nan").source == "z = jnp.log(x - 2.0)"
    assert r.finding("div").source == "return y + z.sum() / (i - 10)"
    assert r.summary() == "many(x: f32[3], i: int): out-of-bounds index, NaN produced, division by zero"


def test_clean_call_says_so(cip):
    res, out = run(cip, "%jaxcheck safe(jnp.ones(3))")
    assert out.splitlines()[1].startswith("clean: no errors found (index, nan, div, user checks)")
    r = cip.run_cell("%jaxcheck -o safe(jnp.ones(3))").result
    assert r.clean and r.findings == () and r.to_dict()["clean"] is True


def test_user_checks_are_functionalized(cip):
    r = cip.run_cell("%jaxcheck -o positive(-jnp.ones(2))").result
    f = r.finding("user")
    assert "x must be positive, min is -1.0" in f.message
    assert cip.run_cell("%jaxcheck -o positive(jnp.ones(2))").result.clean


def test_jit_nnx_jit_module_pytree_kwargs_and_static_leaves(cip):
    for call, kind in [
        ("jitted(jnp.arange(4.0), 7)", "index"),
        ("apply(lin, jnp.ones((1, 2)), 5)", "index"),
        ("pytree_fn({'w': jnp.ones(3)}, 3)", "index"),
        ("scaled(jnp.ones(2), 'scale', factor=jnp.float32(jnp.nan))", "nan"),
    ]:
        res, _ = run(cip, f"r = %jaxcheck -o {call}")
        assert res.success, call
        assert [f.kind for f in cip.user_ns["r"].findings] == [kind], call
    r = cip.run_cell("%jaxcheck -o lin(jnp.ones((4, 2)))").result
    assert r.clean and r.output.startswith("f32[4,3]")
    assert cip.run_cell("%jaxcheck -o scaled(jnp.ones(2), 'keep')").result.signature == "x: f32[2], how: str"


def test_nan_in_inputs_is_noted(cip):
    r = cip.run_cell("%jaxcheck -o safe(jnp.array([1.0, jnp.nan]))").result
    assert r.finding("nan") is not None
    assert any("input already contains NaN" in n for n in r.notes)


# -- three faces --------------------------------------------------------------


def test_text_html_and_dict_faces(cip):
    r = cip.run_cell("%jaxcheck -o many(jnp.arange(3.0), 10)").result
    assert isinstance(r, CheckReport)
    assert repr(r) == f"CheckReport({r.summary()})"
    text = r.to_text(width=80)
    assert all(len(line) <= 80 for line in text.splitlines())
    assert text.count("✗ ") == 3

    html = r.to_html()
    p = parse_html(html)
    assert p.tags[0] == "div" and "style" in p.tags and "script" not in p.tags  # self-contained
    assert p.attr("data-kind") == ["index", "nan", "div"]
    assert "z = jnp.log(x - 2.0)" in p.text
    assert "http" not in html.replace("http://www.w3.org", "")  # no CDN, no network

    d = json.loads(r.to_json())
    assert d["findings"][0]["kind"] == "index" and d["findings"][0]["line"] == 9
    assert d["checks"] == ["index", "nan", "div", "user"] and d["clean"] is False


def test_html_escapes_user_text():
    def f(x):
        from jax.experimental import checkify

        checkify.check(jnp.all(x > 0), "<script>alert(1)</script> & more")
        return x

    html = check_call(f, -jnp.ones(1)).to_html()
    assert "<script>alert" not in html and "&lt;script&gt;alert(1)&lt;/script&gt; &amp; more" in html


def test_displayed_html_in_a_notebook_bundle(cip):
    from IPython.utils.capture import capture_output

    html_formatter = cip.display_formatter.formatters["text/html"]
    enabled, html_formatter.enabled = html_formatter.enabled, True  # as in a kernel
    try:
        with capture_output() as cap:
            cip.run_cell("%jaxcheck pick(jnp.arange(3.0), 10)")
    finally:
        html_formatter.enabled = enabled
    data = cap.outputs[0].data
    assert data["text/plain"].startswith("jaxcheck of pick") and 'data-kind="index"' in data["text/html"]


# -- flags --------------------------------------------------------------------


def test_quiet_shows_nothing_and_output_returns_report(cip):
    res, out = run(cip, "%jaxcheck -q pick(jnp.arange(3.0), 10)")
    assert res.success and out == "" and res.result is None
    res, out = run(cip, "%jaxcheck -q -o pick(jnp.arange(3.0), 10)")
    assert isinstance(res.result, CheckReport)


@pytest.mark.parametrize(
    "flag,kinds",
    [
        ("--checks index", ["index"]),
        ("--checks=nan", ["nan"]),
        ("--checks nan,div", ["nan", "div"]),
        ("--checks div,index", ["index", "div"]),
        ("--checks all", ["index", "nan", "div"]),
        ("--checks user", []),
    ],
)
@pytest.mark.slow
def test_checks_flag_selects_checks(cip, flag, kinds):
    r = cip.run_cell(f"%jaxcheck -o {flag} many(jnp.arange(3.0), 10)").result
    assert [f.kind for f in r.findings] == kinds
    assert r.checks == parse_checks(flag.split(" ", 1)[-1].split("=", 1)[-1])


def test_python_api_check_names():
    assert parse_checks(None) == parse_checks("all") == ("index", "nan", "div", "user")
    assert parse_checks(["div", "nan"]) == ("nan", "div")
    for bad in ("nan,bogus", "", ",", ["all", "nan"]):
        with pytest.raises(ValueError, match="choose from index, nan, div, user or all"):
            parse_checks(bad)


def test_help_is_real(cip):
    doc = cip.find_line_magic("jaxcheck").__doc__
    for flag in ("-o", "-q", "--checks", "checkify"):
        assert flag in doc


@pytest.mark.parametrize(
    "line,message",
    [
        ("%jaxcheck", "needs a call"),
        ("%jaxcheck -o", "needs a call"),
        ("%jaxcheck pick", "needs a call like f(x, y)"),
        ("%jaxcheck 1 + 2", "needs a call like f(x, y)"),
        ("%jaxcheck [pick(1)]", "needs a call like f(x, y)"),
        ("%jaxcheck pick(", "is not a Python expression"),
        ("%jaxcheck undefined_fn(1)", "NameError: name 'undefined_fn' is not defined"),
        ("%jaxcheck pick(undefined_arg, 1)", "NameError"),
        ("%jaxcheck (3)(1)", "not a function"),
        ("%jaxcheck branchy(jnp.ones(2))", "JAX could not trace branchy"),
        ("%jaxcheck branchy(jnp.ones(2))", "if x.sum() > 0"),
        ("%jaxcheck safe('text')", "JAX could not trace safe"),
        ("%jaxcheck pick(jnp.ones(3))", "JAX could not trace pick"),
        ("%jaxcheck --bogus pick(jnp.ones(3), 1)", "unrecognized arguments: --bogus"),
        ("%jaxcheck --bogus pick(jnp.ones(3), 1)", "--checks"),
        ("%jaxcheck --checks pick(jnp.ones(3), 1)", "unknown check"),
        ("%jaxcheck --checks bogus pick(jnp.ones(3), 1)", "unknown check 'bogus'"),
        ("%jaxcheck --checks= pick(jnp.ones(3), 1)", "choose from index, nan, div, user or all"),
    ],
)
def test_bad_input(cip, line, message):
    before = global_state()
    config = {
        k: getattr(jax.config, k)
        for k in ("jax_debug_nans", "jax_enable_checks", "jax_disable_jit", "jax_explain_cache_misses")
    }
    res, out = run(cip, line)
    assert not res.success
    assert message in str(res.error_in_exec)
    assert global_state() == before
    assert config == {k: getattr(jax.config, k) for k in config}


def test_state_unchanged_after_findings_and_clean_runs(cip):
    before = global_state()
    for line in ("%jaxcheck -q many(jnp.arange(3.0), 10)", "%jaxcheck -q safe(jnp.ones(3))"):
        assert cip.run_cell(line).success
    assert global_state() == before
    # Outside checkify the functions behave as plain JAX again (no check left behind).
    assert float(cip.user_ns["pick"](jnp.arange(3.0), 10)) == 2.0


def test_check_call_outside_ipython():
    r = check_call(lambda x, i: x[i], jnp.arange(3.0), 10)
    f = r.finding("index")
    assert f.where is not None and f.where.startswith("test_jaxcheck.py:")
    assert f.source == "r = check_call(lambda x, i: x[i], jnp.arange(3.0), 10)"
    with pytest.raises(TypeError, match="not callable"):
        check_call(3, 1)
    with pytest.raises(NotTraceableError, match="could not trace"):
        check_call(lambda s: jnp.sin(s), "text")
    with pytest.raises(ValueError, match="unknown check"):
        check_call(lambda x: x, jnp.ones(1), checks="nan,oops")
    assert check_call(lambda x: x / 2.0, np.ones(2, np.float32)).clean


def test_reload_keeps_one_registration(ip):
    for _ in range(5):
        ip.run_line_magic("reload_ext", "jaxmagic")
    owners = [type(m).__name__ for m in ip.magics_manager.registry.values()]
    assert owners.count("CheckMagics") == 1
    ip.run_line_magic("unload_ext", "jaxmagic")
    assert "jaxcheck" not in ip.magics_manager.magics["line"]
    ip.run_line_magic("load_ext", "jaxmagic")
    assert "jaxcheck" in ip.magics_manager.magics["line"]


def test_clean_verdict_names_only_the_enabled_checks():
    html = check_call(lambda x: x * 2, jnp.ones(2), checks="nan").to_html()
    assert "No errors found: no NaN produced." in html and "out-of-bounds" not in html
    html = check_call(lambda x: x * 2, jnp.ones(2)).to_html()
    assert (
        "No errors found: no out-of-bounds index, NaN produced, division by zero or failed checkify.check."
    ) in html
