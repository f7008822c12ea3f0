"""The course notebooks (04+) show what they teach: checks on tagged cells' executed outputs.

Each notebook runs once per session (``tests.nbutil.execute``); errors and run time are
checked for every notebook by ``test_notebooks.py``.
"""

from __future__ import annotations

import re

from tests import nbutil


def html_of(nb_name: str, tag: str) -> str:
    outs = nbutil.cell_outputs(nbutil.execute(nb_name)[0], tag)
    assert outs, f"{nb_name}: no outputs for cell tagged {tag!r}"
    return "".join(o.get("data", {}).get("text/html", "") for o in outs)


def text_of(nb_name: str, tag: str) -> str:
    outs = nbutil.cell_outputs(nbutil.execute(nb_name)[0], tag)
    assert outs, f"{nb_name}: no outputs for cell tagged {tag!r}"
    return nbutil.text_of(outs)


# -- 04 jit pipeline -------------------------------------------------------------

JIT = "04_jit_pipeline.ipynb"


def test_jit_eager_loop_is_flagged_and_jit_compiles_once():
    assert 'data-kind="eager-ops"' in html_of(JIT, "eager")
    jit = text_of(JIT, "jit")
    assert "1 function · 1 compile" in jit and 'data-kind="eager-ops"' not in jit


def test_jit_new_shape_and_static_values_recompile_with_reasons():
    assert "x changed from f32[256,128] to f32[100,128]" in text_of(JIT, "newshape")
    static = html_of(JIT, "static")
    assert 'data-kind="recompile"' in static and "smooth compiled 3 times" in static
    assert "static argument" in static and "changed from 1 to 2" in static


def test_jit_pipeline_stages_are_shown():
    assert "stablehlo.dot_general" in text_of(JIT, "stablehlo")
    optimized = text_of(JIT, "optimized")
    assert "HloModule jit_block" in optimized and "fusion" in optimized


def test_jit_host_sync_in_loop_is_flagged():
    assert 'data-kind="host-sync"' in html_of(JIT, "hostsync")
