"""Live progress for loops you write: ``jaxmagic.track`` for Python loops, and
``jaxmagic.progress.scan`` / ``fori_loop`` / ``tick`` / ``log`` inside jitted code.

Both feed the trainer's progress widget in a notebook kernel (progress, rate, ETA that leaves
compilation out, curves of logged scalars; a static HTML snapshot when the loop ends) and
one text line elsewhere. Neither adds a device sync.

Example:
  >>> bar = jaxmagic.track(range(1000))
  >>> for step in bar:
  ...     state, loss = train_step(state, batches[step])
  ...     bar.log(loss=loss)
  >>> w, _ = jax.jit(lambda w: jaxmagic.progress.scan(sgd_step, w, batches))(w)
"""

from __future__ import annotations

import importlib
from typing import Any

# Public name -> module. The jitted-loop half imports JAX; it is loaded on first use, so
# ``jaxmagic.track`` over a plain Python loop never imports JAX.
_LAZY = {
    "track": "jaxmagic.progress.tracker",
    "Tracker": "jaxmagic.progress.tracker",
    "ProgressReport": "jaxmagic.progress.state",
    "last": "jaxmagic.progress.state",
    "LoopView": "jaxmagic.progress.views",
    "TerminalLoopView": "jaxmagic.progress.views",
    "scan": "jaxmagic.progress.jit",
    "fori_loop": "jaxmagic.progress.jit",
    "tick": "jaxmagic.progress.jit",
    "log": "jaxmagic.progress.jit",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'jaxmagic.progress' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
