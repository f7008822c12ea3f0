"""Execute notebooks with a real kernel (nbclient) once per test session and read outputs."""

from __future__ import annotations

import functools
import os
import pathlib
import time

import nbformat

from tests.conftest import ROOT

NOTEBOOKS = ROOT / "notebooks"


@functools.lru_cache(maxsize=None)
def execute(name: str, timeout: int = 300):
    """Run ``notebooks/<name>`` top to bottom in a fresh kernel; returns ``(nb, seconds)``.

    The kernel's working directory is a fresh temporary folder, and ``PYTHONPATH`` points at
    this checkout so the kernel imports the jaxmagic under test.
    """
    import tempfile

    from nbclient import NotebookClient

    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    env_pp = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    os.environ["PYTHONPATH"] = env_pp  # inherited by the kernel process
    workdir = tempfile.mkdtemp(prefix=f"nb-{pathlib.Path(name).stem}-")
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=True,
                            resources={"metadata": {"path": workdir}})
    t0 = time.perf_counter()
    client.execute()
    return nb, time.perf_counter() - t0


def outputs(nb, mime: str | None = None) -> list:
    """Every output of every code cell (optionally only those carrying ``mime``)."""
    outs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    if mime is None:
        return outs
    return [o for o in outs if mime in o.get("data", {})]


def errors(nb) -> list[str]:
    return [f"{o['ename']}: {o['evalue']}" for o in outputs(nb) if o.get("output_type") == "error"]


def cell_outputs(nb, tag: str) -> list:
    """Outputs of the cells whose source contains the marker comment ``# test: <tag>``."""
    marker = f"# test: {tag}"
    return [o for c in nb.cells if c.cell_type == "code" and marker in c.source for o in c.outputs]


def text_of(outs) -> str:
    """All text/plain, text/html and stream text of ``outs`` joined."""
    parts = []
    for o in outs:
        if o.get("output_type") == "stream":
            parts.append(o.get("text", ""))
        data = o.get("data", {})
        parts.append(data.get("text/plain", ""))
        parts.append(data.get("text/html", ""))
    return "\n".join(parts)
