"""Device memory around a profiled block: ``%%jaxprofile``'s memory section.

:func:`snapshot` reads ``jax.live_arrays()`` before and after the block, cheaply: per array its
``id``, a weak reference (no array is kept alive, so what the block frees is freed) and its bytes
per device, shared buffers counted once. :func:`memory_section` compares the two after the
block: live bytes per device before and after, the arrays the block created that are still
alive with the name that holds them (owners are searched for those arrays only, through
``memories.owners``), and how much of what was alive before the block freed.
"""

from __future__ import annotations

import functools
import time
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from jaxmagic.memories.live import failed
from jaxmagic.memories.report import UNOWNED, ArrayRecord

Charged = tuple[tuple[int, int], ...]  # ((device id, bytes this array adds there), ...)


@dataclass(frozen=True)
class Snapshot:
    """The live arrays at one moment.

    ``arrays`` maps ``id(array)`` to ``(weak reference, charged bytes per device)``; a buffer
    two arrays share is charged to one of them (a view over another array's shard adds 0).
    ``totals`` is bytes per local device, ``stats`` the backend's own counters per device
    (``bytes_in_use``, ``peak_bytes_in_use``, ...) where it reports them (not on CPU).
    """

    arrays: dict[int, tuple[Any, Charged]]
    totals: dict[int, int]
    stats: dict[int, dict[str, int]]
    seconds: float


# The arrays the last snapshot saw: id -> [weak reference, bytes per device, buffer address
# (a single-device array) or shard addresses (a multi-device one: a dict, None until read),
# (device, address) key]. An array's placement and buffers never change while it lives, so
# the snapshot after the block reads them only for new arrays; weak references keep nothing
# alive. Shard addresses are read only where a single-device array could be a view of one
# of the shards, since reading them (``addressable_shards``) makes one Array per shard.
_SEEN: dict[int, list] = {}


@functools.lru_cache(maxsize=16384)
def _single_bytes(shape: tuple, dtype: Any) -> int:
    n = dtype.itemsize
    for d in shape:
        n *= d
    return int(n)


def _entry(a: Any, local: frozenset) -> list | None:
    """What the snapshot needs of ``a``; ``None`` for an array whose computation failed."""
    hit = _SEEN.get(id(a))
    if hit is not None and hit[0]() is a:
        return hit
    if a.is_deleted() or failed(a):  # (failed: waits for it; its buffer address would abort)
        return None
    sharding = a.sharding
    devices = sharding.device_set
    if len(devices) == 1:
        devs: Charged = ((next(iter(devices)).id, _single_bytes(a.shape, a.dtype)),)
        try:
            address: Any = a.unsafe_buffer_pointer()
        except Exception:  # a backend without addresses: no sharing detected
            address = None
    else:
        from jaxmagic.memories.live import device_layout

        devs, address = device_layout(sharding, tuple(a.shape), a.dtype, local)[0], None
    key = (devs[0][0], address) if address is not None else None  # (device, buffer address)
    return [weakref.ref(a), devs, address, key]


def _shard_addresses(a: Any, entry: list) -> tuple[dict[int, int], bool]:
    """``({device id: buffer address}, made_views)`` of a multi-device array."""
    if entry[2] is not None:
        return entry[2], False
    try:
        entry[2] = {s.device.id: s.data.unsafe_buffer_pointer() for s in a.addressable_shards}
    except Exception:
        entry[2] = {}
    return entry[2], True


def _charge(
    arrays: Iterable[Any], local: frozenset, seen: set, entries: dict[int, list]
) -> tuple[dict[int, tuple[Any, Charged]], bool]:
    singles, multis = [], []
    for a in arrays:
        try:
            e = _entry(a, local)
        except Exception:  # deleted or unreadable while we looked: not counted
            continue
        if e is None:
            continue
        entries[id(a)] = e
        (singles if len(e[1]) == 1 else multis).append((a, e))
    out: dict[int, tuple[Any, Charged]] = {}
    # a view of a shard has that shard's device and size: only then are addresses read
    sizes = {e[1][0] for _, e in singles}
    made_views = False
    for a, e in multis:  # whole arrays first: a shared shard is charged to them
        addresses: dict[int, int] = {}
        if any(k in sizes for k in e[1]):
            addresses, made = _shard_addresses(a, e)
            made_views |= made
        charged = []
        for d, b in e[1]:
            p = addresses.get(d)
            if p is not None and (d, p) in seen:
                charged.append((d, 0))
                continue
            if p is not None:
                seen.add((d, p))
            charged.append((d, b))
        out[id(a)] = (e[0], tuple(charged))
    for a, e in singles:
        key = e[3]
        if key is not None and key in seen:
            out[id(a)] = (e[0], ((key[0], 0),))
            continue
        if key is not None:
            seen.add(key)
        out[id(a)] = (e[0], e[1])
    return out, made_views


def snapshot() -> Snapshot:
    """The live arrays now, with bytes per device (no array is kept alive). Waits for arrays
    still being computed the first time it meets them, and leaves out arrays whose computation
    failed (they hold no memory)."""
    import gc

    t0 = time.perf_counter()
    paused = gc.isenabled()
    gc.disable()  # a few small tuples per array: collections would rescan them all (4x slower)
    try:
        return _snapshot(t0)
    finally:
        if paused:
            gc.enable()


def _snapshot(t0: float) -> Snapshot:
    import jax

    local_devices = jax.local_devices()
    local = frozenset(d.id for d in local_devices)
    seen: set = set()
    entries: dict[int, list] = {}
    arrays, made_views = _charge(jax.live_arrays(), local, seen, entries)
    if made_views:  # the views reading shard addresses made are alive now: they belong here
        extra = [a for a in jax.live_arrays() if id(a) not in arrays]
        arrays.update(_charge(extra, local, seen, entries)[0])
    _SEEN.clear()
    _SEEN.update(entries)
    totals = dict.fromkeys(sorted(local), 0)
    for _, charged in arrays.values():
        for d, b in charged:
            totals[d] = totals.get(d, 0) + b
    stats = {}
    for dev in local_devices:
        try:
            s = dev.memory_stats()
        except Exception:
            s = None
        if s:
            stats[dev.id] = {k: int(v) for k, v in s.items() if isinstance(v, (int, float))}
    return Snapshot(arrays, totals, stats, time.perf_counter() - t0)


# -- the report section ----------------------------------------------------------------


@dataclass(frozen=True)
class DeviceChange:
    """Live array bytes on one device before and after the block (and the backend's counters)."""

    id: int
    before: int
    after: int
    stats_before: dict[str, int] | None = None
    stats_after: dict[str, int] | None = None

    @property
    def change(self) -> int:
        return self.after - self.before

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "before": self.before,
            "after": self.after,
            "change": self.change,
            "stats_before": self.stats_before,
            "stats_after": self.stats_after,
        }


@dataclass(frozen=True)
class MemorySection:
    """What the block did to device memory.

    ``devices``: live array bytes per device before and after (shared buffers once);
    ``created``: the arrays the block created that were alive when it ended, largest first,
    each with its owner (``ArrayRecord``; owner ``(unowned)`` when no name reaches it);
    ``freed``/``freed_bytes``: arrays alive before the block that it freed (or donated).
    """

    devices: tuple[DeviceChange, ...]
    created: tuple[ArrayRecord, ...]
    freed: int
    freed_bytes: int
    notes: tuple[str, ...] = ()
    snapshot_s: float = 0.0  # time the two snapshots took (profiler overhead, not in wall_s)

    @property
    def before_bytes(self) -> int:
        return sum(d.before for d in self.devices)

    @property
    def after_bytes(self) -> int:
        return sum(d.after for d in self.devices)

    @property
    def created_bytes(self) -> int:
        return sum(a.nbytes for a in self.created)

    def to_dict(self) -> dict[str, Any]:
        """Keys: ``devices`` (per device ``id``, ``before``, ``after``, ``change``,
        ``stats_before``, ``stats_after``), ``before_bytes``, ``after_bytes``, ``created``
        (see ``ArrayRecord.to_dict``), ``created_bytes``, ``freed``, ``freed_bytes``,
        ``notes``, ``snapshot_s``."""
        return {
            "devices": [d.to_dict() for d in self.devices],
            "before_bytes": self.before_bytes,
            "after_bytes": self.after_bytes,
            "created": [a.to_dict() for a in self.created],
            "created_bytes": self.created_bytes,
            "freed": self.freed,
            "freed_bytes": self.freed_bytes,
            "notes": list(self.notes),
            "snapshot_s": self.snapshot_s,
        }


def _same(a: Any, b: Any) -> bool:
    """Two weak references to one object (CPython hands out one plain reference per object,
    so this holds even after the object died)."""
    if a is b:
        return True
    x = a()
    return x is not None and x is b()


def memory_section(
    before: Snapshot,
    after: Snapshot,
    namespace: Mapping[str, Any] | None = None,
    *,
    extra_roots: Sequence[Any] = (),
) -> MemorySection:
    """Compare two snapshots and name the owners of the arrays created in between.

    Args:
        before, after: :func:`snapshot` at the start and the end of the block.
        namespace: where to look for owners (default: IPython's user namespace, or ``__main__``).
        extra_roots: further ``memories.owners.Root``s searched after the namespace (the magic
            passes the cell's displayed value, which IPython stores as ``Out[n]`` afterwards).
    """
    from jaxmagic.memories.live import _user_namespace, device_layout, namespace_roots, type_str
    from jaxmagic.memories.owners import find_owners

    created, gone = [], []
    for i, (ref, charged) in after.arrays.items():
        old = before.arrays.get(i)
        if old is not None and _same(old[0], ref):
            continue
        if any(b for _, b in charged):  # a view of a buffer another array holds adds nothing
            created.append((ref, charged))
    for i, (ref, charged) in before.arrays.items():
        new = after.arrays.get(i)
        if new is None or not _same(new[0], ref):
            gone.append(charged)
    alive = {id(a): a for a in (ref() for ref, _ in created) if a is not None}
    notes = []
    owners = None
    if alive:
        hidden: Iterable[str] = ()
        hidden_ns = None
        if namespace is None:
            namespace, hidden, hidden_ns = _user_namespace()
        ns = namespace if isinstance(namespace, dict) else dict(namespace)
        roots = namespace_roots(ns, hidden, hidden_ns) + list(extra_roots)
        owners = find_owners(roots, alive, until_found=True)
        notes += owners.notes
    local = frozenset(after.totals)
    records = []
    for ref, charged in created:
        a = ref()
        nbytes = sum(b for _, b in charged)
        if a is None:
            records.append(ArrayRecord("(freed since)", "", "freed", "?", nbytes, charged, "", (), ()))
            continue
        aid = id(a)
        try:
            sharding = (
                "" if len(charged) == 1 else device_layout(a.sharding, tuple(a.shape), a.dtype, local)[1]
            )
            typ = type_str(tuple(a.shape), a.dtype)
        except Exception:
            sharding, typ = "", "?"
        path = owners.path.get(aid) if owners is not None else None
        roots_of = owners.roots_of(aid) if owners is not None else []
        kind = (
            "unowned"
            if path is None
            else "variable"
            if any(r.kind == "variable" for r in roots_of)
            else "history"
        )
        records.append(
            ArrayRecord(
                owner=path or UNOWNED,
                root=owners.root.get(aid, UNOWNED) if owners is not None else UNOWNED,
                kind=kind,
                type_str=typ,
                nbytes=nbytes,
                devices=charged,
                sharding=sharding,
                held_by=tuple(r.label for r in roots_of),
                other_paths=tuple(owners.other_paths.get(aid, ())) if owners is not None else (),
            )
        )
    records.sort(key=lambda r: (-r.nbytes, r.owner))
    unowned = sum(r.kind == "unowned" for r in records)
    if unowned:
        notes.append(
            f"{unowned} created array(s) are reached by no name: held inside libraries (e.g. "
            "constants a jitted function captured), by an object the search does not enter, or "
            "by a local the cell's code kept"
        )
    devices = tuple(
        DeviceChange(
            d,
            before.totals.get(d, 0),
            after.totals.get(d, 0),
            before.stats.get(d),
            after.stats.get(d),
        )
        for d in sorted(set(before.totals) | set(after.totals))
    )
    return MemorySection(
        devices=devices,
        created=tuple(records),
        freed=len(gone),
        freed_bytes=sum(b for charged in gone for _, b in charged),
        notes=tuple(notes),
        snapshot_s=before.seconds + after.seconds,
    )
