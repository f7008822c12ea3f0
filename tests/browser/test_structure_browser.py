"""The sharding explorer in real JupyterLab + Chromium: change the grid dimensions, edit a
spec, see the grid and per-device bytes update; a bad spec shows its reason."""

from __future__ import annotations

import pytest

from tests.browser.conftest import error_outputs, run_notebook

pytestmark = pytest.mark.browser

NB = "02_structure_and_sharding.ipynb"


def set_theme(page, theme: str) -> None:
    page.evaluate(f"() => window.jupyterapp.commands.execute('apputils:change-theme', {{theme: '{theme}'}})")
    light = "true" if "Light" in theme else "false"
    page.wait_for_function(f"() => document.body.dataset.jpThemeLight === '{light}'", timeout=30_000)
    page.wait_for_timeout(500)  # the theme's stylesheet settles


def test_sharding_explorer_in_jupyterlab(lab, page, artifacts_dir):
    run_notebook(page, lab, NB)

    ex = page.locator(".jm-explorer").first
    ex.wait_for(timeout=60_000)
    ex.scroll_into_view_if_needed()
    grid = ex.locator("table.jm-grid")
    assert ex.locator(".jm-array b").first.inner_text() == "model.l1.kernel"
    assert (grid.get_attribute("data-rows"), grid.get_attribute("data-cols")) == ("4", "1")
    ex.screenshot(path=str(artifacts_dir / "structure-explorer-initial.png"))

    # change the displayed dimensions: rows <- dim 1, so dim 0 (split 4 ways) becomes the columns
    ex.locator("select.jm-dim-row").select_option("1")
    page.wait_for_function("() => document.querySelector('.jm-explorer table.jm-grid').dataset.cols === '4'")
    assert grid.get_attribute("data-rows") == "1"
    cells = [c.get_attribute("data-devices") for c in grid.locator("td").all()]
    assert cells == ["0,4", "1,5", "2,6", "3,7"]

    bytes_before = ex.locator(".jm-dev-bytes").all_inner_texts()
    inputs = ex.locator("input.jm-spec-input")
    inputs.nth(0).fill("fsdp")
    inputs.nth(1).fill("data")
    ex.locator("button.jm-apply").click()
    page.wait_for_function(
        "() => document.querySelector('.jm-explorer .jm-spec-text').textContent === \"P('fsdp', 'data')\"",
        timeout=30_000,
    )
    bytes_after = ex.locator(".jm-dev-bytes").all_inner_texts()
    assert len(bytes_after) == 8 and bytes_after != bytes_before
    cells = [c.get_attribute("data-devices") for c in ex.locator("table.jm-grid td").all()]
    assert sorted(cells) == [str(i) for i in range(8)]  # every device now holds its own shard
    ex.scroll_into_view_if_needed()
    ex.screenshot(path=str(artifacts_dir / "structure-explorer-edited.png"))

    # hover a device: its cell in the grid is highlighted and the table shows what it holds
    ex.locator(".jm-dev[data-device='5'] span").first.click()
    assert ex.locator("table.jm-grid td.jm-hl").count() == 1
    # the pin goes to Python, which answers with the "device 5 holds" column
    page.wait_for_function(
        "() => document.querySelector('.jm-explorer table.jm-leaves thead')"
        ".textContent.includes('device 5 holds')",
        timeout=30_000,
    )
    assert "device 5 holds" in ex.locator("table.jm-leaves thead").inner_text()

    inputs = ex.locator("input.jm-spec-input")
    inputs.nth(1).fill("fsdp")
    ex.locator("button.jm-apply").click()
    err = ex.locator(".jm-error")
    err.wait_for(timeout=30_000)
    assert "mesh axis 'fsdp' is used in dimensions 0 and dimension 1" in err.inner_text()
    assert ex.locator(".jm-dev-bytes").all_inner_texts() == bytes_after  # nothing changed
    ex.screenshot(path=str(artifacts_dir / "structure-explorer-error.png"))

    # the same widget in JupyterLab's dark theme: colours follow the theme's variables
    light = err.evaluate("e => getComputedStyle(e).color")
    set_theme(page, "JupyterLab Dark")
    try:
        assert err.evaluate("e => getComputedStyle(e).color") != light
        ex.screenshot(path=str(artifacts_dir / "structure-explorer-dark.png"))
    finally:
        set_theme(page, "JupyterLab Light")

    tree_out = page.locator(".jp-OutputArea-output .jm", has_text="By kind").first
    tree_out.scroll_into_view_if_needed()
    tree_out.screenshot(path=str(artifacts_dir / "structure-tree.png"))
    assert error_outputs(page) == []
