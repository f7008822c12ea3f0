"""01_profile.ipynb in a real JupyterLab + Chromium: reports render, jaxprs expand on click."""

from __future__ import annotations

import pytest

from tests.browser.conftest import run_notebook

pytestmark = pytest.mark.browser


def test_profile_notebook_in_jupyterlab(lab, page, artifacts_dir):
    run_notebook(page, lab, "01_profile.ipynb")

    reports = page.locator(".jp-OutputArea-output .jm")
    assert reports.count() >= 7
    table = page.locator("table.jm-functions").first
    table.scroll_into_view_if_needed()
    assert table.is_visible()
    assert table.locator("tbody tr").count() >= 1

    # A function's details, then its collapsed jaxpr, open on click and show the program.
    fn = page.locator("details.jm-fn:has(details.jm-jaxpr)").first
    fn.scroll_into_view_if_needed()
    jaxpr = fn.locator("details.jm-jaxpr").first
    body = jaxpr.locator("pre.jm-ir")
    assert not jaxpr.is_visible()
    fn.locator("summary").first.click()
    assert jaxpr.is_visible() and not body.is_visible()
    jaxpr.locator("summary").first.click()
    assert body.is_visible()
    assert "lambda" in body.inner_text()

    # Sorting: clicking the "compiles" header orders rows (scripts run in a trusted notebook).
    storm_report = page.locator(".jm:has([data-kind=recompile])").first
    assert storm_report.is_visible()
    storm_report.scroll_into_view_if_needed()
    page.screenshot(path=str(artifacts_dir / "profile_recompile.png"))
    table.scroll_into_view_if_needed()
    page.screenshot(path=str(artifacts_dir / "profile_report.png"))
    storm_report.screenshot(path=str(artifacts_dir / "profile_report_element.png"))

    # Sorting (script runs because the notebook was executed in this session, so trusted).
    multi = page.locator("table.jm-functions:has(tbody tr:nth-child(2))").first
    multi.scroll_into_view_if_needed()
    header = multi.locator("th", has_text="compiles")

    def counts():
        return [int(t) for t in multi.locator("tbody tr td:nth-child(3)").all_inner_texts()]

    header.click()
    assert counts() == sorted(counts())
    header.click()
    assert counts() == sorted(counts(), reverse=True)

    # The same report in the dark theme must stay readable (colours are inherited/themed).
    page.evaluate("window.jupyterapp.commands.execute('apputils:change-theme', {theme: 'JupyterLab Dark'})")
    page.wait_for_function("document.body.dataset.jpThemeLight === 'false'")
    page.wait_for_timeout(500)
    storm_report.screenshot(path=str(artifacts_dir / "profile_report_dark.png"))
    color = storm_report.evaluate("e => getComputedStyle(e).color")
    page.evaluate("window.jupyterapp.commands.execute('apputils:change-theme', {theme: 'JupyterLab Light'})")
    page.wait_for_function("document.body.dataset.jpThemeLight === 'true'")
    r, g, b = (int(v) for v in color[color.index("(") + 1 : color.index(")")].split(",")[:3])
    assert r + g + b > 3 * 150, f"report text colour {color} is too dark for the dark theme"
