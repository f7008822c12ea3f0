"""``%jaxdevices``: every device JAX sees, with platform, kind, process and memory stats."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from jaxmagic._format import fmt_bytes
from jaxmagic._result import Result


@dataclass(frozen=True)
class DeviceInfo:
    id: int
    platform: str
    kind: str
    process_index: int
    local: bool
    memory: dict[str, int] | None  # ``device.memory_stats()``; None where the backend has none

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "platform": self.platform,
            "kind": self.kind,
            "process_index": self.process_index,
            "local": self.local,
            "memory": self.memory,
        }


@dataclass(frozen=True, repr=False)
class DevicesReport(Result):
    """The devices of this JAX runtime (global view; ``local`` marks this process's)."""

    backend: str
    process_index: int
    process_count: int
    devices: tuple[DeviceInfo, ...]

    def summary(self) -> str:
        local = sum(d.local for d in self.devices)
        return (
            f"{len(self.devices)} {self.backend} device(s), {local} local, "
            f"process {self.process_index} of {self.process_count}"
        )

    def _rows(self) -> list[list[Any]]:
        rows = []
        for d in self.devices:
            m = d.memory or {}
            used, limit = m.get("bytes_in_use"), m.get("bytes_limit")
            rows.append(
                [
                    d.id,
                    d.platform,
                    d.kind,
                    d.process_index,
                    "yes" if d.local else "no",
                    fmt_bytes(used) if used is not None else "n/a",
                    fmt_bytes(limit) if limit is not None else "n/a",
                ]
            )
        return rows

    _HEAD = ["id", "platform", "kind", "process", "local", "in use", "limit"]

    def to_text(self, width: int = 100) -> str:
        from jaxmagic.render import text as T

        note = "" if any(d.memory for d in self.devices) else "\nmemory stats: not reported by this backend"
        return (
            f"DevicesReport {self.summary()}\n"
            + T.table(self._HEAD, self._rows(), numeric=(0, 3, 5, 6))
            + note
        )

    def to_html(self) -> str:
        from jaxmagic.render import html as H

        rows = [[H.esc(c) for c in r] for r in self._rows()]
        note = (
            ""
            if any(d.memory for d in self.devices)
            else '<p class="jm-muted">memory stats: not reported by this backend</p>'
        )
        return H.document(
            f"<h3>JAX devices <span class='jm-muted'>· {H.esc(self.summary())}</span></h3>"
            + H.table(self._HEAD, rows, numeric=(0, 3, 5, 6), sortable=True)
            + note,
            sortable=True,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "process_index": self.process_index,
            "process_count": self.process_count,
            "devices": [d.to_dict() for d in self.devices],
        }


def devices() -> DevicesReport:
    """Describe every device: id, platform, kind, process, local or not, memory stats.

    Example:
        >>> jaxmagic.devices().to_dict()["devices"][0]["platform"]
        'cpu'
    """
    import jax

    local_ids = {d.id for d in jax.local_devices()}
    infos = []
    for d in jax.devices():
        try:
            mem = d.memory_stats() if d.id in local_ids else None
        except Exception:
            mem = None
        infos.append(
            DeviceInfo(
                int(d.id),
                d.platform,
                d.device_kind,
                int(d.process_index),
                d.id in local_ids,
                {k: int(v) for k, v in mem.items() if isinstance(v, (int, float))} if mem else None,
            )
        )
    return DevicesReport(jax.default_backend(), jax.process_index(), jax.process_count(), tuple(infos))
