"""Where the code runs: a Jupyter kernel or not. Checked through ``sys.modules``, so importing
this (and calling it) never imports IPython: capture code (the trainer, ``jaxmagic.progress``)
uses it to choose between the notebook widget and the terminal line."""

from __future__ import annotations

import sys


def in_notebook_kernel() -> bool:
    """True inside a Jupyter kernel (checked via ``sys.modules``; never imports IPython)."""
    ipython = sys.modules.get("IPython")
    get = getattr(ipython, "get_ipython", None)
    shell = get() if get is not None else None
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"
