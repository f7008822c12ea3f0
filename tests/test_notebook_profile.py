"""notebooks/01_profile.ipynb: the profiler reports what the notebook provokes."""

from __future__ import annotations

import pytest

from tests import helpers

pytestmark = pytest.mark.slow  # executes notebooks in a real kernel

NB = "01_profile.ipynb"


def html_of(tag):
    outs = helpers.cell_outputs(helpers.execute(NB)[0], tag)
    return "".join(o.get("data", {}).get("text/html", "") for o in outs)


def test_runs_clean_with_html_reports():
    nb, _ = helpers.execute(NB)
    assert helpers.errors(nb) == []
    assert len(helpers.outputs(nb, "text/html")) >= 7


def test_eager_loop_is_flagged_and_jit_loop_is_not():
    assert 'data-kind="eager-ops"' in html_of("eager")
    assert 'data-kind="eager-ops"' not in html_of("jit")
    assert 'data-kind="recompile"' not in html_of("jit")


def test_recompile_storm_is_reported_and_the_fix_removes_it():
    storm = html_of("storm")
    assert 'data-kind="recompile"' in storm and "normalize compiled 8 times" in storm
    assert "v changed from f32[10] to f32[11]" in storm
    assert 'data-kind="recompile"' not in html_of("fixed")


def test_weak_type_and_static_recompiles_are_explained():
    weak = html_of("weak")
    assert "changed weak type" in weak and "static argument" in weak


def test_trace_mode_shows_a_timeline():
    assert "Device timeline" in html_of("trace")
