"""``jaxmagic.track``: real Python loops over real jitted steps. Counts, logged values and the
lines shown are checked against the loop's own independent count; nothing depends on timing
(rates are checked for their formula and formatting, never for their size)."""

from __future__ import annotations

import io
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from IPython.utils.capture import capture_output

import jaxmagic
from jaxmagic._format import fmt_count
from jaxmagic._internals import monitoring_listeners
from jaxmagic.progress.state import ProgressReport
from jaxmagic.progress.tracker import Tracker
from jaxmagic.progress.views import LoopView, TerminalLoopView, resolve_view
from jaxmagic.render.loops import loop_line, loop_stats


class Recorder(LoopView):
    """Keeps every report the run pushes, and the run (to press Stop as the widget does)."""

    def __init__(self, stop_at: int | None = None):
        self.reports: list[ProgressReport] = []
        self.final: ProgressReport | None = None
        self.run = None
        self.stop_at = stop_at

    def start(self, run, report):
        self.run = run

    def update(self, report):
        self.reports.append(report)
        if self.stop_at is not None and report.done >= self.stop_at:
            self.run.stop_requested = True

    def finish(self, report):
        self.final = report


def _step():
    @jax.jit
    def step(w, x):
        loss = jnp.mean((w * x - 1.0) ** 2)
        return w - 0.1 * jnp.mean(2 * (w * x - 1.0) * x), loss

    return step


def test_loop_counts_logs_one_step_behind_and_times_the_first_step_apart():
    step, w = _step(), jnp.float32(0.0)
    xs = np.linspace(0.5, 1.5, 40, dtype=np.float32)
    view = Recorder()
    bar = jaxmagic.track(range(40), progress=view, max_rate=1e9)
    expected, pending_max = [], 0
    for i in bar:
        w, loss = step(w, xs[i])
        bar.log(loss=loss, lr=0.1)
        pending_max = max(pending_max, len(bar._pending))
        expected.append(float(loss))  # the test's own count (it syncs; the tracker does not)
    r = view.final
    assert r is bar.report() or r.to_dict() == bar.report().to_dict()
    assert (r.status, r.done, r.total, r.kind) == ("completed", 40, 40, "python")
    assert pending_max <= 1  # read one step behind: never more than one step queued
    steps, values = r.series["loss"]
    assert steps == tuple(range(1, 41)) and list(values) == expected
    assert r.series["lr"] == (tuple(range(1, 41)), (0.1,) * 40) and r.last["loss"] == expected[-1]
    # the first iteration (it compiled `step`) is timed apart and the rate leaves it out
    assert r.first_step_seconds is not None and r.compile_seconds > 0
    run = bar._run
    assert run.done_first == 1 and r.steps_per_second == (40 - 1) / (run.t_last - run.t_first)
    assert dict(loop_stats(r))["steps/s"] == fmt_count(r.steps_per_second)
    # every live update is a consistent snapshot: counts only grow, and never past the loop
    done = [u.done for u in view.reports]
    assert done == sorted(done) and done[0] == 0 and done[-1] == 40
    assert all(len(u.series.get("loss", ((), ()))[0]) <= u.done + 1 for u in view.reports)


def test_break_and_exception_show_where_the_loop_stopped_and_leave_the_exception_alone():
    before = monitoring_listeners()
    view = Recorder()
    for i in jaxmagic.track(range(100), name="search", progress=view):
        if i == 36:
            break
    assert (view.final.status, view.final.done) == ("stopped", 36)
    assert "ended early after 36 of 100 steps" in view.final.message
    assert monitoring_listeners() == before  # the compile listener went with the loop

    boom = KeyError("bad key")
    view = Recorder()
    with pytest.raises(KeyError) as info:
        for i in jaxmagic.track(range(10), progress=view):
            if i == 4:
                raise boom
    assert info.value is boom and info.value.__traceback__ is not None
    assert (view.final.status, view.final.done) == ("stopped", 4)
    assert monitoring_listeners() == before

    view = Recorder()  # inside `with`, the exception is named
    with pytest.raises(ZeroDivisionError):
        with jaxmagic.track(range(10), progress=view) as bar:
            for i in bar:
                1 / (i - 3)
    assert (
        view.final.done == 3
        and view.final.message == "ended at step 3 by ZeroDivisionError: division by zero"
    )
    assert jaxmagic.progress.last().to_dict() == view.final.to_dict()


def test_stop_from_the_view_ends_the_loop_before_the_next_iteration():
    view = Recorder(stop_at=7)
    seen = [i for i in jaxmagic.track(range(1000), progress=view, max_rate=1e9)]
    assert seen == list(range(7)) and view.final.status == "stopped" and view.final.done == 7
    assert view.final.message == "stopped from the widget at step 7"


def test_generators_with_and_without_total():
    view = Recorder()
    for _ in jaxmagic.track((i for i in range(8)), total=10, progress=view):
        pass
    assert (view.final.done, view.final.total) == (8, 10)
    assert view.final.message == "the iterable ended after 8 of total=10"
    view = Recorder()
    bar = jaxmagic.track(iter(range(5)), progress=view)
    assert [x for x in bar] == list(range(5)) and view.final.total is None and view.final.done == 5
    assert math.isnan(view.final.fraction) and "step 5 " in loop_line(view.final) + " "
    with pytest.raises(TypeError, match="has no total"):
        len(bar)
    with pytest.raises(RuntimeError, match="already iterated"):
        iter(bar)


def test_terminal_line_outside_a_kernel(ip):
    assert isinstance(resolve_view("auto"), TerminalLoopView)  # pytest is no kernel
    stream = io.StringIO()
    bar = jaxmagic.track(range(12), progress=TerminalLoopView(stream, width=100), name="warmup")
    for i in bar:
        bar.log(x=float(i))
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("warmup · step 0/12 [....................]   0%")
    assert "\n".join(lines[1:]) == bar.report().to_text(100)
    assert lines[1].startswith("warmup · step 12/12 [####################] 100% · ")
    # terminal IPython: "auto" is the text line (no widget, no HTML)
    with capture_output() as out:
        ip.run_cell("import jaxmagic\nfor s in jaxmagic.track(range(3), name='ipy'): pass")
    assert "ipy · step 3/3 [####################] 100%" in out.stdout


@pytest.mark.slow
def test_capture_imports_no_ipython_and_a_plain_loop_no_jax():
    import subprocess
    import sys

    code = (
        "import sys, jaxmagic\n"
        "for i in jaxmagic.track(range(3)): pass\n"  # "auto": decides without importing IPython
        "print(jaxmagic.progress.last().done, 'jax' in sys.modules, 'IPython' in sys.modules)\n"
        "import jax.numpy as jnp\n"
        "jaxmagic.progress.scan(lambda c, x: (c + x, None), 0.0, jnp.ones(5))\n"
        "print(jaxmagic.progress.last().done, 'IPython' in sys.modules, 'ipywidgets' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert [line.split() for line in out.stdout.splitlines() if line[0].isdigit()] == [
        ["3", "False", "False"],
        ["5", "False", "False"],
    ]


@pytest.mark.parametrize(
    "make,error,match",
    [
        (lambda: jaxmagic.track(5), TypeError, r"needs an iterable .* got int; did you mean range\(5\)\?"),
        (lambda: jaxmagic.track(None), TypeError, "got NoneType"),
        (
            lambda: jaxmagic.track(range(10), total=5),
            ValueError,
            r"total=5 disagrees with len\(iterable\)=10",
        ),
        (lambda: jaxmagic.track([1, 2], total=-1), ValueError, "total must be >= 0"),
        (lambda: jaxmagic.track(iter([1]), total="3"), TypeError, "total must be a whole number"),
        (lambda: jaxmagic.track(range(3), total=True), TypeError, "total must be a whole number"),
        (lambda: jaxmagic.track(range(3), progress="tqdm"), ValueError, "progress must be"),
        (lambda: jaxmagic.track(range(3), max_rate=0), ValueError, "max_rate must be"),
    ],
)
def test_bad_input_is_refused_before_anything_runs(make, error, match):
    before = monitoring_listeners(), jaxmagic.progress.last()
    with pytest.raises(error, match=match):
        make()
    assert (monitoring_listeners(), jaxmagic.progress.last()) == before


def test_log_refuses_non_scalars_and_logging_outside_the_loop():
    bar = jaxmagic.track(range(3), progress=None)
    with pytest.raises(RuntimeError, match="inside the loop"):
        bar.log(loss=1.0)
    for _ in bar:
        with pytest.raises(ValueError, match=r"takes a scalar, got an array of shape \(3,\)"):
            bar.log(loss=jnp.ones(3))
        with pytest.raises(ValueError, match="takes a real scalar, got a str"):
            bar.log(name="x")
    assert bar.report().series == {}


def test_tracker_type_and_repr():
    bar = jaxmagic.track([10, 20, 30], name="items", progress=None)
    assert isinstance(bar, Tracker) and len(bar) == 3 and repr(bar) == "Tracker('items', 0/3)"
    assert list(bar) == [10, 20, 30] and repr(bar) == "Tracker('items', 3/3)"
    assert repr(bar.report()).startswith("ProgressReport(items: step 3 / 3, completed, ")


def test_redraws_are_throttled_to_max_rate():
    view = Recorder()
    bar = jaxmagic.track(range(20_000), progress=view, max_rate=10)
    for _ in bar:
        pass
    elapsed = bar.report().elapsed_seconds
    # forced redraws at the start and the end; in between at least 1/10 s apart
    assert 2 <= len(view.reports) <= 2 + elapsed * 10 + 1
    assert view.reports[-1].done == 20_000
