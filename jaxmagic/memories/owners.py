"""Who holds each live array: a bounded, property-free walk of a namespace.

Every object is read only through C-level descriptors: ``dict.items``, ``tuple``/``list``
iteration, the ``__dict__`` getset descriptor and ``__slots__`` member descriptors found on
the type. No user ``__getattr__``, property, ``__iter__`` or ``items`` is ever called, so a
user object cannot raise, hang or change while we look. The walk is breadth first (owner
paths are the shortest ones) and bounded by a number of objects and of items per container;
when a bound is hit a note says so.

Reachability between names is exact within the walk: an object reached from two names
(``b = a``) is walked once, and the edge from the second name is kept, so ``del a`` is only
suggested to free bytes that no other name reaches.
"""

from __future__ import annotations

import functools
import types
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

_ATOMIC = frozenset(
    {
        int,
        float,
        complex,
        str,
        bytes,
        bytearray,
        bool,
        type(None),
        type(Ellipsis),
        range,
        slice,
        memoryview,
        np.ndarray,
        types.ModuleType,
        types.BuiltinFunctionType,
        types.MethodType,
        types.CodeType,
        types.FrameType,
        property,
        staticmethod,
        classmethod,
        types.GetSetDescriptorType,
        types.MemberDescriptorType,
        types.WrapperDescriptorType,
        types.MethodWrapperType,
    }
)

MAX_OBJECTS = 2_000_000
MAX_ITEMS = 1_000_000


@dataclass(frozen=True)
class Root:
    """A starting point of the walk: a user variable or an entry of the output history."""

    label: str  # "model", "Out[3]", "_"
    kind: str  # "variable" or "history"
    value: Any = field(repr=False, compare=False)
    free: str = ""  # the statement that drops this reference ("%reset -f out"); "del <label>" if empty


@dataclass
class Owners:
    """Result of a walk: for each live array id, its first path and every root that reaches it."""

    roots: list[Root]
    path: dict[int, str]  # array id -> shortest path ("model.blocks[3].kernel")
    root: dict[int, str]  # array id -> the name that path starts from
    root_mask: dict[int, int]  # array id -> bit mask over ``roots``
    other_paths: dict[int, list[str]]  # array id -> a few further paths (capped)
    deleted: list[str]  # paths that hold a deleted (or donated) array
    notes: list[str]
    objects: int  # objects visited

    def roots_of(self, array_id: int) -> list[Root]:
        mask = self.root_mask.get(array_id, 0)
        cache = self.__dict__.setdefault("_roots_cache", {})
        if mask not in cache:
            cache[mask] = [r for i, r in enumerate(self.roots) if mask >> i & 1]
        return cache[mask]


@functools.lru_cache(maxsize=4096)
def _layout(cls: type) -> tuple[Any, tuple[tuple[str, Any], ...]]:
    """The ``__dict__`` getset descriptor of ``cls`` (or None) and its slot member descriptors."""
    dict_descr = None
    slots: list[tuple[str, Any]] = []
    seen: set[str] = set()
    for klass in cls.__mro__:
        own = klass.__dict__
        d = own.get("__dict__")
        if dict_descr is None and type(d) is types.GetSetDescriptorType:
            dict_descr = d
        names = own.get("__slots__", ())
        for name in [names] if isinstance(names, str) else names:
            descr = own.get(name)
            if name not in seen and type(descr) is types.MemberDescriptorType:
                seen.add(name)
                slots.append((name, descr))
    return dict_descr, tuple(slots)


_KEY_TYPES = (str, int, float, bool, bytes, type(None))


def _key(k: Any) -> str:
    """A dict key as text without calling user code (a user ``__repr__`` could raise or hang)."""
    if type(k) in _KEY_TYPES:
        return repr(k)
    if type(k) is tuple and all(type(e) in _KEY_TYPES for e in k):
        return repr(k)
    return f"<{type(k).__name__}>"


def _attr_label(name: str) -> str:
    return f".{name}" if name.isidentifier() else f"[{name}]" if name.isdigit() else f"[{name!r}]"


def _state_items(d: dict, prefix: str, depth: int) -> Iterator[tuple[str, Any]]:
    """The items of an ``nnx.State``'s nested dicts, labelled ``.blocks[0].attn.kernel``."""
    for k, v in dict.items(d):
        label = prefix + (f"[{k}]" if isinstance(k, int) else _attr_label(str(k)))
        if type(v) is dict and depth < 64:
            yield from _state_items(v, label, depth + 1)
        else:
            yield label, v


class _Walker:
    def __init__(
        self, live: Mapping[int, Any], max_objects: int, max_items: int, until_found: bool = False
    ) -> None:
        import jax

        from jaxmagic._internals import NNX_BOOKKEEPING_PREFIXES, InternalsChanged, transparent_slots

        self.live = live
        self.array_type = jax.Array
        self.max_objects, self.max_items = max_objects, max_items
        self.notes: list[str] = []
        try:
            self.transparent = transparent_slots()
        except InternalsChanged as e:
            self.transparent = {}
            self.notes.append(str(e))
        self.skip_prefixes = NNX_BOOKKEEPING_PREFIXES
        self.kinds: dict[type, int] = {}
        self.transparent_cache: dict[type, str | None] = {}
        # node id -> (parent node id or root index as -1-i, edge label); kept objects alive
        self.parent: dict[int, tuple[int, str]] = {}
        self.keep: list[Any] = []
        self.children: dict[int, list[int]] = {}
        # target node id -> (source node id, label) of every further edge reaching it
        self.alias: dict[int, list[tuple[int, str]]] = {}
        self.deleted: list[int] = []
        self.truncated: list[tuple[int, int]] = []
        self.changed: list[int] = []
        self.objects = 0
        self.stopped = False
        # with until_found, the walk ends once every live array has its (shortest) path
        self.until_found = until_found
        self.found = 0

    # -- edges of one object, through C-level access only --------------------------------
    def edges(self, x: Any) -> Iterator[tuple[str, Any]]:
        # issubclass(type(x), ...) rather than isinstance: isinstance may read a user ``__class__``
        cls = type(x)
        if issubclass(cls, dict):
            yield from ((f"[{_key(k)}]", v) for k, v in dict.items(x))
            if cls is dict:
                return
        elif issubclass(cls, tuple):
            fields = cls.__dict__.get("_fields") if cls is not tuple else None
            if type(fields) is tuple and len(fields) == tuple.__len__(x):
                yield from ((f".{f}", v) for f, v in zip(fields, tuple.__iter__(x)))
            else:
                yield from ((f"[{i}]", v) for i, v in enumerate(tuple.__iter__(x)))
            return
        elif issubclass(cls, list):
            yield from ((f"[{i}]", v) for i, v in enumerate(list.__iter__(x)))
            if cls is list:
                return
        elif issubclass(cls, (set, frozenset)):
            yield from (
                ("{…}", v) for v in (set.__iter__(x) if issubclass(cls, set) else frozenset.__iter__(x))
            )
            return
        elif cls is types.FunctionType:
            cells = x.__closure__ or ()
            for name, cell in zip(x.__code__.co_freevars, cells):
                try:
                    yield f".<closure {name}>", cell.cell_contents
                except ValueError:  # an empty cell
                    pass
            for i, v in enumerate(x.__defaults__ or ()):
                yield f".<default {i}>", v
            return
        elif cls is functools.partial:
            yield ".func", x.func
            yield from ((f".args[{i}]", v) for i, v in enumerate(x.args))
            yield from ((f".keywords[{k!r}]", v) for k, v in x.keywords.items())
            return
        transparent = self.transparent_of(cls)
        dict_descr, slots = _layout(cls)
        if dict_descr is not None:
            try:
                attrs = dict_descr.__get__(x, cls)
            except Exception:
                attrs = None
            if isinstance(attrs, dict):
                for k, v in dict.items(attrs):
                    if not isinstance(k, str) or k.startswith(self.skip_prefixes):
                        continue
                    if k == transparent and type(v) is dict:  # nnx.State: its keys read as attributes
                        yield from _state_items(v, "", 0)
                    else:
                        yield ("" if k == transparent else _attr_label(k)), v
        for name, descr in slots:
            try:
                v = descr.__get__(x, cls)
            except AttributeError:  # an unset slot
                continue
            yield ("" if name == transparent else _attr_label(name)), v

    # -- the walk ----------------------------------------------------------------------
    def walk(self, roots: list[Root]) -> None:
        # Variables first, then history: an array a variable reaches is owned by the variable.
        for phase in ("variable", "history"):
            if self.done():
                return
            queue: deque[tuple[Any, int]] = deque()
            for i, root in enumerate(roots):
                if root.kind == phase:
                    self.visit(root.value, -1 - i, "", queue)
            while queue and not self.stopped and not self.done():
                x, node = queue.popleft()
                count = 0
                try:
                    for label, child in self.edges(x):
                        count += 1
                        if count > self.max_items:
                            self.truncated.append((node, count - 1))
                            break
                        self.visit(child, node, label, queue)
                except RuntimeError:  # another thread resized a dict or set while we read it
                    self.changed.append(node)

    def done(self) -> bool:
        return self.until_found and self.found >= len(self.live)

    def kind_of(self, cls: type) -> int:
        """0: nothing to find inside; 1: a jax.Array; 2: a wrapper or container to walk."""
        kind = self.kinds.get(cls)
        if kind is None:
            if cls in _ATOMIC or issubclass(cls, (type, np.ndarray, np.generic)):
                kind = 0
            elif issubclass(cls, self.array_type) and self.transparent_of(cls) is None:
                kind = 1
            else:
                kind = 2
            self.kinds[cls] = kind
        return kind

    def transparent_of(self, cls: type) -> str | None:
        if cls not in self.transparent_cache:
            self.transparent_cache[cls] = next(
                (s for c, s in self.transparent.items() if issubclass(cls, c)), None
            )
        return self.transparent_cache[cls]

    def visit(self, x: Any, parent: int, label: str, queue: deque) -> None:
        kind = self.kinds.get(type(x))
        if kind is None:
            kind = self.kind_of(type(x))
        if kind == 0:
            return
        nid = id(x)
        if nid in self.parent:
            if parent != nid:
                self.alias.setdefault(nid, []).append((parent, label))
            return
        if self.objects >= self.max_objects:
            self.stopped = True
            return
        self.objects += 1
        self.parent[nid] = (parent, label)
        self.keep.append(x)  # ids stay unique while the walk lasts
        if parent >= 0:
            self.children.setdefault(parent, []).append(nid)
        if kind == 1:
            if nid in self.live:
                self.found += 1
            else:
                try:
                    if x.is_deleted():
                        self.deleted.append(nid)
                except Exception:
                    pass
            return
        queue.append((x, nid))

    # -- results -----------------------------------------------------------------------
    def path_of(self, nid: int, roots: list[Root]) -> str:
        return self.rooted_path(nid, roots)[1]

    def rooted_path(self, nid: int, roots: list[Root]) -> tuple[str, str]:
        """``(root label, path)`` of the first edge chain that reached ``nid``."""
        labels: list[str] = []
        node = nid
        while node >= 0:
            node, label = self.parent[node]
            labels.append(label)
        root = roots[-1 - node].label
        return root, root + "".join(reversed(labels))

    def masks(self) -> dict[int, int]:
        """Bit mask of the roots reaching every node: tree edges, then alias edges to a fixpoint."""
        mask: dict[int, int] = {}
        for nid, (parent, _) in self.parent.items():  # insertion order is BFS: parents first
            mask[nid] = (1 << (-1 - parent)) if parent < 0 else mask[parent]
        changed = True
        while changed:
            changed = False
            for target, sources in self.alias.items():
                add = 0
                for source, _ in sources:
                    add |= (1 << (-1 - source)) if source < 0 else mask.get(source, 0)
                if mask[target] | add == mask[target]:
                    continue
                changed = True
                stack = [target]
                while stack:
                    n = stack.pop()
                    if mask[n] | add != mask[n]:
                        mask[n] |= add
                        stack.extend(self.children.get(n, ()))
        return mask


def find_owners(
    roots: Iterable[Root],
    live: Mapping[int, Any],
    *,
    max_objects: int = MAX_OBJECTS,
    max_items: int = MAX_ITEMS,
    other_paths: int = 3,
    until_found: bool = False,
) -> Owners:
    """Walk ``roots`` and attribute every array of ``live`` (``id -> array``) that they reach.

    Args:
        roots: the names to start from (variables first; history entries after).
        live: the live arrays, by ``id``.
        max_objects: stop after visiting this many objects (a note says so).
        max_items: look at no more than this many items of one container (a note says so).
        other_paths: how many further paths to keep per array.
        until_found: end the walk once every array of ``live`` has its path (paths stay the
            shortest; further paths and the roots reaching an array may then be incomplete).

    Returns:
        :class:`Owners`.
    """
    roots = list(roots)
    if len(roots) == 0:
        return Owners([], {}, {}, {}, {}, [], [], 0)
    w = _Walker(live, max_objects, max_items, until_found)
    w.walk(roots)
    mask = w.masks()
    found = [nid for nid in w.parent if nid in live]
    rooted = {nid: w.rooted_path(nid, roots) for nid in found}
    paths = {nid: p for nid, (_, p) in rooted.items()}
    root_of = {nid: r for nid, (r, _) in rooted.items()}
    more: dict[int, list[str]] = {}
    for nid in found:
        extra = [
            (w.path_of(s, roots) if s >= 0 else roots[-1 - s].label) + label
            for s, label in w.alias.get(nid, ())[:other_paths]
        ]
        if extra:
            more[nid] = extra
    notes = list(w.notes)
    if w.stopped:
        notes.append(
            f"owner search stopped after {w.objects:,} objects (limit {max_objects:,}); "
            "arrays it did not reach are listed as unowned"
        )
    if w.changed:
        notes.append(
            f"{len(w.changed)} container(s) changed while being searched (another thread), e.g. "
            f"{w.path_of(w.changed[0], roots)}; some of their arrays may be listed as unowned"
        )
    for node, n in w.truncated[:5]:
        notes.append(
            f"{w.path_of(node, roots)} has more than {n:,} items; only the first {n:,} were searched"
        )
    deleted = [w.path_of(nid, roots) for nid in w.deleted]
    return Owners(roots, paths, root_of, {nid: mask[nid] for nid in found}, more, deleted, notes, w.objects)
