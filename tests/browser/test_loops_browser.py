"""Tracked loops in a real JupyterLab + Chromium: a Python loop (``jaxmagic.track``) and a
jitted, vmapped, nested scan (``jaxmagic.progress.scan``) draw the trainer's widget live, then
leave static snapshots with the counts the loops made; Stop ends a long Python loop."""

from __future__ import annotations

import nbformat
import pytest

from tests.browser.conftest import dismiss_dialogs, error_outputs, open_notebook, painted_text

pytestmark = pytest.mark.browser

SETUP = """import time, jax, jax.numpy as jnp
import jaxmagic
sgd = jax.jit(lambda w: (w - 0.05 * 2 * w, jnp.sum(w ** 2)))"""
LOOP = """bar = jaxmagic.track(range(60), name="descent")
w = jnp.ones(8)
for step in bar:
    w, loss = sgd(w)
    bar.log(loss=loss)
    time.sleep(0.03)
print("loop done", bar.n)"""
SCAN = """P = jaxmagic.progress
def inner(c, x):
    jax.debug.callback(lambda: time.sleep(0.0004))  # slow enough to watch
    c = c * 0.9 + x
    P.log(c=c)
    return c, None
def outer(c, x):
    c, _ = P.scan(inner, c, jnp.full(20, x), every=5, name="inner")
    return c, c
run = jax.jit(jax.vmap(lambda c: P.scan(outer, c, jnp.linspace(0, 1, 400), name="relax")))
c, ys = run(jnp.arange(4.0))
print("scan done", P.last().done, P.last().lanes, P.last().children[0].passes)"""
LONG = """for step in jaxmagic.track(range(100_000), name="long"):
    time.sleep(0.01)
print("after stop:", jaxmagic.progress.last().status, jaxmagic.progress.last().done)"""


def _cell(page, i):
    return page.locator(".jp-Notebook .jp-Cell").nth(i)


def test_tracked_loop_and_tracked_scan_draw_live_then_leave_snapshots(lab, page, artifacts_dir):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(s) for s in (SETUP, LOOP, SCAN, LONG)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, lab.root / "loops_browser.ipynb")
    open_notebook(page, lab, "loops_browser.ipynb")
    page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")

    loop = _cell(page, 1)
    loop.locator(".jm-progress-widget").wait_for(timeout=180_000)
    loop.locator("polyline.jm-series-loss").wait_for(timeout=60_000)
    loop.screenshot(path=str(artifacts_dir / "loop_live.png"))
    assert loop.locator(".jm-progress-widget button.jm-stop").is_visible()  # a Python loop can stop
    painted_text(loop, "loop done 60")
    assert loop.locator(".jm-progress-widget").count() == 0  # replaced by the static snapshot
    text = painted_text(loop, "step 60 / 60", "completed")
    assert "first step" in text and "compile" in text and "loss" in text
    assert loop.locator(".jm .jm-progress[aria-valuenow='100']").count() == 1
    assert len(loop.locator("polyline.jm-series-loss").get_attribute("points").split()) == 60
    loop.screenshot(path=str(artifacts_dir / "loop_snapshot.png"))

    scan = _cell(page, 2)
    scan.locator(".jm-progress-widget").wait_for(timeout=180_000)  # made from XLA's callback thread
    assert not scan.locator(".jm-progress-widget button.jm-stop").is_visible()  # jitted: no Stop
    page.wait_for_timeout(1500)
    scan.screenshot(path=str(artifacts_dir / "scan_live.png"))
    painted_text(scan, "scan done 400 4 400", timeout=180_000)
    text = painted_text(scan, "scan relax", "step 400 / 400", "inner")
    assert "vmapped lanes" in text and "reported every 4 steps" in text
    assert scan.locator("td", has_text="20 / 20").count() == 1  # the nested loop's row
    scan.screenshot(path=str(artifacts_dir / "scan_snapshot.png"))

    long = _cell(page, 3)
    button = long.locator(".jm-progress-widget button.jm-stop")
    button.wait_for(timeout=180_000)
    page.wait_for_timeout(1000)
    dismiss_dialogs(page)
    button.click()
    long.get_by_text("after stop: stopped").wait_for(timeout=60_000)
    text = painted_text(long, "stopped from the widget at step")
    done = int(text.split("after stop: stopped")[1].split()[0])
    assert 0 < done < 100_000
    long.screenshot(path=str(artifacts_dir / "loop_stopped.png"))
    assert error_outputs(page) == []
