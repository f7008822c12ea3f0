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


@pytest.mark.slow
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


# -- --hlo reports: how the optimized program changed ---------------------------------------


def _instructions(text: str, opcode: str) -> int:
    """The test's own count: instructions ``%name = <array type> opcode(`` in the HLO text."""
    import re

    return len(re.findall(rf"=\s*[a-z0-9]+\[[\d,]*\](?:\{{[^}}]*\}})?\s+{re.escape(opcode)}\(", text))


def profiled_hlo(step, *args):
    with Profiler() as prof:
        step(*args)
    return prof.report(hlo=True)


@pytest.fixture(scope="module")
def remat_pair():
    x = jnp.ones((32, 32))
    plain = profiled_hlo(jax.jit(jax.value_and_grad(chain)), x)
    remat = profiled_hlo(jax.jit(jax.value_and_grad(jax.checkpoint(chain))), x)
    return plain, remat


def test_hlo_changes_under_remat_match_the_hlo_text_counted_here(remat_pair):
    a, b = remat_pair
    r = compare(a, b, labels=("plain", "remat"))
    change = next(c for c in r.changes if c.name == "chain")
    ta, tb = a.function("chain").hlo, b.function("chain").hlo
    h = change.hlo_changes
    assert h["fusions"] == (_instructions(ta, "fusion"), _instructions(tb, "fusion"))
    assert h["fusions"][0] != h["fusions"][1]  # remat changed the program
    for kind, in_a, in_b in h["ops"]:
        if kind in ("fusion", "tanh", "multiply", "dot", "add"):
            assert (in_a, in_b) == (_instructions(ta, kind), _instructions(tb, kind)), kind
    changed = {k for k, _, _ in h["ops"]}
    assert "tanh" in changed  # the forward recomputed in the backward pass: one more tanh
    assert _instructions(tb, "tanh") == _instructions(ta, "tanh") + 1
    assert h["collectives"] == [] and h["collective_bytes"] == (0, 0)
    text, html = r.to_text(), r.to_html()
    assert "Optimized HLO" in text and f"fusions {h['fusions'][0]} → {h['fusions'][1]}" in text
    assert "tanh 3 → 4" in text and "jm-hlo-diff" in html
    d = json.loads(json.dumps(r.to_dict()))
    chain_d = next(f for f in d["functions"] if f["name"] == "chain")
    assert chain_d["hlo_changes"]["fusions"] == list(h["fusions"])


def test_collectives_that_appear_are_counted_like_the_hlo_text():
    import numpy as np
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    def project(x, w):
        return x @ w

    mesh = Mesh(np.array(jax.devices()), ("d",))  # automatic axes: XLA chooses the collectives
    x, w = jnp.ones((16, 64)), jnp.ones((64, 32))
    single = profiled_hlo(jax.jit(project), x, w)
    # contraction dimension sharded: each device sums its slice, XLA adds an all-reduce
    sharded = profiled_hlo(
        jax.jit(project, out_shardings=NamedSharding(mesh, P())),
        jax.device_put(x, NamedSharding(mesh, P(None, "d"))),
        jax.device_put(w, NamedSharding(mesh, P("d", None))),
    )
    r = compare(single, sharded)
    change = next(c for c in r.changes if c.name == "project")
    h = change.hlo_changes
    tb = sharded.function("project").hlo
    reduces = tb.count(" all-reduce(") + tb.count(" all-reduce-start(")
    assert reduces >= 1 and ("all-reduce", 0, reduces) in h["collectives"]
    assert h["collective_bytes"][0] == 0 and h["collective_bytes"][1] >= 16 * 32 * 4  # f32[16,32] summed
    assert "all-reduce 0 → " in r.to_text()


def test_hlo_on_one_side_only_says_so_and_compares_the_rest(remat_pair, pair):
    with_hlo, without = remat_pair[0], pair[0]
    r = compare(with_hlo, without, labels=("hlo", "plain"))
    (note,) = [n for n in r.notes if "optimized HLO is missing" in n]
    assert "missing in plain (only hlo was profiled with --hlo)" in note
    change = next(c for c in r.changes if c.name == "chain")
    assert change.hlo_changes is None and change.status == "changed"
    assert change.compile_s[0] > 0 and change.compile_s[1] > 0  # the rest is compared
    assert "HLO only in hlo" in r.to_text()
    reverse = compare(without, with_hlo, labels=("plain", "hlo"))
    assert any("missing in plain" in n for n in reverse.notes)


def test_jaxdiff_of_hlo_json_files(ip, tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    ip.run_cell("import jax, jax.numpy as jnp\nfrom tests.test_diff import chain")
    ip.run_cell_magic(
        "jaxprofile", f"-q --hlo --json {a}", "jax.jit(jax.value_and_grad(chain))(jnp.ones((8, 8)))"
    )
    ip.run_cell_magic(
        "jaxprofile",
        f"-q --hlo --json {b}",
        "jax.jit(jax.value_and_grad(jax.checkpoint(chain)))(jnp.ones((8, 8)))",
    )
    r = ip.run_line_magic("jaxdiff", f"{a} {b} -o")
    h = next(c for c in r.changes if c.name == "chain").hlo_changes
    hb = json.loads(b.read_text())
    text_b = next(f for f in hb["functions"] if f["name"] == "chain")["hlo"]
    assert h["fusions"][1] == _instructions(text_b, "fusion")
