"""``LayerCostReport``: one row per submodule call with parameters, FLOPs, bytes and outputs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from jaxmagic._format import fmt_bytes, fmt_count, plural
from jaxmagic._result import Result


@dataclass(frozen=True)
class LayerRow:
    """One submodule call; FLOPs and bytes accessed include the calls nested in it."""

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
        }


@dataclass(frozen=True)
class LayerCostReport(Result):
    """Per-layer cost of one model call (``jaxmagic.tabulate``, ``%jaxtabulate``); the first
    row is the whole call."""

    model: str
    rows: tuple[LayerRow, ...]

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

    def summary(self) -> str:
        t = self.total
        return (
            f"{self.model}: {plural(len(self.rows), 'layer call')}, {fmt_count(t.params)} params, "
            f"{fmt_count(t.flops)} FLOPs"
        )

    def to_text(self, width: int = 100) -> str:
        from jaxmagic.render.tabulate import tabulate_text

        return tabulate_text(self, width=width)

    def to_html(self) -> str:
        from jaxmagic.render.tabulate import tabulate_html

        return tabulate_html(self)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "rows": [{**r.to_dict(), "self_flops": self.self_flops(i)} for i, r in enumerate(self.rows)],
            "total_params": self.total.params,
            "total_param_bytes": self.total.param_bytes,
            "total_flops": self.total.flops,
        }


def fmt_row_numbers(row: LayerRow) -> list[str]:
    return [
        fmt_count(row.params),
        fmt_bytes(row.param_bytes),
        fmt_count(row.flops),
        fmt_bytes(row.bytes_accessed),
        fmt_bytes(row.output_bytes),
    ]
