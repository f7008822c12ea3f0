"""A profiled cell behaves as the unprofiled cell: its code is named after its own cell,
tracebacks and syntax errors show the user's code (no jaxmagic frames in IPython's default
mode), top-level ``await`` works, a trailing ``;`` silences the value."""

from __future__ import annotations

import re

import pytest
from IPython.utils.capture import capture_output

SETUP = "import asyncio, jax, jax.numpy as jnp\n"


@pytest.fixture
def jip(ip):
    ip.run_cell(SETUP)
    ip.run_line_magic("xmode", "Context")
    return ip


def run(ip, cell):
    with capture_output() as cap:
        res = ip.run_cell(cell, store_history=True)
    return res, cap


def test_code_is_named_after_its_own_cell(jip):
    res, cap = run(jip, "%%jaxprofile -o\n@jax.jit\ndef g(v):\n    return v * 2\ng(jnp.ones(2))")
    n = res.execution_count
    report = res.result
    [fn] = [f for f in report.functions if f.name == "g"]
    assert fn.defined_at is not None and fn.defined_at.startswith(f"In[{n}]"), fn.defined_at


def test_traceback_names_the_cell_and_shows_no_jaxmagic_frame(jip):
    res, cap = run(jip, "%%jaxprofile -q\nx = 1\n1/0\n")
    assert isinstance(res.error_in_exec, ZeroDivisionError)
    text = re.sub(r"\x1b\[[0-9;]*m", "", cap.stdout + cap.stderr)
    assert f"Cell In[{res.execution_count}], line 2" in text
    assert "jaxmagic" not in text and "----> 2 1/0" in text


def test_syntax_error_is_shown_as_ipython_shows_it(jip):
    for cell in ("%%jaxprofile\nx = (\n", "%%jaxprofile\nx = = 1\n"):
        res, cap = run(jip, cell)
        assert isinstance(res.error_in_exec, SyntaxError)
        assert not res.success
        text = re.sub(r"\x1b\[[0-9;]*m", "", cap.stdout + cap.stderr)
        assert "SyntaxError" in text and "jaxmagic" not in text and "Traceback" not in text
        assert "JAX profile" not in text  # nothing ran, so there is no report


def test_top_level_await(jip):
    res, cap = run(jip, "%%jaxprofile -q\nawait asyncio.sleep(0)\nz = jnp.arange(3)\nint(z.sum())")
    assert res.error_in_exec is None and res.result == 3
    assert jip.user_ns["z"].shape == (3,)
    res, _ = run(jip, "%%jaxprofile -q\nawait asyncio.sleep(0.001)")
    assert res.error_in_exec is None and res.result is None


def test_trailing_semicolon_silences_the_value(jip):
    res, cap = run(jip, "%%jaxprofile -q\n41 + 1;")
    assert res.error_in_exec is None and res.result is None and "42" not in cap.stdout
