"""``%jaxmemory`` in a real IPython shell: output history found and freed, the one magic
convention (-o, -q, flags anywhere, help), and bad input."""

from __future__ import annotations

import pytest
from IPython.core.error import UsageError
from IPython.utils.capture import capture_output


def run(ip, line):
    with capture_output() as cap:
        res = ip.run_cell(line)
    return res, cap


@pytest.mark.slow
def test_output_history_leak_found_and_freed(ip):
    ip.run_cell("import jax.numpy as jnp\nweights = jnp.ones((256, 256))")
    res, _ = run(ip, "jnp.ones((12345,))")  # shown as Out[n]: IPython keeps it alive
    n = ip.execution_count - 1
    assert ip.user_ns["Out"][n] is res.result
    report = ip.run_cell("%jaxmemory -o").result
    recs = {r.owner: r for r in report.arrays}
    assert recs[f"Out[{n}]"].kind == "history" and recs[f"Out[{n}]"].nbytes == 12345 * 4
    assert recs["weights"].kind == "variable"
    reset = [s for s in report.suggestions if s.action == "%reset -f out"]
    assert reset and reset[0].frees >= 12345 * 4
    del res, report, recs
    ip.run_cell("%reset -f out")
    after = ip.run_cell("%jaxmemory -o").result
    left = [r for r in after.arrays if r.type_str == "f32[12345]" and r.nbytes]
    assert not [r for r in left if r.owner.startswith("Out[")]
    # what %reset -f out leaves is IPython's hidden copy of _/__/___, named as such
    assert all(r.owner.startswith("user_ns_hidden[") for r in left), [r.owner for r in left]
    assert "weights" in {r.owner for r in after.arrays}


def test_o_returns_and_q_is_silent_flags_anywhere(ip):
    for line in ("%jaxmemory -o --top 3", "%jaxmemory --top 3 -o"):
        res, cap = run(ip, line)
        assert type(res.result).__name__ == "MemoryReport" and res.result.top == 3
        assert not cap.outputs and cap.stdout.count("jaxmemory:") == 1
    res, cap = run(ip, "%jaxmemory -q")
    assert res.result is None and not cap.outputs and cap.stdout == ""
    res, cap = run(ip, "%jaxmemory")
    assert res.result is None and len(cap.outputs) == 1
    assert "not reported by the CPU backend" in cap.outputs[0].data["text/plain"]


def test_help_documents_every_flag(ip):
    magic = ip.find_line_magic("jaxmemory")
    text = magic.__doc__
    for flag in ("--top", "--device", "-o", "-q"):
        assert flag in text


@pytest.mark.parametrize(
    "line, message",
    [
        ("%jaxmemory --device 99", "unknown device '99'"),
        ("%jaxmemory weights", "takes no expression"),
        ("%jaxmemory --bogus", "valid flags"),
    ],
)
def test_bad_input_is_a_usage_error(ip, line, message):
    with pytest.raises(UsageError, match=message):
        ip.run_line_magic("jaxmemory", line.split(" ", 1)[1])


@pytest.mark.slow
def test_hidden_copies_of_underscore_that_reset_out_leaves_are_found(ip):
    """IPython pushes ``_``, ``__``, ``___`` into ``user_ns_hidden`` as well, and ``%reset -f out``
    does not clear those copies: the array stays alive. The report names the holder and the
    statement that frees it."""
    ip.run_cell("import jax.numpy as jnp")
    from jaxmagic.memories.live import CLEAR_HIDDEN

    # An earlier %reset -f out (test above) left the copies, so IPython stopped updating _:
    # the statement the report suggests restores it.
    ip.run_cell(CLEAR_HIDDEN)
    ip.run_cell("jnp.full((54321,), 3.0)", store_history=True)
    assert type(ip.user_ns["_"]).__name__ == "ArrayImpl"
    ip.run_cell("1 + 1", store_history=True)  # the array moves to __
    ip.run_cell("%reset -f out", store_history=True)
    report = ip.run_cell("%jaxmemory -o").result
    recs = [r for r in report.arrays if r.type_str == "f32[54321]" and r.nbytes]
    assert recs and recs[0].kind == "history" and recs[0].owner.startswith("user_ns_hidden[")
    fix = [s for s in report.suggestions if "user_ns_hidden" in s.action]
    assert fix and fix[0].frees >= 54321 * 4
    del recs, report
    ip.run_cell(fix[0].action)
    after = ip.run_cell("%jaxmemory -o").result
    assert not [r for r in after.arrays if r.type_str == "f32[54321]"]
