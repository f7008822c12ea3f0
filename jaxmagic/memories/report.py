"""The live-memory report: arrays, who holds them, bytes per device, what freeing would save."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from jaxmagic._format import fmt_bytes, plural
from jaxmagic._result import Result

UNOWNED = "(unowned)"


@dataclass(frozen=True)
class ArrayRecord:
    """One live array and its owner.

    ``owner`` is the shortest path from a name (``model.blocks[3].kernel``, ``Out[3]``) or
    ``(unowned)``; ``root`` is the name it starts from; ``kind`` is ``variable``, ``history``
    (only IPython's output history holds it) or ``unowned``. ``nbytes`` counts the bytes
    this array adds: a buffer another array already counted adds nothing here.
    """

    owner: str
    root: str
    kind: str
    type_str: str
    nbytes: int
    devices: tuple[tuple[int, int], ...]  # (device id, bytes on it)
    sharding: str
    held_by: tuple[str, ...]  # every name that reaches it
    other_paths: tuple[str, ...]
    shares_buffer_with: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "owner": self.owner,
            "root": self.root,
            "kind": self.kind,
            "type": self.type_str,
            "nbytes": self.nbytes,
            "devices": [list(d) for d in self.devices],
            "sharding": self.sharding,
            "held_by": list(self.held_by),
            "other_paths": list(self.other_paths),
            "shares_buffer_with": self.shares_buffer_with,
        }


@dataclass(frozen=True)
class OwnerTotal:
    """All arrays whose owner path starts at one name."""

    root: str
    kind: str
    arrays: int
    nbytes: int

    def to_dict(self) -> dict[str, Any]:
        return {"root": self.root, "kind": self.kind, "arrays": self.arrays, "nbytes": self.nbytes}


@dataclass(frozen=True)
class DeviceMemory:
    """One device: bytes of live arrays by owner, and the backend's own counters if any."""

    id: int
    platform: str
    kind: str
    arrays: int
    array_bytes: int
    by_owner: tuple[tuple[str, int], ...]  # (root, bytes), largest first
    stats: dict[str, int] | None  # bytes_in_use, peak_bytes_in_use, bytes_limit, ... or None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "platform": self.platform,
            "kind": self.kind,
            "arrays": self.arrays,
            "array_bytes": self.array_bytes,
            "by_owner": [list(o) for o in self.by_owner],
            "stats": self.stats,
        }


@dataclass(frozen=True)
class Suggestion:
    """One way to free memory and (an upper bound of) the bytes it frees: ``frees`` over all
    devices, ``per_device`` on the device where it frees the most."""

    action: str  # "%reset -f out", "del model2"
    frees: int
    why: str
    per_device: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"action": self.action, "frees": self.frees, "why": self.why, "per_device": self.per_device}


@dataclass(frozen=True)
class MemoryReport(Result):
    """What is alive on the devices now and who holds it (``jaxmagic.memory()``, ``%jaxmemory``)."""

    backend: str
    arrays: tuple[ArrayRecord, ...]  # largest first
    owners: tuple[OwnerTotal, ...]  # largest first
    devices: tuple[DeviceMemory, ...]
    suggestions: tuple[Suggestion, ...]  # most bytes first
    deleted: tuple[str, ...]  # names still bound to deleted (e.g. donated) arrays
    notes: tuple[str, ...]
    objects_searched: int
    top: int = 20
    device: int | None = None

    @property
    def total_bytes(self) -> int:
        return sum(a.nbytes for a in self.arrays)

    def bytes_of(self, kind: str) -> int:
        return sum(a.nbytes for a in self.arrays if a.kind == kind)

    def summary(self) -> str:
        where = (
            f"device {self.device}"
            if self.device is not None
            else plural(len(self.devices), f"{self.backend} device")
        )
        return f"{plural(len(self.arrays), 'live array')}, {fmt_bytes(self.total_bytes)} on {where}"

    def to_text(self, width: int = 100) -> str:
        from jaxmagic.render.memory import memory_text

        return memory_text(self, width=width)

    def to_html(self) -> str:
        from jaxmagic.render.memory import memory_html

        return memory_html(self)

    def to_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "total_bytes": self.total_bytes,
            "arrays": [a.to_dict() for a in self.arrays],
            "owners": [o.to_dict() for o in self.owners],
            "devices": [d.to_dict() for d in self.devices],
            "suggestions": [s.to_dict() for s in self.suggestions],
            "deleted": list(self.deleted),
            "notes": list(self.notes),
            "objects_searched": self.objects_searched,
            "top": self.top,
            "device": self.device,
        }
