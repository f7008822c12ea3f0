"""Shared formatting helpers."""

import pytest

from jaxmagic._format import dtype_short, fmt_bytes, fmt_count, fmt_seconds, shape_str


@pytest.mark.parametrize(
    "value,text",
    [
        (None, "n/a"),
        (-1, "n/a"),
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1.0 KiB"),
        (1536, "1.5 KiB"),
        (3 * 2**30, "3.0 GiB"),
    ],
)
def test_fmt_bytes(value, text):
    assert fmt_bytes(value) == text


@pytest.mark.parametrize(
    "value,text",
    [
        (None, "n/a"),
        (0, "0 s"),
        (5e-7, "0.5 µs"),
        (8.12e-4, "812 µs"),
        (0.0123, "12.3 ms"),
        (1.824, "1.82 s"),
        (3725, "1h02m05s"),
    ],
)
def test_fmt_seconds(value, text):
    assert fmt_seconds(value) == text


@pytest.mark.parametrize(
    "value,text",
    [
        (None, "n/a"),
        (-1.0, "n/a"),
        (12, "12"),
        (2.5, "2.5"),
        (999.7, "1k"),
        (1234, "1.23k"),
        (999_999, "1M"),
        (2e9, "2G"),
    ],
)
def test_fmt_count(value, text):
    assert fmt_count(value) == text


def test_shapes_use_the_compact_convention():
    import numpy as np

    assert shape_str((64, 128), np.float32) == "f32[64,128]"
    assert shape_str((), "bfloat16") == "bf16[]"
    assert dtype_short("weird") == "weird"
