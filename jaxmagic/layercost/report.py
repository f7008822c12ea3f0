"""``LayerCostReport``: one row per submodule call with parameters, FLOPs, bytes and outputs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from jaxmagic._format import fmt_bytes, fmt_count, fmt_seconds, plural
from jaxmagic._result import Result


@dataclass(frozen=True)
class LayerRow:
    """One submodule call; FLOPs, bytes accessed and device time include the calls nested in it."""

    path: str
    depth: int
    module: str
    inputs: str
    outputs: str
    params: int
    param_bytes: int
    flops: float | None
    bytes_accessed: float | None
    output_bytes: int
    device_s: float | None = None  # measured per call with --time (None: not measured)
    self_device_s: float | None = None  # the part outside the calls nested in it

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "depth": self.depth,
            "module": self.module,
            "inputs": self.inputs,
            "outputs": self.outputs,
            "params": self.params,
            "param_bytes": self.param_bytes,
            "flops": self.flops,
            "bytes_accessed": self.bytes_accessed,
            "output_bytes": self.output_bytes,
            "device_s": self.device_s,
            "self_device_s": self.self_device_s,
        }


@dataclass(frozen=True)
class LayerCostReport(Result):
    """Per-layer cost of one model call (``jaxmagic.tabulate``, ``%jaxtabulate``); the first
    row is the whole call."""

    model: str
    rows: tuple[LayerRow, ...]
    timing: str | None = None  # how device time was measured (--time), else None

    @property
    def total(self) -> LayerRow:
        return self.rows[0]

    def children(self, index: int) -> list[LayerRow]:
        """Rows called directly inside row ``index``."""
        depth, out = self.rows[index].depth, []
        for row in self.rows[index + 1 :]:
            if row.depth <= depth:
                break
            if row.depth == depth + 1:
                out.append(row)
        return out

    def self_flops(self, index: int) -> float | None:
        """FLOPs of row ``index`` outside its child calls (activations, residual adds)."""
        own = self.rows[index].flops
        kids = [r.flops for r in self.children(index)]
        if own is None or any(k is None for k in kids):
            return None
        return max(0.0, own - sum(kids))

    def self_device_s(self, index: int) -> float | None:
        """Device time of row ``index`` outside its child calls (``--time``; else ``None``):
        the time of the ops attributed to this call itself, not a difference of rounded sums."""
        return self.rows[index].self_device_s

    @property
    def timed(self) -> bool:
        return any(r.device_s is not None for r in self.rows)

    def summary(self) -> str:
        t = self.total
        timed = f", {fmt_seconds(t.device_s)} on device" if t.device_s is not None else ""
        return (
            f"{self.model}: {plural(len(self.rows), 'layer call')}, {fmt_count(t.params)} params, "
            f"{fmt_count(t.flops)} FLOPs{timed}"
        )

    def to_text(self, width: int = 100) -> str:
        from jaxmagic.render.tabulate import tabulate_text

        return tabulate_text(self, width=width)

    def to_html(self) -> str:
        from jaxmagic.render.tabulate import tabulate_html

        return tabulate_html(self)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready data: ``model``, ``rows`` (each row's fields, ``self_flops`` and
        ``self_device_s``), ``total_params``, ``total_param_bytes``, ``total_flops``,
        ``total_device_s`` and ``timing`` (how device time was measured, or ``None``)."""
        return {
            "model": self.model,
            "rows": [{**r.to_dict(), "self_flops": self.self_flops(i)} for i, r in enumerate(self.rows)],
            "total_params": self.total.params,
            "total_param_bytes": self.total.param_bytes,
            "total_flops": self.total.flops,
            "total_device_s": self.total.device_s,
            "timing": self.timing,
        }


def fmt_row_numbers(row: LayerRow) -> list[str]:
    return [
        fmt_count(row.params),
        fmt_bytes(row.param_bytes),
        fmt_count(row.flops),
        fmt_bytes(row.bytes_accessed),
        fmt_bytes(row.output_bytes),
    ]
