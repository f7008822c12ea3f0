"""notebooks/15_data_and_flight_recorder.ipynb shows what it teaches: a Grain run interrupted
mid-epoch resumes at its saved position bit for bit, a slow pipeline shows as data-wait, the
flight recorder's per-layer records, a divergence named by layer and replayed to its operation
and line, and progress for a hand-written loop and a vmapped scan."""

from __future__ import annotations

import re

import pytest

from tests import helpers

NB = "15_data_and_flight_recorder.ipynb"
pytestmark = pytest.mark.slow


def text(tag: str) -> str:
    return helpers.tagged_text(NB, tag)


def test_runs_clean():
    nb, _ = helpers.execute(NB)
    assert helpers.errors(nb) == []


def test_interrupted_grain_run_resumes_at_its_position_bit_for_bit():
    assert "reference step 56" in text("reference")
    interrupt = text("interrupt")
    m = re.search(r"the model holds step (\d+); checkpoints \[(.*)\]", interrupt)
    assert m, interrupt
    step = int(m.group(1))
    assert 28 < step < 56 and str(step) in m.group(2).split(", ")  # mid second epoch, saved
    # the pipeline's position in the same checkpoint: the batches trained, not what was read ahead
    assert f"data position in the checkpoint: {{'next_index': {step}}}" in interrupt
    resume = text("resume")
    assert f"resumed at step {step}" in resume
    assert "resumed step 56 bit-identical to the uninterrupted run: True" in resume
    assert "replay" not in resume.lower()  # restored by set_state, nothing read again


def test_slow_pipeline_shows_as_data_wait():
    out = text("datawait")
    fast = int(re.search(r"fast pipeline: data-wait (\d+)%", out).group(1))
    slow = int(re.search(r"slow pipeline: data-wait (\d+)%", out).group(1))
    assert slow > 50 and fast < slow, out


def test_flight_recorder_records_each_layer():
    out = text("flight")
    assert "layers: ['l1', 'l2']" in out
    steps = [int(s) for s in re.search(r"records at steps: \[(.*)\]", out).group(1).split(", ")]
    assert steps[0] == 1 and all(b - a >= 8 for a, b in zip(steps, steps[1:])) and len(steps) >= 5
    assert "flight recorder:" in out and re.search(r"l1\s+[\d.]+\s+[\d.]+\s+[\d.]+", out)
    assert "jm-heat-img" in out and "data:image/png;base64," in out  # the HTML face: the heatmap


def test_divergence_names_the_layer_and_replay_the_operation_and_line():
    out = text("diverge")
    assert re.search(r"step \d+ went non-finite \(loss [\d.]+\) \(gradients non-finite in gate\)", out)
    assert "all parameters finite: True" in out
    replay = text("replay")
    assert re.search(r"NaN produced by mul at In\[\d+\], line 14 in routed_loss", replay), replay[:500]
    assert "entropy = -jnp.where(p > 0, p * jnp.log(p), 0.0)" in replay


def test_progress_of_hand_written_loops():
    track = text("track")
    assert "hand-written loop: step 300 / 300, completed" in track
    scan = text("scan")
    assert "scan relax: step 5000 / 5000, completed" in scan and "lanes: 4" in scan
