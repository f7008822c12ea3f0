"""Text and HTML faces of ProfileReport / IRReport: exact text at a fixed width, parsed HTML."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxmagic.profile import Profiler
from jaxmagic.profile.report import CompileRecord, FunctionProfile, Insight, ProfileReport
from tests.helpers import parse_html


def fixed_report() -> ProfileReport:
    rec = CompileRecord(0.01, 0.02, 0.3, "line 2", ("first compile",), ("first",), "x: f32[3]")
    rec2 = CompileRecord(
        0.01, 0.02, 0.25, "line 2", ("x changed from f32[3] to f32[4]",), ("shape",), "x: f32[4]"
    )
    f = FunctionProfile(
        "step",
        "jit",
        "cell.py:1",
        (rec, rec2),
        None,
        1e6,
        None,
        4096.0,
        {
            "argument_bytes": 16,
            "output_bytes": 16,
            "alias_bytes": 0,
            "temp_bytes": 0,
            "generated_code_bytes": 0,
        },
        "{ lambda ; a:f32[4]. let  in (a,) }",
        None,
    )
    ins = Insight("recompile", "step compiled 2 times at line 2.", "keep shapes fixed", "step", 2)
    return ProfileReport(
        wall_s=1.0,
        sync_s=0.001,
        functions=(f,),
        insights=(ins,),
        eager_ops={},
        eager_sites={},
        transfers={},
        syncs={},
    )


def test_text_is_pinned_at_a_fixed_width():
    assert (
        fixed_report().to_text(width=80)
        == """\
JAX profile of cell: 1 s wall · 1 function · 2 compiles
  compile 610 ms (trace 20 ms, lower 40 ms, backend 550 ms) · run 390 ms (incl.
  1 ms waiting for the device at the end)

Functions
function  called at  compiles  trace  lower  compile  calls  flops    bytes  flops/byte  temp mem
────────  ─────────  ────────  ─────  ─────  ───────  ─────  ─────  ───────  ──────────  ────────
step      line 2            2  20 ms  40 ms   550 ms    n/a     1M  4.0 KiB      244.14       0 B

Cache misses
  step (line 2): x changed from f32[3] to f32[4]

Memory (live device arrays, shared buffers counted once)
  peak per device of each compiled program = arguments + outputs + temporaries −
    aliased + code
    function  arguments  outputs  temporaries  aliased  code  peak
    ────────  ─────────  ───────  ───────────  ───────  ────  ────
    step           16 B     16 B          0 B      0 B   0 B  32 B

Insights
  ! [recompile] step compiled 2 times at line 2.
    → fix: keep shapes fixed

jaxpr of step
  { lambda ; a:f32[4]. let  in (a,) }"""
    )


def test_short_repr_and_dict():
    r = fixed_report()
    assert repr(r) == "ProfileReport(1 function, 2 compiles, 1 s wall)"
    assert r.to_dict()["functions"][0]["cache_misses"] == ["first compile", "x changed from f32[3] to f32[4]"]


def test_html_is_balanced_escaped_and_self_contained():
    with Profiler() as prof:
        jax.jit(lambda x: x + 1)(jnp.ones(2))
        jax.jit(lambda x: x * 2)(jnp.ones(3))
    html = prof.report().to_html()
    c = parse_html(html)
    assert "<lambda>" not in html.replace("&lt;lambda&gt;", "")
    assert "&lt;lambda&gt;" in html
    assert {"jm", "jm-functions", "jm-sortable", "jm-fn", "jm-jaxpr"} <= c.classes
    assert "http://" not in html and "https://" not in html  # nothing fetched from a CDN
    assert len(c.scripts) == 1  # sorting is progressive enhancement; the report reads without it


def test_incomplete_report_is_marked_in_both_faces():
    r = ProfileReport(
        wall_s=0.1,
        sync_s=0.0,
        functions=(),
        insights=(),
        eager_ops={},
        eager_sites={},
        transfers={},
        syncs={},
        complete=False,
        error="KeyError: 'boom'",
    )
    assert "INCOMPLETE" in r.to_text() and "KeyError: 'boom'" in r.to_text()
    c = parse_html(r.to_html())
    assert "incomplete: the code raised" in c.text


def test_missing_cost_numbers_show_as_na():
    f = FunctionProfile("g", "jit", None, (), None, None, None, None, None, None, None)
    r = ProfileReport(
        wall_s=0.1,
        sync_s=0.0,
        functions=(f,),
        insights=(),
        eager_ops={},
        eager_sites={},
        transfers={},
        syncs={},
    )
    assert "n/a" in r.to_text()
    parse_html(r.to_html())


def test_ir_html_folds_nested_jaxprs():
    from jaxmagic.ir import inspect_call

    def g(x):
        return jax.lax.scan(lambda c, a: (c + a, c), 0.0, x)[0]

    r = inspect_call(g, jnp.ones(3))
    c = parse_html(r.to_html())
    assert "jm-fold" in c.classes and "jm-stablehlo" in c.classes
    assert repr(r).startswith("IRReport(jaxpr of g(x: f32[3]), ")
