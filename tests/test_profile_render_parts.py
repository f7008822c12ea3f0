"""Report parts added for trustworthy numbers: trimmed HLO, notes, unknown counts, lower
bounds, other threads' work. Exact text where it is pinned, parsed HTML elsewhere."""

from __future__ import annotations

import re

import jax
import jax.numpy as jnp

from jaxmagic.profile import Profiler
from jaxmagic.profile.report import CompileRecord, FunctionProfile, ProfileReport
from jaxmagic.render.profile import HLO_TEXT_LINES
from tests.helpers import parse_html


def report_with(**fields) -> ProfileReport:
    rec = CompileRecord(0.01, 0.02, 0.3, "line 2", ("first compile",), ("first",), "x: f32[3]")
    fn = dict(
        name="step",
        kind="jit",
        defined_at="cell.py:1",
        compiles=(rec,),
        calls=None,
        flops=None,
        transcendentals=None,
        bytes_accessed=None,
        memory=None,
        jaxpr=None,
        hlo=None,
    )
    fn.update(fields.pop("fn", {}))
    base = dict(
        wall_s=1.0,
        sync_s=0.0,
        functions=(FunctionProfile(**fn),),
        insights=(),
        eager_ops={},
        eager_sites={},
        transfers={},
        syncs={},
    )
    base.update(fields)
    return ProfileReport(**base)


def test_hlo_is_trimmed_in_text_with_the_count_left_out_and_collapsed_in_html():
    with Profiler() as prof:
        jax.jit(lambda x: jnp.sin(x) @ x.T + jnp.cos(x).sum())(jnp.ones((8, 8)))
    r = prof.report(hlo=True)
    hlo = r.function("<lambda>").hlo
    n = len(hlo.splitlines())
    long = report_with(fn={"hlo": "\n".join(f"line {i}" for i in range(2000))})
    text = long.to_text()
    assert "line 39" in text and "line 40\n" not in text
    assert f"… {2000 - HLO_TEXT_LINES} more lines (report.function('step').hlo has all)" in text
    (section,) = [(a, t) for a, t in parse_html(r.to_html()).details if t.startswith("optimized HLO")]
    assert "open" not in section[0] and f"({n} lines)" in section[1]


def test_notes_unknown_counts_and_other_threads_render_in_both_faces():
    note = "eager ops not measured: core.EvalTrace.process_primitive is not as jaxmagic expects in jax 9.9"
    r = report_with(
        notes=(note,),
        unavailable=("eager ops",),
        other_threads={"eager_ops": 12},
        fn={"calls": 69, "calls_lower_bound": True},
    )
    text, html = r.to_text(), r.to_html()
    assert text.count("note: eager ops not measured") == 1 and "jax 9.9" in html
    assert "eager ops <b>n/a</b>" in html
    assert "Other threads (a data loader, a prefetch thread) did 12 eager ops" in text
    assert re.search(r"step\s+line 2\s+1 .*≥69", text) and "≥69" in html
    assert r.to_dict()["unavailable"] == ["eager ops"]
    assert r.to_dict()["functions"][0]["calls_lower_bound"] is True
