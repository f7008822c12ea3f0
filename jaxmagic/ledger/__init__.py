"""The session compile ledger: every compile after ``%load_ext jaxmagic``, profiled or not.

One ``jax.monitoring`` listener pair (duration + event) runs only when JAX compiles, so the
ledger costs nothing on the dispatch path. No IPython here: the magic passes in how to name
a cell and which cell runs.
"""

from jaxmagic.ledger.capture import CompileLedger, active, start, stop
from jaxmagic.ledger.report import CompileLedgerReport, Fix, FunctionRow, SiteRow

__all__ = [
    "CompileLedger",
    "CompileLedgerReport",
    "Fix",
    "FunctionRow",
    "SiteRow",
    "active",
    "start",
    "stop",
]
