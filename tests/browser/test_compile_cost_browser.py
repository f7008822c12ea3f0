"""notebooks/14_compile_and_cost.ipynb in real JupyterLab + Chromium: the compile ledger with its
recompile fix, the second run's cache hits, the per-layer table with device time, the remat
comparison with its optimized-HLO section and the achieved FLOP/s, each visible and
screenshotted; the per-layer table sorts on a click."""

from __future__ import annotations

import pytest

from tests.browser.conftest import assert_visible, error_outputs, painted_text, run_notebook

pytestmark = pytest.mark.browser

NB = "14_compile_and_cost.ipynb"


def _report(page, text: str):
    return page.locator(".jp-OutputArea-output .jm", has_text=text).first


def test_compile_and_cost_reports_in_jupyterlab(lab, page, artifacts_dir):
    run_notebook(page, lab, NB, timeout=600_000)

    ledger = _report(page, "normalize compiled 8×")
    assert_visible(ledger)
    painted_text(ledger, "Compile ledger", "normalize", "not configured", "pad inputs")
    ledger.screenshot(path=str(artifacts_dir / "compile-ledger.png"))

    hits = _report(page, "6 hits")
    assert_visible(hits)
    painted_text(hits, "hit", "whole seconds")
    hits.screenshot(path=str(artifacts_dir / "compile-cache-hits.png"))

    table = _report(page, "Per-layer cost")
    assert_visible(table)
    painted_text(table, "attn/query", "self time", "named_scope")
    table.screenshot(path=str(artifacts_dir / "compile-tabulate.png"))
    # sortable: a click on "params" sorts the rows by parameter count, ascending
    grid = table.locator("table").first
    grid.locator("th", has_text="params").first.click()
    keys = grid.locator("tbody tr td:nth-child(5)").evaluate_all(
        "tds => tds.map(t => Number(t.dataset.sort))"
    )
    assert keys == sorted(keys) and len(keys) == 10
    # the time columns sit right of the FLOPs: scroll the report sideways as a person would
    table.evaluate("el => { el.scrollLeft = el.scrollWidth; }")
    painted_text(table, "device time")
    table.screenshot(path=str(artifacts_dir / "compile-tabulate-time.png"))

    diff = _report(page, "Profile comparison")
    assert_visible(diff)
    painted_text(diff, "loss", "changed", "Optimized HLO", "fusions")
    assert diff.locator("table.jm-hlo-diff").count() == 1
    diff.screenshot(path=str(artifacts_dir / "compile-diff-remat.png"))

    throughput = _report(page, "Achieved throughput")
    assert_visible(throughput)
    painted_text(throughput, "train_step", "FLOP/s", "measured once per process")
    assert throughput.locator("table.jm-throughput").count() == 1
    throughput.screenshot(path=str(artifacts_dir / "compile-throughput.png"))
    assert error_outputs(page) == []
