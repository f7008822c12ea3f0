"""What changed in a function's optimized HLO between two ``--hlo`` profile reports: fusions, ops
by kind and the collectives XLA inserted (parsed by ``jaxmagic.memories.hlo``, no JAX import)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class HloSummary:
    """Counts over one optimized module (``Compiled.as_text()``)."""

    instructions: int  # parameters not counted
    fusions: int
    ops: dict[str, int]  # opcode -> instructions, fused computations included
    collectives: dict[str, int]  # "all-reduce" -> count (async -start forms counted once)
    collective_bytes: int  # per device, per call

    def to_dict(self) -> dict[str, Any]:
        return {
            "instructions": self.instructions,
            "fusions": self.fusions,
            "ops": dict(self.ops),
            "collectives": dict(self.collectives),
            "collective_bytes": self.collective_bytes,
        }


def hlo_text(function: dict | None) -> str | None:
    """The optimized HLO a report's function carries, or ``None`` (not asked, or unavailable)."""
    text = (function or {}).get("hlo")
    return text if isinstance(text, str) and text.lstrip().startswith("HloModule") else None


def summarise_hlo(text: str) -> HloSummary:
    """Fusion count, ops by kind and collectives of one optimized module."""
    from jaxmagic.memories.hlo import collectives, op_counts

    ops = op_counts(text)
    found = collectives(text)
    kinds: dict[str, int] = {}
    for c in found:
        kinds[c.kind] = kinds.get(c.kind, 0) + 1
    return HloSummary(
        instructions=sum(ops.values()),
        fusions=ops.get("fusion", 0),
        ops=ops,
        collectives=kinds,
        collective_bytes=sum(c.nbytes for c in found),
    )


def changed_counts(a: dict[str, int], b: dict[str, int]) -> list[tuple[str, int, int]]:
    """``(kind, in A, in B)`` for every kind whose count differs, largest change first."""
    kinds = set(a) | set(b)
    rows = [(k, a.get(k, 0), b.get(k, 0)) for k in kinds if a.get(k, 0) != b.get(k, 0)]
    return sorted(rows, key=lambda r: (-abs(r[2] - r[1]), r[0]))
