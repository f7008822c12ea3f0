"""notebooks/13_memory.ipynb shows what it teaches, and in a real kernel an uncaught
RESOURCE_EXHAUSTED keeps its error output and gets the explanation right after it."""

from __future__ import annotations

import re

import pytest

from tests import helpers as nbutil

NB = "13_memory.ipynb"
pytestmark = pytest.mark.slow


def text(tag: str) -> str:
    return nbutil.tagged_text(NB, tag)


def test_runs_clean():
    nb, _ = nbutil.execute(NB)  # its run time is recorded by test_notebooks, never asserted
    assert nbutil.errors(nb) == []


def test_output_history_leak_found_then_freed():
    leak = text("leak")
    assert re.search(r"Out\[\d+\]\s+history\s+1\s+8\.0 MiB", leak)
    assert "%reset -f out  frees    8.0 MiB" in leak and "not reported by the CPU backend" in leak
    freed = text("freed")
    assert re.search(r"user_ns_hidden\['_'\]\s+history\s+1\s+8\.0 MiB", freed)
    hidden = text("hidden")
    assert "held by the output history: []" in hidden and "4.0 MiB" in hidden


def test_owners_inside_model_and_optimizer():
    owners = text("owners")
    assert "model.blocks[0].mlp.kernel" in owners
    assert "del model, same_model" in owners and "del optimizer" in owners


def test_oom_explained():
    oom = text("oom")
    assert "out of device memory: asked for 1.0 TiB" in oom
    # explain_oom called by hand names the cell as IPython's traceback does, not a temp file
    assert re.search(r"at In\[\d+\], line 3: return jnp\.zeros", oom) and "ipykernel_" not in oom
    assert "%jaxplan make_buffer(2**38)" in " ".join(oom.split())
    fixes = oom.split("fixes, most bytes saved per device first (? = cannot be computed here):\n")[1]
    assert fixes.startswith("  del optimizer ") and "saves  10.0 MiB" in fixes.splitlines()[0]


def test_plan_explorer_widget():
    outs = nbutil.cell_outputs(nbutil.execute(NB)[0], "explorer")
    widget = [o for o in outs if "application/vnd.jupyter.widget-view+json" in o.get("data", {})]
    assert len(widget) == 1, [list(o.get("data", {})) for o in outs]
    plain = widget[0]["data"]["text/plain"]  # the text fallback carries the plan too
    assert "plan of train_step(params, x, y) for this layout" in plain
    assert re.search(r"all-reduce\s+data\s+8", plain) and "compiled only (nothing ran)" in plain


def test_profiled_cell_memory_section():
    profiled = text("profiled")
    # by hand: real_params and grads, two f32[512,2048] and two f32[2048,512]: 4 x 4 MiB
    assert "created in the cell, still alive: 4 arrays, 16.0 MiB" in profiled
    owners = {line.split()[-1] for line in profiled.splitlines() if "  device 0  " in line}
    assert owners == {"grads['w1']", "grads['w2']", "real_params['w1']", "real_params['w2']"}
    assert "+16.0 MiB" in profiled and "f32[4096,1024]" not in profiled  # scratch was freed
    assert re.search(r"\n\s+loss\s+9\.0 MiB\s+8\.0 MiB", profiled)


def test_layouts_compared_and_planned():
    compare = text("compare")
    rows = {line.split("  ")[0]: line for line in compare.splitlines() if line.strip()}
    assert "all-reduce over data" in rows["data parallel"]
    assert "all-gather over data" in rows["FSDP"]
    assert "over model" in rows["tensor parallel"]
    plan = text("plan")
    assert "compiled only (nothing ran)" in plan and "fits tpu-v5e" in plan
    assert re.search(r"all-gather\s+data\s+8", plan)
    sweep = text("sweep")
    assert re.search(r"largest batch that fits 64 MiB per device: \d+ \(\d+ compiles, nothing ran\)", sweep)


def test_uncaught_oom_in_a_kernel_keeps_the_error_and_adds_the_explanation(tmp_path):
    import nbformat
    from nbclient import NotebookClient
    from nbformat.v4 import new_code_cell, new_notebook

    nb = new_notebook(
        cells=[
            new_code_cell("import jax.numpy as jnp\n%load_ext jaxmagic\nkeep = jnp.ones((256, 256))"),
            new_code_cell("def grow(n):\n    return jnp.zeros((n,), jnp.float32)\n\ngrow(2**38)"),
        ],
        metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
    )
    import os

    from tests.conftest import ROOT

    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    NotebookClient(
        nb,
        timeout=120,
        kernel_name="python3",
        allow_errors=True,
        resources={"metadata": {"path": str(tmp_path)}},
    ).execute()
    outs = nb.cells[1].outputs
    kinds = [o["output_type"] for o in outs]
    assert kinds[0] == "error" and outs[0]["ename"] == "JaxRuntimeError"
    assert outs[0]["evalue"] == "RESOURCE_EXHAUSTED: Out of memory allocating 1099511627776 bytes."
    shown = [o for o in outs[1:] if o["output_type"] == "display_data"]
    assert shown and "out of device memory: asked for 1.0 TiB" in shown[0]["data"]["text/plain"]
    assert "del keep" in shown[0]["data"]["text/plain"] and "<h3>" in shown[0]["data"]["text/html"]
    nbformat.validate(nb)
