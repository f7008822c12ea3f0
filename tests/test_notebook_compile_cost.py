"""notebooks/14_compile_and_cost.ipynb shows what it teaches (issue 10): the ledger names the
recompiles, the persistent cache writes then hits and the settings come back, the per-layer
table lines up with nnx.tabulate row for row and adds up to the whole call, and the remat
comparison shows the optimized HLO that changed."""

from __future__ import annotations

import re

import pytest

from tests import helpers as nbutil

NB = "14_compile_and_cost.ipynb"
pytestmark = pytest.mark.slow


def text(tag: str) -> str:
    return re.sub(r"\x1b\[[0-9;]*m", "", nbutil.tagged_text(NB, tag))  # rich's colours


def test_runs_clean():
    nb, _seconds = nbutil.execute(NB)
    assert nbutil.errors(nb) == []


def test_the_ledger_names_the_recompiles_and_the_cache():
    ledger = text("ledger")
    assert re.search(r"In\[\d+\]:\d+\s+normalize\s+8\s", ledger), ledger
    assert "normalize compiled 8×" in ledger and "pad inputs to a few bucket shapes" in ledger
    assert "configure the persistent cache" in ledger and "not configured" in ledger


def test_the_cache_writes_then_hits_and_the_settings_come_back():
    first = text("cache-first")
    assert re.search(r"features\s+3\s.*3 miss, written", first), first
    hits = text("cache-hits")
    assert re.search(r"features\s+3\s.*3 hit\b", hits), hits
    assert "compile time in whole seconds" in " ".join(hits.split())
    restored = text("cache-restored")
    assert "'jax_compilation_cache_dir': None" in restored
    assert "'jax_persistent_cache_min_compile_time_secs': 1.0" in restored
    assert int(re.search(r"files written to the cache: (\d+)", restored).group(1)) >= 3


def _flax_paths(flax: str) -> list[str]:
    rows = [line.split("│") for line in flax.splitlines() if line.startswith("│")]
    return [r[1].strip() or "(model)" for r in rows if len(r) > 2 and r[2].strip()]


def test_per_layer_table_matches_nnx_tabulate_row_for_row_and_adds_up():
    ours = text("tabulate")
    lines = ours.splitlines()
    rule = next(i for i, line in enumerate(lines) if line.startswith("─"))
    paths = []
    for line in lines[rule + 1 :]:
        if not line.strip():
            break
        paths.append(line.split()[0])
    assert paths == [
        "(model)",
        "ln1",
        "attn",
        "attn/query",
        "attn/key",
        "attn/value",
        "attn/out",
        "ln2",
        "up",
        "down",
    ]
    assert "device time" in ours and "self time" in ours and "named_scope" in " ".join(ours.split())
    flax = text("nnx-tabulate")
    assert _flax_paths(flax)[: len(paths)] == paths
    check = text("flops-check")
    m = re.search(
        r"whole call ([\d,]+) FLOPs · first row ([\d,]+) · sum of self FLOPs ([\d,]+) \(([+-][\d.]+)%\)",
        check,
    )
    assert m, check
    whole, first, self_sum = (int(g.replace(",", "")) for g in m.groups()[:3])
    assert abs(first - whole) <= 0.01 * whole and abs(self_sum - whole) <= 0.01 * whole


def test_remat_comparison_shows_the_optimized_hlo_that_changed():
    diff = text("diff")
    assert re.search(r"^loss\s+changed\s+1 → 1", diff, re.M), diff
    m = re.search(r"loss: fusions (\d+) → (\d+) · instructions (\d+) → (\d+)", diff)
    assert m and int(m.group(3)) < int(m.group(4))  # remat recomputes the forward pass
    dots = re.search(r"dot (\d+) → (\d+)", diff)
    assert dots and int(dots.group(1)) < int(dots.group(2))


def test_throughput_against_the_measured_peak():
    t = " ".join(text("throughput").split())
    assert "Achieved throughput (--trace), against a peak of" in t
    assert "measured once per process: best of 7 float32 512×512 matmuls on cpu" in t
    assert re.search(r"train_step 5 [\d.]+ [µm]?s [\d.]+[kMG]? [\d.]+ [kMG]?FLOP/s", t), t
