"""Kept for test files written before ``tests/helpers.py``; import from ``tests.helpers``."""

from tests.helpers import NOTEBOOKS, cell_outputs, errors, execute, outputs, text_of  # noqa: F401
