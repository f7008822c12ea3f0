"""The compile ledger in a real kernel (ipykernel, where cells are files under /tmp): over
course notebooks, its count equals an independent ``jax.monitoring`` count (issue 10)."""

from __future__ import annotations

import os
import re
import tempfile

import pytest

from tests.conftest import ROOT

FIRST = """\
%load_ext jaxmagic
import jax
_independent = [0]
def _count(event, seconds, **kw):
    if event == "/jax/core/compile/backend_compile_duration":
        _independent[0] += 1
jax.monitoring.register_event_duration_secs_listener(_count)
"""

LAST = """\
import jaxmagic.ledger
_ledger = %jaxcompiles -o
_inspections = jaxmagic.ledger.active().inspections
print("LEDGER", _ledger.count, _inspections, _independent[0])
print("SITES", sorted({s.site.split(":")[0] for s in _ledger.sites})[:50])
"""


@pytest.mark.slow
@pytest.mark.parametrize("name", ["04_jit_pipeline.ipynb", "10_flax_nnx.ipynb"])
def test_ledger_count_equals_an_independent_count_over_a_course_notebook(name):
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    nb.cells.insert(0, nbformat.v4.new_code_cell(FIRST))
    nb.cells.append(nbformat.v4.new_code_cell(LAST))
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    client = NotebookClient(
        nb,
        timeout=600,
        kernel_name="python3",
        allow_errors=True,
        resources={"metadata": {"path": tempfile.mkdtemp(prefix="nb-ledger-")}},
    )
    client.execute()
    text = "".join(o.get("text", "") for o in nb.cells[-1].outputs if o.get("output_type") == "stream")
    match = re.search(r"LEDGER (\d+) (\d+) (\d+)", text)
    assert match, nb.cells[-1].outputs
    ledger, inspections, independent = map(int, match.groups())
    assert independent > 0 and ledger + inspections == independent
    sites = re.search(r"SITES (.*)", text).group(1)
    assert "'In[" in sites, sites  # compiles point at the kernel's cells
