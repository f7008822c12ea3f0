"""Small, shared formatting helpers for text and HTML renderers (no JAX import)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

_DTYPE_SHORT = {
    "float64": "f64",
    "float32": "f32",
    "float16": "f16",
    "bfloat16": "bf16",
    "int64": "i64",
    "int32": "i32",
    "int16": "i16",
    "int8": "i8",
    "int4": "i4",
    "uint64": "u64",
    "uint32": "u32",
    "uint16": "u16",
    "uint8": "u8",
    "uint4": "u4",
    "bool": "bool",
    "complex64": "c64",
    "complex128": "c128",
    "float8_e4m3fn": "f8e4m3fn",
    "float8_e5m2": "f8e5m2",
}


def dtype_short(dtype: Any) -> str:
    """``float32`` -> ``f32`` (equinox / jaxpr convention); unknown names pass through."""
    name = getattr(dtype, "name", None)
    if not isinstance(name, str):
        try:
            import numpy as np

            name = np.dtype(dtype).name
        except TypeError:
            name = str(dtype)
    if name.startswith("key<"):
        return name
    return _DTYPE_SHORT.get(name, name)


def shape_str(shape: Sequence[int], dtype: Any) -> str:
    """Array type in the compact form used everywhere in jaxmagic: ``f32[64,128]``."""
    return f"{dtype_short(dtype)}[{','.join(str(int(d)) for d in shape)}]"


def fmt_bytes(n: float | int | None) -> str:
    """Human-readable byte count with binary units: ``1.5 KiB``; ``None`` or negative -> ``n/a``."""
    if n is None or (isinstance(n, float) and math.isnan(n)) or n < 0:
        return "n/a"
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{int(n)} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def fmt_seconds(s: float | None) -> str:
    """Seconds with a unit that keeps 3 significant digits: ``812 µs``, ``12.3 ms``, ``1.82 s``."""
    if s is None or (isinstance(s, float) and math.isnan(s)):
        return "n/a"
    if s < 0:
        return "-" + fmt_seconds(-s)
    if s == 0:
        return "0 s"
    if s < 1e-3:
        return f"{s * 1e6:.3g} µs"
    if s < 1:
        return f"{s * 1e3:.3g} ms"
    if s < 120:
        return f"{s:.3g} s"
    minutes, sec = divmod(int(round(s)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{sec:02d}s" if hours else f"{minutes}m{sec:02d}s"


def fmt_count(n: float | int | None) -> str:
    """Large counts with SI suffixes: ``1.23M``; ``None``/negative -> ``n/a``."""
    if n is None or (isinstance(n, float) and math.isnan(n)) or n < 0:
        return "n/a"
    n = float(n)
    if n < 999.5:
        return f"{n:.0f}" if n == int(n) else f"{n:.3g}"
    for unit, scale in (("k", 1e3), ("M", 1e6), ("G", 1e9), ("T", 1e12)):
        if n / scale < 999.5 or unit == "T":
            return f"{n / scale:.3g}{unit}"
    raise AssertionError("unreachable")


def fmt_percent(x: float | None) -> str:
    """A share as a percentage: ``0.0123`` -> ``1.2%``, ``0.456`` -> ``46%``; ``—`` when unknown."""
    if x is None or not math.isfinite(x):
        return "—"
    pct = 100 * x
    return f"{pct:.2g}%" if abs(pct) < 10 else f"{pct:.0f}%"


def plural(n: int, word: str, plural_word: str | None = None) -> str:
    """``plural(1, "compile") -> "1 compile"``, ``plural(3, "compile") -> "3 compiles"``."""
    return f"{n} {word if n == 1 else (plural_word or word + 's')}"
