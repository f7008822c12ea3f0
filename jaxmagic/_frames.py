"""Which stack frames are the user's: the first frame outside JAX, the stack's libraries,
jaxmagic and the standard library is where a report points (a cell line, a script line)."""

from __future__ import annotations

import logging
import os
import sys
import threading

import jax

# Frames inside these directories are "library" frames: the user's line is the first
# frame outside them.
_LIB_DIRS = tuple(
    os.path.dirname(os.path.abspath(m.__file__)) + os.sep
    for m in (jax, logging, threading)  # logging/threading locate the stdlib
) + (os.path.dirname(os.path.abspath(__file__)) + os.sep,)
_EXTRA_LIBS = ("flax", "optax", "orbax", "jaxlib", "treescope")


def is_library_file(filename: str) -> bool:
    """True for frames in JAX, Flax, Optax, Orbax, treescope, jaxmagic or the stdlib."""
    if filename.startswith(_LIB_DIRS) or filename.startswith("<frozen"):
        return True
    parts = filename.split(os.sep)
    return any(p in _EXTRA_LIBS for p in parts[-4:-1])


def user_site(start_depth: int = 2) -> tuple[str, int] | None:
    """``(filename, line)`` of the innermost frame outside JAX, Flax, jaxmagic and stdlib."""
    frame = sys._getframe(start_depth)
    while frame is not None:
        filename = frame.f_code.co_filename
        if not is_library_file(filename):
            return filename, frame.f_lineno
        frame = frame.f_back
    return None


def running_cell_label(filename: str) -> str | None:
    """``In[5]`` when ``filename`` is the code of a cell of the running IPython shell, else None.

    Capture code never imports IPython: the shell is found only if IPython is loaded already.
    """
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    try:
        named = shell.compile.format_code_name(filename) if shell is not None else None
    except Exception:  # a shell without IPython's caching compiler
        return None
    return named[1] if named else None
