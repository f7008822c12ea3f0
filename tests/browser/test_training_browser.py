"""The training widget in a real JupyterLab + Chromium: progress reaches the end, the curve has
points, the flight recorder's heatmap is drawn (live and in the snapshot), the Stop button ends a
long run, and the finished widget leaves a static snapshot."""

from __future__ import annotations

import nbformat
import pytest

from tests.browser.conftest import dismiss_dialogs, error_outputs, open_notebook, painted_text

pytestmark = pytest.mark.browser

SETUP = """import os
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
import time, jax, numpy as np, optax
from flax import nnx
from jaxmagic.train import Trainer, Callback
rng = np.random.default_rng(0)
X = rng.normal(size=(512, 16)).astype(np.float32); y = (X[:, 0] > 0).astype(np.int32)
class M(nnx.Module):
    def __init__(self, rngs): self.a = nnx.Linear(16, 32, rngs=rngs); self.b = nnx.Linear(32, 2, rngs=rngs)
    def __call__(self, x): return self.b(nnx.relu(self.a(x)))
def loss_fn(m, b):
    return optax.softmax_cross_entropy_with_integer_labels(m(b[0]), b[1]).mean(), m(b[0])
class Slow(Callback):
    def on_steps(self, trainer, steps, logs): time.sleep(0.05)
"""
SHORT = """short = Trainer(M(nnx.Rngs(0)), optax.adam(1e-2), loss_fn, devices=jax.devices()[:1], flight=5)
h1 = short.fit((X, y), steps=60, batch_size=32, eval_data=(X[:64], y[:64]), eval_every=20, steps_per_call=5,
               callbacks=[Slow()])"""
LONG = """long = Trainer(M(nnx.Rngs(1)), optax.adam(1e-3), loss_fn, devices=jax.devices()[:1])
h2 = long.fit((X, y), steps=200000, batch_size=32, steps_per_call=5, callbacks=[Slow()])
print("after stop:", h2.status, long.step)"""


def _cell(page, i):
    return page.locator(".jp-Notebook .jp-Cell").nth(i)


def test_progress_widget_runs_to_the_end_and_stop_button_stops(lab, page, artifacts_dir):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(s) for s in (SETUP, SHORT, LONG)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, lab.root / "train_browser.ipynb")
    open_notebook(page, lab, "train_browser.ipynb")
    # not awaited: the last cell runs until Stop is clicked
    page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")

    # the short run: live widget while training (a screenshot of it), then the snapshot
    short = _cell(page, 1)
    short.locator(".jm-progress-widget").wait_for(timeout=180_000)
    # the flight recorder's heatmap: one row per layer, drawn live from Python's PNG
    short.locator(".jm-progress-widget .jm-heat img.jm-heat-img").wait_for(timeout=180_000)
    assert short.locator(".jm-progress-widget .jm-heat-names div").all_inner_texts() == ["a", "b"]
    page.wait_for_timeout(800)
    short.screenshot(path=str(artifacts_dir / "training_live.png"))
    short.locator(".jm .jm-progress[aria-valuenow='100']").wait_for(timeout=180_000)
    assert short.locator(".jm-progress-widget").count() == 0  # replaced by the static snapshot
    width = short.locator(".jm-progress-fill").evaluate("e => e.style.width")
    assert float(width.rstrip("%")) == 100.0
    points = short.locator("polyline.jm-series-loss").get_attribute("points").split()
    assert len(points) >= 30
    assert short.locator("circle").count() >= 3  # eval points
    painted_text(short, "step 60 / 60")
    # the snapshot keeps the heatmap: 12 records (flight=5: one per 5-step call) by 2 layers, decoded
    heat = short.locator(".jm .jm-heat img.jm-heat-img")
    assert heat.evaluate("i => [i.complete, i.naturalWidth, i.naturalHeight]") == [True, 12, 2]
    painted_text(short, "Gradient norm per layer", "memory peak")
    short.screenshot(path=str(artifacts_dir / "training_snapshot.png"))

    # the long run: click Stop while the cell is busy
    long = _cell(page, 2)
    button = long.locator(".jm-progress-widget button.jm-stop")
    button.wait_for(timeout=180_000)
    long.locator("polyline.jm-series-loss").wait_for(timeout=60_000)
    page.wait_for_timeout(1500)
    long.screenshot(path=str(artifacts_dir / "training_before_stop.png"))
    dismiss_dialogs(page)
    button.click()
    long.get_by_text("after stop: stopped").wait_for(timeout=60_000)
    text = long.inner_text()
    assert "stopped from the widget" in text
    step = int(text.split("after stop: stopped")[1].split()[0])
    assert 0 < step < 200000
    long.screenshot(path=str(artifacts_dir / "training_stopped.png"))
    assert error_outputs(page) == []
