"""notebooks/03_training.ipynb: training, snapshot, interrupt + resume, 8-device mesh."""

from __future__ import annotations

import re

import pytest

from tests import helpers

pytestmark = pytest.mark.slow  # executes notebooks in a real kernel

NB = "03_training.ipynb"


@pytest.fixture(scope="module")
def nb():
    notebook, _ = helpers.execute(NB)
    assert helpers.errors(notebook) == []
    return notebook


def test_fit_leaves_a_static_snapshot(nb):
    outs = helpers.cell_outputs(nb, "fit")
    html = helpers.text_of(outs)
    # the live widget was replaced by the static snapshot when training ended
    assert "jm-progress" in html and "completed" in html and "<polyline" in html
    assert 'aria-valuenow="100"' in html and "step 88 / 88" in html
    assert "eval_accuracy" in html and "Checkpoints" in html


def test_history_renders(nb):
    text = helpers.text_of(helpers.cell_outputs(nb, "history"))
    assert "Training" in text and "<svg" in text and "eval_loss" in text


def test_interrupt_then_resume(nb):
    text = helpers.text_of(helpers.cell_outputs(nb, "interrupt"))
    m = re.search(r"model holds step (\d+); checkpoints: \[(.*)\]", text)
    assert m, text
    step = int(m.group(1))
    assert 120 <= step < 220 and str(step) in m.group(2).split(", ")
    assert "interrupted at step" in text
    resume = helpers.text_of(helpers.cell_outputs(nb, "resume"))
    assert f"resumed at step {step}" in resume
    assert re.search(r"(completed|stopped) \d+ \{'eval_accuracy': 0\.9", resume), resume


def test_eight_device_mesh(nb):
    text = helpers.text_of(helpers.cell_outputs(nb, "mesh"))
    assert "mesh: {'data': 8}" in text
    acc = float(re.search(r"eval accuracy: ([0-9.]+)", text).group(1))
    assert acc > 0.85
    assert "step 88/88" in text  # the terminal line of progress="text"
    pred = helpers.text_of(helpers.cell_outputs(nb, "predict"))
    assert float(pred.split("test accuracy")[1]) > 0.85
