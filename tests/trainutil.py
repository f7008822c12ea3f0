"""Kept for test files written before ``tests/helpers.py``; import from ``tests.helpers``."""

from tests.helpers import TinyMLP, batches, dataset, loss_fn, one_device, params_of  # noqa: F401
