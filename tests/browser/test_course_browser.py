"""Every course notebook without a browser test of its own, in real JupyterLab + Chromium:
run all cells, no error output, every jaxmagic output (static HTML reports and widget
views) visible, one screenshot per notebook. Plus one notebook in Jupyter Notebook 7, where
a sharding-explorer widget must render too."""

from __future__ import annotations

import pathlib
import re

import pytest

from tests import helpers
from tests.browser.conftest import dismiss_dialogs, error_outputs, run_notebook

pytestmark = pytest.mark.browser

HERE = pathlib.Path(__file__).resolve().parent
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


def _dedicated() -> set[str]:
    """Notebooks named in another browser test: they are covered there."""
    names: set[str] = set()
    for path in HERE.glob("test_*.py"):
        if path.name != pathlib.Path(__file__).name:
            names |= set(re.findall(r"\b(\d\d_\w+\.ipynb)\b", path.read_text()))
    return names


COURSE = sorted(p.name for p in helpers.NOTEBOOKS.glob("*.ipynb") if p.name not in _dedicated())


def _expected_outputs(page) -> dict[str, int]:
    """From the notebook model: how many outputs are widget views, and how many carry a
    jaxmagic HTML report (``class="jm"``) without being a widget."""
    return page.evaluate(
        """(mime) => { let widgets = 0, reports = 0;
             for (const c of window.jupyterapp.shell.currentWidget.content.widgets) {
               if (c.model.type !== 'code') continue;
               for (const o of c.model.outputs.toJSON()) {
                 const d = o.data || {};
                 if (d[mime]) widgets++;
                 else if ((d['text/html'] || '').includes('class="jm')) reports++;
               } }
             return {widgets, reports}; }""",
        WIDGET_MIME,
    )


def _assert_visible(locator, what: str) -> None:
    for i in range(locator.count()):
        el = locator.nth(i)
        el.scroll_into_view_if_needed()
        box = el.bounding_box()
        assert el.is_visible() and box and box["width"] > 50 and box["height"] > 10, (
            f"{what} #{i} is not visible (box {box})"
        )


def _show(page, locator) -> None:
    """Scroll ``locator`` to the top of the notebook and wait until JupyterLab has painted it
    (off-screen cells are not rendered until they scroll in)."""
    locator.evaluate("e => e.scrollIntoView({block: 'start'})")
    page.wait_for_function(
        """(e) => { const r = e.getBoundingClientRect();
                  return r.height > 0 && r.top >= 0 && r.top < window.innerHeight; }""",
        arg=locator.element_handle(),
        timeout=10_000,
    )
    page.wait_for_timeout(700)


@pytest.mark.parametrize("name", COURSE)
def test_course_notebook_in_jupyterlab(name, lab, page, artifacts_dir):
    run_notebook(page, lab, name)

    expected = _expected_outputs(page)
    reports = page.locator(".jp-OutputArea-output > .jm, .jp-OutputArea-output .jp-RenderedHTMLCommon > .jm")
    assert reports.count() >= expected["reports"] > 0
    _assert_visible(reports, "jaxmagic report")

    # Widget views render into a Lumino panel (the widget manager's renderer), not a mime div.
    views = page.locator(".jp-OutputArea-output.lm-Panel")
    if expected["widgets"]:
        page.wait_for_function(
            """(n) => Array.from(document.querySelectorAll('.jp-OutputArea-output.lm-Panel'))
                     .filter(e => e.getBoundingClientRect().height > 20).length >= n""",
            arg=expected["widgets"],
            timeout=60_000,
        )
        _assert_visible(views, "widget view")
        assert "Error displaying widget" not in page.locator(".jp-Notebook").inner_text()
    assert views.count() == expected["widgets"]

    # The screenshot shows the most telling output: a widget view, a training snapshot, a
    # %jaxcheck finding, a profiler insight, else the first report.
    for selector in (".jp-OutputArea-output.lm-Panel", ".jm-progress", ".jm .jm-finding", ".jm .jm-insight"):
        focus = page.locator(selector).first
        if focus.count():
            break
    else:
        focus = reports.first
    _show(page, focus)
    page.screenshot(path=str(artifacts_dir / f"course-{pathlib.Path(name).stem}.png"))
    assert error_outputs(page) == []


WIDGET_NB = "09_parallelism.ipynb"


def test_sharding_widget_renders_in_notebook7(lab, page, artifacts_dir):
    """Jupyter Notebook 7 (same server, /notebooks/...): run all from the Run menu and see
    the explorer widget render with its mesh grid."""
    page.goto(lab.url(f"notebooks/{WIDGET_NB}"))
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=120_000)
    page.wait_for_selector("text=Python 3 (ipykernel)", timeout=120_000)  # kernel attached
    dismiss_dialogs(page)
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).first.click()
    explorer = page.locator(".jp-OutputArea-output.lm-Panel .jm-explorer").first
    explorer.wait_for(timeout=240_000)
    explorer.scroll_into_view_if_needed()
    assert explorer.is_visible()
    grid = explorer.locator("table.jm-grid")
    grid.wait_for(timeout=30_000)
    assert grid.locator("td").count() >= 8
    explorer.locator(".jm-dev[data-device='5'] span").first.click()  # live: device 5's shard lights up
    assert explorer.locator("table.jm-grid td.jm-hl").count() == 1
    assert page.locator(".jp-RenderedText[data-mime-type='application/vnd.jupyter.error']").count() == 0
    page.screenshot(path=str(artifacts_dir / "course-notebook7-explorer.png"))
