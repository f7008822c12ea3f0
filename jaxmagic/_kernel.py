"""Where the code runs: a Jupyter kernel or not. Checked through ``sys.modules``, so importing
this (and calling it) never imports IPython: capture code (the trainer, ``jaxmagic.progress``)
uses it to choose between the notebook widget and the terminal line."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any


def in_notebook_kernel() -> bool:
    """True inside a Jupyter kernel (checked via ``sys.modules``; never imports IPython)."""
    ipython = sys.modules.get("IPython")
    get = getattr(ipython, "get_ipython", None)
    shell = get() if get is not None else None
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def choose_view(progress: Any, kind: type, widget: Callable[[], Any], text: Callable[[], Any]) -> Any | None:
    """``progress=`` -> a view: ``"auto"`` (the widget in a notebook kernel, else the terminal
    line), ``"widget"``, ``"text"``, ``None``/``False`` (silent) or an instance of ``kind``.
    ``widget``/``text`` build the two views (lazily: widget code stays out of capture code)."""
    if progress is None or progress is False:
        return None
    if isinstance(progress, kind):
        return progress
    if progress == "auto":
        progress = "widget" if in_notebook_kernel() else "text"
    if progress == "widget":
        return widget()
    if progress in ("text", "terminal"):
        return text()
    raise ValueError(
        f"progress must be 'auto', 'widget', 'text', None or a {kind.__name__}, got {progress!r}"
    )
