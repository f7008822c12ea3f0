"""notebooks/13_memory.ipynb in real JupyterLab + Chromium: the live-memory report with its
output-history owner, the OOM explanation and a plan with its collectives, each visible and
screenshotted; the owners table sorts on a click. The sharding explorer in plan mode: a spec
edited in the browser is planned again in Python and the new peak and collectives are drawn;
a spec naming an axis the mesh lacks shows why and changes nothing. The profiled cell's
memory section."""

from __future__ import annotations

import pytest

from tests.browser.conftest import assert_visible, error_outputs, painted_text, run_notebook

pytestmark = pytest.mark.browser

NB = "13_memory.ipynb"


def test_memory_reports_in_jupyterlab(lab, page, artifacts_dir):
    run_notebook(page, lab, NB)

    leak = page.locator(".jp-OutputArea-output .jm", has_text="Device memory").first
    assert_visible(leak)
    owners = leak.locator("table").first
    painted_text(owners, "Out[", "history")
    painted_text(leak, "%reset -f out")
    leak.screenshot(path=str(artifacts_dir / "memory-leak.png"))

    # sortable: a click on "arrays" sorts ascending by that column
    owners.locator("th", has_text="arrays").click()
    counts = [int(t) for t in owners.locator("tbody tr td:nth-child(3)").all_inner_texts()]
    assert counts == sorted(counts)

    oom = page.locator(".jp-OutputArea-output .jm", has_text="out of memory").first
    assert_visible(oom)
    painted_text(oom, "asked for 1.0 TiB", "del optimizer")
    oom.screenshot(path=str(artifacts_dir / "memory-oom.png"))

    plan = page.locator(".jp-OutputArea-output .jm", has_text="Collectives XLA inserted").first
    assert_visible(plan)
    painted_text(plan, "Collectives XLA inserted", "fits")
    assert plan.locator(".jm-badge.jm-ok", has_text="fits").count() == 1
    assert plan.locator("table", has_text="all-gather").count() == 1
    plan.screenshot(path=str(artifacts_dir / "memory-plan.png"))

    page.set_viewport_size({"width": 1400, "height": 2000})  # the explorer and its plan in one shot
    ex = page.locator(".jm-explorer").first
    ex.wait_for(timeout=60_000)
    panel = ex.locator(".jm-plan")
    painted_text(panel, "Plan of train_step(params, x, y) for this layout", "all-reduce")
    assert "In[" in panel.locator("table.jm-plan-collectives").inner_text()  # the line's cell
    assert ex.locator(".jm-array b").first.inner_text() == "params.w1"
    peak = ex.locator(".jm-plan-peak b")
    assert peak.inner_text() == "24.1 MiB"  # %jaxplan's peak for data parallel (test_notebook_memory)
    ex.screenshot(path=str(artifacts_dir / "memory-explorer-plan.png"))

    inputs = ex.locator("input.jm-spec-input")
    inputs.nth(0).fill("data")  # FSDP-like: w1 split over data along its rows
    ex.locator("button.jm-apply").click()
    page.wait_for_function(
        "() => document.querySelector('.jm-explorer .jm-spec-text').textContent === \"P('data', None)\"",
        timeout=60_000,
    )
    painted_text(panel, "all-gather")
    fsdp_peak = peak.inner_text()
    assert fsdp_peak != "24.1 MiB"
    assert panel.locator("table.jm-plan-collectives", has_text="all-gather").count() == 1
    ex.scroll_into_view_if_needed()
    ex.screenshot(path=str(artifacts_dir / "memory-explorer-plan-edited.png"))
    # what a saved notebook keeps: the output's static HTML now holds the edited plan
    saved = page.evaluate(
        """() => window.jupyterapp.shell.currentWidget.content.widgets
                 .filter(c => c.model.type === 'code')
                 .flatMap(c => c.model.outputs.toJSON())
                 .filter(o => o.data && o.data['application/vnd.jupyter.widget-view+json'])
                 .map(o => o.data['text/html'])"""
    )
    assert len(saved) == 1 and "all-gather" in saved[0] and fsdp_peak in saved[0]

    inputs.nth(0).fill("batch")  # the mesh has no axis 'batch'
    ex.locator("button.jm-apply").click()
    err = ex.locator(".jm-error")
    err.wait_for(timeout=30_000)
    assert "unknown mesh axis 'batch'; the mesh has axes 'data'" in err.inner_text()
    assert peak.inner_text() == fsdp_peak  # nothing planned, nothing changed
    ex.screenshot(path=str(artifacts_dir / "memory-explorer-plan-error.png"))

    profiled = page.locator(".jp-OutputArea-output .jm", has_text="created in the cell, still alive").first
    assert_visible(profiled)
    painted_text(profiled, "created in the cell, still alive: 4 arrays, 16.0 MiB", "real_params['w1']")
    profiled.locator("h4", has_text="Memory").scroll_into_view_if_needed()
    profiled.screenshot(path=str(artifacts_dir / "memory-profiled-cell.png"))
    assert error_outputs(page) == []
