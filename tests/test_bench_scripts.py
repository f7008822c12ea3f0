"""Every bench script still runs, at toy sizes, and prints every row it promises.

A bench that rots (an API it calls moves, a peer it compares with stops importing) gives no
result, and a row that never runs is not a result. These runs check that each script exits
cleanly and prints each named row with a figure; they never look at the figures (timing is the
bench's business, a test never asserts one).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow  # each script is a fresh process compiling its own programs

TINY_MLP = ["--width", "32", "--steps", "4", "--repeats", "1"]

SCRIPTS = {
    "trainer_speed.py": (
        ["--steps", "100", "--scan", "50", "--repeats", "2"],
        [
            "trainer (progress on)",
            "hand lax.scan x50",
            "trainer, arrays",
            "trainer, list of batches",
            "keras 3 fit, steps_per_execution=1",
            "keras 3 fit, steps_per_execution=50",
            "memory (compiled call",
        ],
    ),
    "trainer_compile.py": (
        TINY_MLP,
        ["hand single step", "trainer call, guard=call", "trainer call, guard=step"],
    ),
    "xla_cpu_options.py": (TINY_MLP, ["defaults", "fusion emitters off", "concurrency scheduler"]),
    "trainer_call_ab.py": (TINY_MLP, ["trainer, gather, guard=call", "hand lax.scan body"]),
    "bench_ledger.py": (["--repeats", "1"], ["dispatch-bound", "compile-bound", "5000 compiles recorded"]),
    "profile_overhead.py": (["--repeats", "1"], ["dispatch-bound", "compute-bound", "%load_ext jaxmagic"]),
    "progress_overhead.py": (
        ["--repeats", "1"],
        ["progress.scan", "vmap(progress.scan) x4", "one widget view"],
    ),
    "bench_memory.py": ([], ["jaxmagic.memory()", "baseline: live_arrays+nbytes"]),
    "bench_structure.py": (
        [],
        ["jaxmagic.tree capture", "baseline: treescope html", "512-device simulated mesh"],
    ),
}


def test_every_bench_script_is_listed_here():
    scripts = {
        p.name for p in (ROOT / "bench").glob("*.py") if p.name != "abtest.py"
    }  # abtest: a shared module
    assert scripts == set(SCRIPTS)


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_bench_script_runs_and_prints_its_rows(script):
    args, rows = SCRIPTS[script]
    env = dict(os.environ, PYTHONPATH=str(ROOT), KERAS_BACKEND="jax")
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = done.stdout
    assert done.returncode == 0, out + done.stderr[-3000:]
    assert "skipped" not in out and "not installed" not in out, out  # every peer row really runs
    lines = out.splitlines()
    for row in rows:
        hits = [line for line in lines if line.lstrip().startswith(row)]
        assert hits, f"{script}: no row {row!r} in\n{out}"
        assert any(re.search(r"\d", line[line.index(row) + len(row) :]) for line in hits), (
            f"{script}: row {row!r} has no figure: {hits}"
        )
