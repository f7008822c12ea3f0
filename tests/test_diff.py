"""Comparing two profile reports (``jaxmagic.compare``, ``%jaxdiff``, issue 10) built from real
profiled runs, live and through ``%%jaxprofile --json`` files."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import pytest
from IPython.core.error import UsageError

import jaxmagic
from jaxmagic.diff import ReportVersionError, compare
from jaxmagic.profile import Profiler
from jaxmagic.profile.report import REPORT_VERSION


def chain(x):
    for _ in range(3):
        x = jnp.tanh(x @ x.T)
    return x.sum()


def profiled(remat: bool, shapes=((32, 32),)):
    step = jax.jit(jax.grad(jax.checkpoint(chain) if remat else chain))
    extra = jax.jit(lambda x: x * 2) if remat else None
    with Profiler() as prof:
        for shape in shapes:
            step(jnp.ones(shape))
        if extra is not None:
            extra(jnp.ones(4))
    return prof.report()


@pytest.fixture(scope="module")
def pair():
    return profiled(False), profiled(True, shapes=((32, 32), (16, 32)))


def test_per_function_ratios_appeared_and_new_reasons(pair):
    a, b = pair
    r = compare(a, b)
    by_name = {c.name: c for c in r.changes}
    chain_change = by_name["chain"]
    assert chain_change.status == "changed" and chain_change.compiles == (1, 2)
    fa, fb = a.function("chain"), b.function("chain")
    assert chain_change.compile_s == pytest.approx((fa.compile_total_s, fb.compile_total_s))
    assert chain_change.flops == (fa.flops, fb.flops) and fa.flops > 0
    assert chain_change.to_dict()["compile_ratio"] == pytest.approx(fb.compile_total_s / fa.compile_total_s)
    assert chain_change.new_reasons and all(
        x in " ".join(chain_change.new_reasons) for x in ("f32[32,32]", "f32[16,32]")
    )
    assert by_name["<lambda>"].status == "appeared" and by_name["<lambda>"].compiles == (0, 1)
    assert [c.impact for c in r.changes] == sorted((c.impact for c in r.changes), reverse=True)
    assert r.compiles == (a.n_compiles, b.n_compiles)
    back = compare(b, a)
    assert {c.name: c.status for c in back.changes}["<lambda>"] == "vanished"
    text = r.to_text()
    assert text.splitlines()[0] == f"Profile comparison · {r.summary()}"
    assert "New cache-miss reasons in B" in text and "appeared" in text
    assert "&lt;lambda&gt;" in r.to_html()
    assert json.loads(json.dumps(r.to_dict()))["functions"][0]["name"] == r.changes[0].name


def test_profile_dicts_carry_a_version_and_the_machine(pair):
    d = pair[0].to_dict()
    assert d["version"] == REPORT_VERSION == 1
    assert d["environment"] == {
        "jax": jax.__version__,
        "backend": jax.devices()[0].platform,
        "device_kind": jax.devices()[0].device_kind,
    }


def test_versions_and_machines_that_differ(pair):
    a, b = (p.to_dict() for p in pair)
    newer = {**b, "version": REPORT_VERSION + 1}
    with pytest.raises(
        ReportVersionError, match=r"B is a version 2 profile report; this jaxmagic reads versions up to 1"
    ):
        compare(a, newer)
    old = {k: v for k, v in a.items() if k not in ("version", "environment")}
    r = compare(old, b)
    assert any("different versions (A: none, B: 1)" in n for n in r.notes)
    other = {**b, "environment": {**b["environment"], "device_kind": "NVIDIA H100 80GB HBM3"}}
    r = compare(a, other)
    assert not r.same_machine and any("compared as shares of each run" in n for n in r.notes)
    chain = next(c for c in r.changes if c.name == "chain")
    share = abs(chain.compile_s[1] / other["wall_s"] - chain.compile_s[0] / a["wall_s"])
    assert chain.impact == pytest.approx(share)


def test_bad_input_is_a_clear_error(tmp_path):
    with pytest.raises(TypeError, match="expected a ProfileReport"):
        compare(3, 4)
    with pytest.raises(ValueError, match="cannot read"):
        compare(str(tmp_path / "missing.json"), {"functions": []})
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="is not JSON"):
        compare(str(bad), {"functions": []})
    with pytest.raises(ValueError, match="not a profile report"):
        compare({"count": 3}, {"functions": []})


def test_jaxdiff_over_jaxprofile_json_files(ip, tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    ip.run_cell("import jax, jax.numpy as jnp\ng = jax.jit(lambda x: jnp.sin(x) + 1)")
    ip.run_cell_magic("jaxprofile", f"-q --json {a}", "g(jnp.ones(3))")
    ip.run_cell("def h(x):\n    return x - 1")
    ip.run_cell_magic("jaxprofile", f"-q --json {b}", "g(jnp.ones(5))\njax.jit(h)(jnp.ones(2))")
    assert json.loads(a.read_text())["version"] == REPORT_VERSION
    r = ip.run_line_magic("jaxdiff", f"{a} {b} -o")
    assert type(r).__name__ == "ComparisonReport" and r.labels == (str(a), str(b))
    statuses = {c.name: c.status for c in r.changes}
    assert statuses["<lambda>"] == "changed" and statuses["h"] == "appeared", statuses
    g = next(c for c in r.changes if c.name == "<lambda>")
    assert g.new_reasons and "f32[3]" in g.new_reasons[0] and "f32[5]" in g.new_reasons[0]
    ip.user_ns["rep_b"] = jaxmagic.compare(str(a), str(b))
    out = tmp_path / "diff.json"
    assert ip.run_line_magic("jaxdiff", f"'{a}' '{b}' -q --json {out}") is None
    assert json.loads(out.read_text())["functions"]
    with pytest.raises(UsageError, match="needs two reports"):
        ip.run_line_magic("jaxdiff", f"{a}")
    with pytest.raises(UsageError, match="cannot read"):
        ip.run_line_magic("jaxdiff", f"{a} {tmp_path}/nope.json")
    with pytest.raises(UsageError, match="expected a ProfileReport"):
        ip.run_line_magic("jaxdiff", f"{a} 42")
    ip.user_ns.pop("rep_b", None)


def test_a_name_used_twice_is_matched_by_where_it_was_defined(pair):
    a = pair[0].to_dict()
    f = next(x for x in a["functions"] if x["name"] == "chain")
    twin = {**f, "defined_at": "In[9]:1"}
    b = {**a, "functions": [*a["functions"], twin]}
    statuses = {c.name: c.status for c in compare(a, b).changes}
    assert statuses[f"chain ({f['defined_at']})"] == "changed"
    assert statuses["chain (In[9]:1)"] == "appeared"
