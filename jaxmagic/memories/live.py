"""``jaxmagic.memory()``: every live device array, who holds it, bytes per device."""

from __future__ import annotations

import functools
import re
import sys
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from jaxmagic.memories.owners import MAX_ITEMS, MAX_OBJECTS, Root, find_owners
from jaxmagic.memories.report import UNOWNED, ArrayRecord, DeviceMemory, MemoryReport, OwnerTotal, Suggestion

# IPython's output history: ``Out`` (also ``_oh``) and the last three results.
HISTORY_NAMES = ("_", "__", "___")
RESET_OUT = "%reset -f out"
# IPython pushes _, __, ___ into user_ns_hidden too (to tell whether the user rebound them), and
# %reset -f out does not clear those copies: they keep the arrays alive, and IPython then takes
# _ for user-bound and stops updating it. Dropping the copies frees both.
# "" is what %reset -f out binds the visible _, __, ___ to, so IPython also updates _ again.
CLEAR_HIDDEN = 'get_ipython().user_ns_hidden.update(_="", __="", ___="")'
_SKIP = re.compile(r"^(_\d+|_i\d*|_ii+|_iii|_oh|_ih|_dh|In|Out|__\w*__|exit|quit|get_ipython)$")


def namespace_roots(
    ns: Mapping[str, Any], hidden: Iterable[str] = (), hidden_ns: Mapping[str, Any] | None = None
) -> list[Root]:
    """The roots of ``ns``: user variables (not ``hidden``, not IPython's own names), then
    ``Out[n]`` entries and ``_``, ``__``, ``___`` as output history, then the copies of
    ``_``, ``__``, ``___`` and ``_<n>`` that IPython keeps in ``hidden_ns`` (its
    ``user_ns_hidden``) where they are other objects than the visible ones."""
    hidden = set(hidden)
    roots = [
        Root(k, "variable", v)
        for k, v in dict.items(ns)
        if isinstance(k, str) and k not in hidden and not _SKIP.match(k) and k not in HISTORY_NAMES
    ]
    out = dict.get(ns, "Out") if isinstance(ns, dict) else None
    if isinstance(out, dict):
        roots += [
            Root(f"Out[{n}]", "history", v, RESET_OUT)
            for n, v in sorted(dict.items(out), key=lambda kv: str(kv[0]))
        ]
    roots += [Root(k, "history", dict.get(ns, k), RESET_OUT) for k in HISTORY_NAMES if k in ns]
    if isinstance(hidden_ns, dict):
        for k, v in dict.items(hidden_ns):
            if (
                isinstance(k, str)
                and (k in HISTORY_NAMES or re.match(r"^_\d+$", k))
                and dict.get(ns, k) is not v
            ):
                free = CLEAR_HIDDEN if k in HISTORY_NAMES else f"del get_ipython().user_ns_hidden[{k!r}]"
                roots.append(Root(f"user_ns_hidden[{k!r}]", "history", v, free))
    return roots


def _user_namespace() -> tuple[dict, set[str], dict | None]:
    # the running shell if IPython is loaded already; capture code never imports IPython itself
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    if shell is not None:
        hidden_ns = getattr(shell, "user_ns_hidden", None)
        return shell.user_ns, set(hidden_ns or ()), hidden_ns
    import __main__

    return vars(__main__), set(), None


def _device_id(device: Any, known: Iterable[int]) -> int | None:
    if device is None:
        return None
    text = str(device).strip().lower()
    m = re.match(r"^(?:[a-z_]+[:_ ]?)?(\d+)$", text)
    ids = sorted(known)
    if not m or int(m.group(1)) not in ids:
        raise ValueError(f"unknown device {device!r}; this process's devices are {ids}")
    return int(m.group(1))


def failed(a: Any) -> bool:
    """True when the computation of ``a`` failed (an out-of-memory error raised asynchronously,
    say): it holds no buffer, and reading its buffer address would abort the process. Waits
    for ``a`` if it is still being computed."""
    try:
        a.block_until_ready()
        return False
    except Exception:
        return True


@functools.lru_cache(maxsize=16384)
def device_layout(
    sharding: Any, shape: tuple, dtype: Any, local: frozenset
) -> tuple[tuple[tuple[int, int], ...], str]:
    """``(((device id, bytes), ...), spec text)`` of an array on the ``local`` devices (cached:
    arrays of one model share a few shardings and shapes)."""
    from jaxmagic.shardings.layout import layout_from_sharding

    layout = layout_from_sharding(sharding, shape, dtype)
    nbytes = layout.device_bytes()
    devs = tuple((d, int(b)) for d, b in zip(layout.device_ids, nbytes) if d in local)
    return devs, layout.spec_text


@functools.lru_cache(maxsize=4096)
def type_str(shape: tuple, dtype: Any) -> str:
    from jaxmagic._format import shape_str

    return shape_str(shape, dtype)


def _buffers(arr: Any) -> list[tuple[int, int]]:
    """``(device id, buffer address)`` of each addressable shard (to count shared buffers once)."""
    try:
        if len(arr.sharding.device_set) == 1:
            return [(next(iter(arr.sharding.device_set)).id, arr.unsafe_buffer_pointer())]
        return [(s.device.id, s.data.unsafe_buffer_pointer()) for s in arr.addressable_shards]
    except Exception:  # deleted meanwhile, or a backend without pointers: no sharing detected
        return []


def memory(
    namespace: Mapping[str, Any] | None = None,
    *,
    top: int = 20,
    device: Any = None,
    hidden: Iterable[str] = (),
    max_objects: int = MAX_OBJECTS,
    max_items: int = MAX_ITEMS,
) -> MemoryReport:
    """What is alive on the devices now, and which name holds it.

    Args:
        namespace: where to look for owners (default: IPython's user namespace, or ``__main__``).
        top: how many of the largest arrays the report lists (all are in ``to_dict()``).
        device: only this device (an id like ``3`` or ``"cpu:3"``).
        hidden: names of ``namespace`` to ignore (IPython's own names are ignored already).
        max_objects, max_items: bounds of the owner search (a note says when one is hit).

    Returns:
        A :class:`MemoryReport`.

    Example::

        jaxmagic.memory(top=5).suggestions[0].action   # e.g. '%reset -f out'
    """
    import gc

    paused = gc.isenabled()
    gc.disable()  # the walk allocates many small tuples: collections would rescan them all
    try:
        return _memory(namespace, top, device, hidden, max_objects, max_items)
    finally:
        if paused:
            gc.enable()


def _memory(
    namespace: Any, top: int, device: Any, hidden: Iterable[str], max_objects: int, max_items: int
) -> MemoryReport:
    import jax

    hidden_ns = None
    if namespace is None:
        namespace, default_hidden, hidden_ns = _user_namespace()
        hidden = set(hidden) | default_hidden
    if not isinstance(namespace, Mapping):
        raise TypeError(f"namespace must be a mapping of names to objects, not {type(namespace).__name__}")
    if not isinstance(top, int) or top < 0:
        raise ValueError(f"top must be a non-negative integer, got {top!r}")
    local = {d.id: d for d in jax.local_devices()}
    dev = _device_id(device, local)
    live, n_failed = {}, 0
    for a in jax.live_arrays():
        try:
            if a.is_deleted():
                continue
        except Exception:
            continue
        if failed(a):
            n_failed += 1
            continue
        live[id(a)] = a
    ns = namespace if isinstance(namespace, dict) else dict(namespace)
    owners = find_owners(
        namespace_roots(ns, hidden, hidden_ns), live, max_objects=max_objects, max_items=max_items
    )
    per_device = device_layout
    local_ids = frozenset(local)
    seen_buffers: dict[tuple[int, int], tuple[str, str, str, int]] = {}  # -> owner, root, kind, mask
    records: list[ArrayRecord] = []
    masks: list[int] = []
    sized = []
    for arr in live.values():
        try:
            devs, sharding = per_device(arr.sharding, tuple(arr.shape), arr.dtype, local_ids)
        except Exception:
            continue  # deleted or unreadable while we looked
        sized.append((arr, devs, sharding, sum(b for _, b in devs)))
    # Owned arrays first, whole arrays before views of their shards: a shared buffer is charged
    # to the named array that holds it all.
    sized.sort(key=lambda t: (id(t[0]) not in owners.path, -t[3], owners.path.get(id(t[0]), "")))
    for arr, devs, sharding, _ in sized:
        aid = id(arr)
        owner = owners.path.get(aid, UNOWNED)
        roots = owners.roots_of(aid)
        kind = (
            "unowned" if not roots else "variable" if any(r.kind == "variable" for r in roots) else "history"
        )
        root, mask = owners.root.get(aid, UNOWNED), owners.root_mask.get(aid, 0)
        shared, charged = None, []
        buffers = dict(_buffers(arr))
        for d, b in devs:
            key = (d, buffers[d]) if d in buffers and b else None
            if key is not None and key in seen_buffers:
                shared = seen_buffers[key]
                charged.append((d, 0))
            else:
                if key is not None:
                    seen_buffers[key] = (owner, root, kind, mask)
                charged.append((d, b))
        if dev is not None:  # --device: this device's bytes only
            if dev not in dict(charged):
                continue
            charged = [(d, b) for d, b in charged if d == dev]
        if kind == "unowned" and shared is not None and not any(b for _, b in charged):
            # a second Array over buffers a named array holds (JAX keeps per-shard views
            # inside an array): it lives and dies with that array
            owner, root, kind, mask = f"{shared[0]} (same buffer)", shared[1], shared[2], shared[3]
        records.append(
            ArrayRecord(
                owner=owner,
                root=root,
                kind=kind,
                type_str=type_str(tuple(arr.shape), arr.dtype),
                nbytes=sum(b for _, b in charged),
                devices=tuple(charged),
                sharding=sharding,
                held_by=tuple(r.label for r in roots),
                other_paths=tuple(owners.other_paths.get(aid, ())),
                shares_buffer_with=shared[0] if shared is not None else None,
            )
        )
        masks.append(mask)
    ranked = sorted(range(len(records)), key=lambda i: (-records[i].nbytes, records[i].owner))
    records = [records[i] for i in ranked]
    masks = [masks[i] for i in ranked]
    notes = list(owners.notes)
    if n_failed:
        notes.append(
            f"{n_failed} array(s) whose computation failed (e.g. an out-of-memory error raised "
            "asynchronously) are left out: they hold no device memory"
        )
    n_unowned = sum(r.kind == "unowned" for r in records)
    if n_unowned:
        notes.append(
            f"{n_unowned} array(s) are reached by no name in the namespace: held inside "
            "libraries (e.g. constants captured by jitted functions, caches), by objects the "
            "search does not enter, or leaked; they are freed when their holder goes"
        )
    return MemoryReport(
        backend=jax.default_backend(),
        arrays=tuple(records),
        owners=_owner_totals(records),
        devices=_devices(records, local, dev),
        suggestions=_suggestions(records, masks, owners.roots),
        deleted=tuple(owners.deleted),
        notes=tuple(notes),
        objects_searched=owners.objects,
        top=top,
        device=dev,
    )


def _is_view(r: ArrayRecord) -> bool:
    """A second Array over buffers another array holds (counted with that array)."""
    return r.shares_buffer_with is not None and not r.nbytes


def _owner_totals(records: list[ArrayRecord]) -> tuple[OwnerTotal, ...]:
    acc: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])
    for r in records:
        slot = acc[(r.root, r.kind)]
        slot[0] += not _is_view(r)
        slot[1] += r.nbytes
    return tuple(
        sorted(
            (OwnerTotal(root, kind, n, b) for (root, kind), (n, b) in acc.items()),
            key=lambda o: (-o.nbytes, o.root),
        )
    )


def _devices(
    records: list[ArrayRecord], local: Mapping[int, Any], only: int | None
) -> tuple[DeviceMemory, ...]:
    out = []
    for did, d in sorted(local.items()):
        if only is not None and did != only:
            continue
        by_owner: dict[str, int] = defaultdict(int)
        count = 0
        for r in records:
            for rd, b in r.devices:
                if rd == did:
                    by_owner[r.root] += b
                    count += not _is_view(r)
        try:
            stats = d.memory_stats()
        except Exception:
            stats = None
        stats = {k: int(v) for k, v in stats.items() if isinstance(v, (int, float))} if stats else None
        out.append(
            DeviceMemory(
                did,
                d.platform,
                d.device_kind,
                count,
                sum(by_owner.values()),
                tuple(sorted(by_owner.items(), key=lambda kv: (-kv[1], kv[0]))),
                stats,
            )
        )
    return tuple(out)


def _suggestions(records: list[ArrayRecord], masks: list[int], roots: list[Root]) -> tuple[Suggestion, ...]:
    """For each set of statements some arrays need to be freed (``del a``, ``%reset -f out``,
    ...), the bytes that set frees: every array whose holders it all drops."""
    by_mask: dict[int, int] = defaultdict(int)
    dev_mask: dict[int, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    for r, m in zip(records, masks):
        if m:
            by_mask[m] += r.nbytes
            for d, b in r.devices:
                dev_mask[m][d] += b
    needs: dict[frozenset, int] = defaultdict(int)  # statements needed -> bytes needing exactly them
    needs_dev: dict[frozenset, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    history_of: dict[frozenset, set[str]] = defaultdict(set)
    for m, b in by_mask.items():
        holders = [roots[i] for i in range(len(roots)) if m >> i & 1]
        key = frozenset(r.free or f"del {r.label}" for r in holders)
        needs[key] += b
        for d, db in dev_mask[m].items():
            needs_dev[key][d] += db
        history_of[key].update(r.label for r in holders if r.kind == "history")
    order = {r.label: i for i, r in enumerate(roots)}
    out: list[Suggestion] = []
    for key in needs:
        frees = sum(b for k, b in needs.items() if k <= key)
        per_dev: dict[int, int] = defaultdict(int)
        for k, devs in needs_dev.items():
            if k <= key:
                for d, db in devs.items():
                    per_dev[d] += db
        dels = sorted(
            (a[4:] for a in key if a.startswith("del ") and "user_ns_hidden" not in a),
            key=lambda name: order.get(name, 0),
        )
        others = sorted(
            (a for a in key if not (a.startswith("del ") and "user_ns_hidden" not in a)),
            key=lambda a: (a != RESET_OUT, a),
        )
        action = "; ".join((["del " + ", ".join(dels)] if dels else []) + others)
        hist = sorted(history_of[key])
        if not dels:
            why = (
                "only IPython's output history holds them ("
                + ", ".join(hist[:6])
                + (" …" if len(hist) > 6 else "")
                + ")"
            )
            if CLEAR_HIDDEN in key:
                why += (
                    "; IPython keeps hidden copies of _, __, ___ that %reset -f out leaves alive "
                    "(and then stops updating _)"
                )
        elif others:
            why = "the output history holds some of them too"
        else:
            why = "no other name holds these arrays" if len(dels) == 1 else "these names share the arrays"
        out.append(Suggestion(action, frees, why, max(per_dev.values(), default=0)))
    out.sort(key=lambda s: (-s.frees, s.action))
    return tuple(out[:8])
