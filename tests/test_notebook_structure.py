"""notebooks/02_structure_and_sharding.ipynb runs in a real kernel and shows what it promises."""

from __future__ import annotations

import pytest

from tests import helpers

pytestmark = pytest.mark.slow  # executes notebooks in a real kernel

NB = "02_structure_and_sharding.ipynb"
WIDGET = "application/vnd.jupyter.widget-view+json"


@pytest.fixture(scope="module")
def nb():
    nb, _ = helpers.execute(NB)  # its run time is recorded by test_notebooks, never asserted
    assert helpers.errors(nb) == []
    return nb


def text(nb, tag):
    return helpers.text_of(helpers.cell_outputs(nb, tag))


def test_devices(nb):
    assert "8 cpu device(s), 8 local" in text(nb, "devices")


def test_model_tree_html_and_text(nb):
    outs = helpers.cell_outputs(nb, "tree-model")
    (out,) = [o for o in outs if "text/html" in o.get("data", {})]
    html = out["data"]["text/html"]
    assert "By kind" in html and "BatchStat" in html and "RngState" in html and "l1.kernel" in html
    assert "Deep view" in html  # small model: treescope view included (collapsed)
    assert out["data"]["text/plain"].startswith("TreeSummary model: 10 leaves")


def test_filters_and_optimizer_state(nb):
    t = text(nb, "tree-filter")
    assert "optimizer.opt_state" in t and "kind=OptState" in t and "model.l1" not in t


def test_linen_and_checkpoint(nb):
    t = text(nb, "tree-linen")
    assert "source: Linen variables" in t and "BatchStat" in t and "params.Conv_0.kernel" in t
    c = text(nb, "tree-ckpt")
    assert "step 100" in c and "model.l1.kernel.value" in c and "f32[64,128]" in c and "bn." not in c


def test_sharding_views(nb):
    t = text(nb, "sharding-batch")
    assert "P('data', None)" in t and "f32[16,64]" in t and "data=2 × fsdp=4" in t
    nd = text(nb, "sharding-nd")
    assert "facet 4/4" in nd and "split by 'data'" in nd


def test_explorer_widget_and_edit(nb):
    outs = helpers.cell_outputs(nb, "explorer")
    assert any(WIDGET in o.get("data", {}) for o in outs)
    assert any("Bytes per device" in o.get("data", {}).get("text/html", "") for o in outs)
    edited = helpers.cell_outputs(nb, "edited")
    assert any(WIDGET in o.get("data", {}) for o in edited)
    assert "state: 14 arrays" in helpers.text_of(edited)
    assert "error: mesh axis 'fsdp' is used in dimensions 0 and dimension 1" in text(nb, "bad-spec")
