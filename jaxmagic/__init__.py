"""jaxmagic: IPython/Jupyter magics and views that show what JAX is doing.

``%load_ext jaxmagic`` registers the magics. Nothing heavy (jax, flax, treescope) is
imported here: every public name is resolved lazily on first use so that loading the
extension stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# Public name -> module that defines it. Resolved on first attribute access (PEP 562).
_LAZY = {
    "Profiler": "jaxmagic.profile",
    "ProfileReport": "jaxmagic.profile",
    "inspect_call": "jaxmagic.ir",
    "IRReport": "jaxmagic.ir",
    "check_call": "jaxmagic.check",
    "CheckReport": "jaxmagic.check",
    "tree": "jaxmagic.trees",
    "TreeSummary": "jaxmagic.trees",
    "sharding": "jaxmagic.shardings",
    "ShardingReport": "jaxmagic.shardings",
    "SpecError": "jaxmagic.shardings",
    "devices": "jaxmagic.shardings.devices",
    "DevicesReport": "jaxmagic.shardings.devices",
    "memory": "jaxmagic.memories",
    "MemoryReport": "jaxmagic.memories",
    "explain_oom": "jaxmagic.memories",
    "OOMReport": "jaxmagic.memories",
    "plan": "jaxmagic.memories",
    "PlanReport": "jaxmagic.memories",
    "CompileLedgerReport": "jaxmagic.ledger",
    "compare": "jaxmagic.diff",
    "ComparisonReport": "jaxmagic.diff",
    "tabulate": "jaxmagic.layercost",
    "LayerCostReport": "jaxmagic.layercost",
    "track": "jaxmagic.progress.tracker",
    "ProgressReport": "jaxmagic.progress.state",
    "progress": "jaxmagic.progress",  # the subpackage itself: jaxmagic.progress.scan, ...
}

__all__ = ["__version__", "load_ipython_extension", "unload_ipython_extension", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'jaxmagic' has no attribute {name!r}")
    value = importlib.import_module(module)
    if module != f"jaxmagic.{name}":
        value = getattr(value, name)
    globals()[name] = value
    return value


def load_ipython_extension(ipython: Any) -> None:
    """Register jaxmagic's magics on ``ipython`` (called by ``%load_ext jaxmagic``)."""
    from jaxmagic.magics import register

    register(ipython)
    # OOM explained (issue 9): a post_run_cell listener, removed again on %unload_ext.
    from jaxmagic.magics.memory import install_oom_listener

    install_oom_listener(ipython)
    # The session compile ledger (issue 10): jax.monitoring listeners, removed on %unload_ext.
    from jaxmagic.magics.ledger import install_ledger

    install_ledger(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    """Remove everything ``load_ipython_extension`` registered (``%unload_ext jaxmagic``)."""
    from jaxmagic.magics import unregister

    unregister(ipython)
    from jaxmagic.magics.memory import uninstall_oom_listener

    uninstall_oom_listener(ipython)
    from jaxmagic.magics.ledger import uninstall_ledger

    uninstall_ledger(ipython)
