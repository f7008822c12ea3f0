"""notebooks/13_memory.ipynb in real JupyterLab + Chromium: the live-memory report with its
output-history owner, the OOM explanation and a plan with its collectives, each visible and
screenshotted; the owners table sorts on a click."""

from __future__ import annotations

import pytest

from tests.browser.conftest import dismiss_dialogs, error_outputs, open_notebook, painted_text, run_all

pytestmark = pytest.mark.browser

NB = "13_memory.ipynb"


def _visible(locator) -> None:
    locator.scroll_into_view_if_needed()
    box = locator.bounding_box()
    assert locator.is_visible() and box and box["width"] > 200 and box["height"] > 40, box


def test_memory_reports_in_jupyterlab(lab, page, artifacts_dir):
    open_notebook(page, lab, NB)
    run_all(page)
    dismiss_dialogs(page)
    assert error_outputs(page) == []

    leak = page.locator(".jp-OutputArea-output .jm", has_text="Device memory").first
    _visible(leak)
    owners = leak.locator("table").first
    painted_text(owners, "Out[", "history")
    painted_text(leak, "%reset -f out")
    leak.screenshot(path=str(artifacts_dir / "memory-leak.png"))

    # sortable: a click on "arrays" sorts ascending by that column
    owners.locator("th", has_text="arrays").click()
    counts = [int(t) for t in owners.locator("tbody tr td:nth-child(3)").all_inner_texts()]
    assert counts == sorted(counts)

    oom = page.locator(".jp-OutputArea-output .jm", has_text="out of memory").first
    _visible(oom)
    painted_text(oom, "asked for 1.0 TiB", "del optimizer")
    oom.screenshot(path=str(artifacts_dir / "memory-oom.png"))

    plan = page.locator(".jp-OutputArea-output .jm", has_text="Collectives XLA inserted").first
    _visible(plan)
    painted_text(plan, "Collectives XLA inserted", "fits")
    assert plan.locator(".jm-badge.jm-ok", has_text="fits").count() == 1
    assert plan.locator("table", has_text="all-gather").count() == 1
    plan.screenshot(path=str(artifacts_dir / "memory-plan.png"))
    assert error_outputs(page) == []
