"""Recording compiles: ``jax.monitoring`` events in, bounded per-call-site aggregates out.

Per compile JAX reports, on the compiling thread and in this order: the trace
(``fun_name=f``), the lowering (``jit(f)``), then inside the backend step the persistent
cache events (``/jax/compilation_cache/compile_requests_use_cache``, ``cache_hits`` +
``compile_time_saved_sec``, or ``cache_misses`` when an entry is written), and last
``backend_compile_duration`` (``jit(f)``). The backend event closes one compile.
"""

from __future__ import annotations

import collections
import importlib.abc
import os
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

TRACE = "/jax/core/compile/jaxpr_trace_duration"
LOWER = "/jax/core/compile/jaxpr_to_mlir_module_duration"
BACKEND = "/jax/core/compile/backend_compile_duration"
CACHE_REQUEST = "/jax/compilation_cache/compile_requests_use_cache"
CACHE_HIT = "/jax/compilation_cache/cache_hits"
CACHE_WRITE = "/jax/compilation_cache/cache_misses"  # recorded only when an entry is written
CACHE_SAVED = "/jax/compilation_cache/compile_time_saved_sec"
CACHE_RETRIEVAL = "/jax/compilation_cache/cache_retrieval_time_sec"

# Persistent-cache outcome of one compile.
HIT = "hit"
WRITTEN = "miss, written"
BELOW_MIN = "below min compile time"
NOT_WRITTEN = "miss, not written"
NOT_CONFIGURED = "not configured"
DISABLED = "cache disabled"
OUTCOMES = (HIT, WRITTEN, BELOW_MIN, NOT_WRITTEN, NOT_CONFIGURED, DISABLED)
# Outcomes whose backend seconds the persistent cache would have saved on the next run.
REUSABLE = (BELOW_MIN, NOT_CONFIGURED, DISABLED)

# Frames of the shell itself are not the user's line (a magic's compile points at the cell).
_SHELL_PARTS = ("IPython", "ipykernel", "traitlets", "decorator.py")


def _is_not_users(filename: str) -> bool:
    from jaxmagic._frames import is_library_file  # imports jax: only once a compile runs

    if is_library_file(filename) or filename.startswith("<decorator-gen"):
        return True
    parts = filename.split(os.sep)
    return any(p in _SHELL_PARTS for p in parts[-4:])


_PACKAGE = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
# jaxmagic code that compiles a call only to look at it (%jaxpr/%jaxhlo, %jaxcheck, %jaxplan,
# %jaxtabulate) or to measure the device's peak FLOP/s. Other jaxmagic code compiles the user's
# own programs (the trainer's step, the profiler's wrappers around the user's ops) and those count.
_INSPECTIONS = tuple(
    _PACKAGE + p for p in ("ir.py", "check.py", "devicepeak.py", "memories" + os.sep, "layercost" + os.sep)
)


def _is_inspection(filename: str) -> bool:
    return filename.startswith(_INSPECTIONS)


def _site() -> tuple[tuple[str, int] | None, list[str], bool, bool]:
    """The user's line that caused the compile (innermost user frame), the files of all user
    frames, outermost first (the outermost cell among them is the cell that runs), and whether
    this is one op run outside ``jit`` (JAX compiles each eager primitive through
    ``dispatch.apply_primitive``), and whether jaxmagic compiled it to inspect a call."""
    frame, eager, inspection = sys._getframe(2), False, False
    inner, files = None, []
    while frame is not None:
        code = frame.f_code
        if not _is_not_users(code.co_filename):
            if inner is None:
                inner = (code.co_filename, frame.f_lineno)
            if not files or files[-1] != code.co_filename:
                files.append(code.co_filename)
        elif inner is None:
            eager = eager or (code.co_name == "apply_primitive" and code.co_filename.endswith("dispatch.py"))
            inspection = inspection or _is_inspection(code.co_filename)
        frame = frame.f_back
    files.reverse()
    return inner, files, eager, inspection


def _cell_number(label: str | None) -> int | None:
    """``In[12]`` -> 12."""
    if label and label.startswith("In[") and label.endswith("]"):
        try:
            return int(label[3:-1])
        except ValueError:
            return None
    return None


@dataclass(slots=True)
class Entry:
    """One compile (the last ``max_entries`` are kept)."""

    seq: int
    name: str
    file: str
    line: int
    cell: int | None
    trace_s: float
    lower_s: float
    backend_s: float
    outcome: str
    saved_s: float  # JAX's estimate for a hit (whole stored seconds minus retrieval), else 0
    eager: bool  # one op run outside jit

    @property
    def total_s(self) -> float:
        return self.trace_s + self.lower_s + self.backend_s


@dataclass(slots=True)
class Group:
    """Every compile of one function at one call site during one cell."""

    name: str
    file: str
    line: int
    cell: int | None
    label: str | None  # ``In[5]`` for a cell, else None
    eager: bool = False
    count: int = 0
    trace_s: float = 0.0
    lower_s: float = 0.0
    backend_s: float = 0.0
    saved_s: float = 0.0
    outcomes: dict = field(default_factory=dict)  # outcome -> count
    outcome_s: dict = field(default_factory=dict)  # outcome -> backend seconds


_OP_NAMES: frozenset[str] | None = None


def _is_op(name: str) -> bool:
    """A jax.numpy / jax.lax function (jnp's ufuncs are jitted functions of their own) or a
    primitive: compiled alone, it is one op run outside a user's jit."""
    global _OP_NAMES
    if _OP_NAMES is None:
        import jax

        _OP_NAMES = frozenset(n for m in (jax.numpy, jax.lax) for n in dir(m) if not n.startswith("_"))
    return name in _OP_NAMES


class _Pending(threading.local):
    """The compile in progress on this thread (JAX compiles on the calling thread)."""

    def __init__(self) -> None:
        self.clear()
        self.traces: dict[str, float] = {}
        self.lowers: dict[str, float] = {}

    def clear(self) -> None:
        self.requested = self.hit = self.written = False
        self.saved_s = 0.0


def _config(name: str, default: Any = None) -> Any:
    import jax

    try:
        return getattr(jax.config, name)
    except AttributeError:
        return default


class CompileLedger:
    """Records every compile while installed; ``report()`` summarises them.

    Memory is bounded: one ``Group`` per (call site, function, cell) up to ``max_groups``
    (later new keys share one overflow group) and the last ``max_entries`` compiles.

    Args:
      label_file: names a code file as the user sees it (``In[5]`` for a cell), or None.
      current_cell: the number of the cell running now; by default the outermost cell frame on
        the stack (named by ``label_file``) tells it, else None.
    """

    OVERFLOW = "(more call sites)"

    def __init__(
        self,
        *,
        label_file: Callable[[str], str | None] | None = None,
        current_cell: Callable[[], int | None] | None = None,
        max_entries: int = 1000,
        max_groups: int = 5000,
    ) -> None:
        self.label_file = label_file or (lambda f: None)
        self.current_cell = current_cell
        self.max_groups = max_groups
        self._lock = threading.Lock()
        self._pending = _Pending()
        self._installed = False
        self.groups: dict[tuple, Group] = {}
        self.entries: collections.deque[Entry] = collections.deque(maxlen=max_entries)
        self.seq = 0
        self.cache_dirs: list[str] = []  # persistent cache directories seen at compiles, in order
        self.inspections = 0  # compiles jaxmagic made to inspect a call, left out of the ledger
        self.inspection_s = 0.0

    # --- listeners ---------------------------------------------------------------------------
    def install(self) -> None:
        """Register the two ``jax.monitoring`` listeners (idempotent)."""
        import jax

        if self._installed:
            return
        jax.monitoring.register_event_duration_secs_listener(self._on_duration)
        jax.monitoring.register_event_listener(self._on_event)
        self._installed = True

    def uninstall(self) -> None:
        """Remove the listeners this ledger registered (idempotent)."""
        import jax

        if not self._installed:
            return
        self._installed = False
        for remove, fn in (
            (jax.monitoring.unregister_event_duration_listener, self._on_duration),
            (jax.monitoring.unregister_event_listener, self._on_event),
        ):
            try:
                remove(fn)
            except (AssertionError, ValueError):  # already cleared (jax.monitoring.clear_event_listeners)
                pass

    @property
    def installed(self) -> bool:
        return self._installed

    def reset(self) -> None:
        """Forget every compile recorded so far (the listeners stay)."""
        with self._lock:
            self.groups.clear()
            self.entries.clear()
            self.cache_dirs.clear()
            self.inspections, self.inspection_s = 0, 0.0

    def _on_event(self, event: str, **kw: Any) -> None:
        if event == CACHE_REQUEST:
            self._pending.requested = True
        elif event == CACHE_HIT:
            self._pending.hit = True
        elif event == CACHE_WRITE:
            self._pending.written = True

    def _on_duration(self, event: str, seconds: float, **kw: Any) -> None:
        p = self._pending
        if event == BACKEND:
            try:
                self._record(str(kw.get("fun_name", "?")), seconds)
            finally:
                p.clear()
                p.traces.clear()
                p.lowers.clear()
        elif event == TRACE:
            p.traces[str(kw.get("fun_name", "?"))] = seconds
        elif event == LOWER:
            p.lowers[_bare(str(kw.get("fun_name", "?")))] = seconds
        elif event == CACHE_SAVED:
            p.saved_s = seconds

    def _record(self, fun_name: str, backend_s: float) -> None:
        p = self._pending
        name = _bare(fun_name)
        outcome, cache_dir = self._outcome(backend_s)
        site, files, eager, inspection = _site()
        if inspection:  # jaxmagic's own compile (%jaxpr, %jaxplan, %jaxtabulate): counted apart
            with self._lock:
                self.inspections += 1
                self.inspection_s += backend_s + p.traces.get(name, 0.0) + p.lowers.get(name, 0.0)
            return
        site = site or ("?", 0)
        eager = eager or _is_op(name)
        if self.current_cell is not None:
            cell = self.current_cell()
        else:
            cell = next((n for n in map(_cell_number, map(self.label_file, files)) if n is not None), None)
        with self._lock:
            self.seq += 1
            if cache_dir and (not self.cache_dirs or self.cache_dirs[-1] != cache_dir):
                if cache_dir not in self.cache_dirs:
                    self.cache_dirs.append(cache_dir)
            entry = Entry(
                self.seq,
                name,
                site[0],
                site[1],
                cell,
                p.traces.get(name, 0.0),
                p.lowers.get(name, 0.0),
                backend_s,
                outcome,
                p.saved_s if outcome == HIT else 0.0,
                eager,
            )
            self.entries.append(entry)
            key = (site[0], site[1], name, cell)
            group = self.groups.get(key)
            if group is None:
                if len(self.groups) >= self.max_groups:
                    key = ("", 0, self.OVERFLOW, None)
                    group = self.groups.get(key)
                    if group is None:
                        group = self.groups[key] = Group(self.OVERFLOW, "", 0, None, None)
                else:
                    group = self.groups[key] = Group(
                        name, site[0], site[1], cell, self.label_file(site[0]), eager
                    )
            group.count += 1
            group.trace_s += entry.trace_s
            group.lower_s += entry.lower_s
            group.backend_s += backend_s
            group.saved_s += entry.saved_s
            group.outcomes[outcome] = group.outcomes.get(outcome, 0) + 1
            group.outcome_s[outcome] = group.outcome_s.get(outcome, 0.0) + backend_s

    def _outcome(self, backend_s: float) -> tuple[str, str | None]:
        p = self._pending
        cache_dir = _config("jax_compilation_cache_dir")
        if p.hit:
            return HIT, cache_dir
        if p.written:
            return WRITTEN, cache_dir
        if not cache_dir:
            return NOT_CONFIGURED, None
        if not _config("jax_enable_compilation_cache", True) or not p.requested:
            return DISABLED, cache_dir
        if backend_s < float(_config("jax_persistent_cache_min_compile_time_secs", 0.0) or 0.0):
            return BELOW_MIN, cache_dir
        return NOT_WRITTEN, cache_dir

    # --- report ------------------------------------------------------------------------------
    def report(self, *, since: int | None = None):
        """A ``CompileLedgerReport`` of the compiles recorded (from cell ``since`` on)."""
        from jaxmagic.ledger.report import build_report

        with self._lock:
            groups = [
                g for g in self.groups.values() if since is None or (g.cell is not None and g.cell >= since)
            ]
            groups = [Group(**{k: getattr(g, k) for k in Group.__slots__}) for g in groups]
            for g in groups:
                g.outcomes, g.outcome_s = dict(g.outcomes), dict(g.outcome_s)
            entries = [e for e in self.entries if since is None or (e.cell is not None and e.cell >= since)]
            cache_dirs = list(self.cache_dirs)
            inspections = (self.inspections, self.inspection_s) if since is None else (0, 0.0)
        return build_report(
            groups,
            entries,
            since=since,
            cache_dirs=cache_dirs,
            cache_dir=_config("jax_compilation_cache_dir"),
            cache_enabled=bool(_config("jax_enable_compilation_cache", True)),
            min_compile_s=float(_config("jax_persistent_cache_min_compile_time_secs", 0.0) or 0.0),
            kept_entries=self.entries.maxlen or 0,
            inspections=inspections,
        )


def _bare(name: str) -> str:
    """``jit(f)`` -> ``f`` (the lowering and backend events wrap the traced name)."""
    return name[4:-1] if name.startswith("jit(") and name.endswith(")") else name


# --- the session's one ledger ---------------------------------------------------------------
# The listeners registered for the session are these two module functions, the same objects
# across %reload_ext, forwarding to the current ledger: exactly one registration, ever.
_ACTIVE: CompileLedger | None = None
_REGISTERED = False


def _session_on_duration(event: str, seconds: float, **kw: Any) -> None:
    ledger = _ACTIVE
    if ledger is not None:
        ledger._on_duration(event, seconds, **kw)


def _session_on_event(event: str, **kw: Any) -> None:
    ledger = _ACTIVE
    if ledger is not None:
        ledger._on_event(event, **kw)


def _register() -> None:
    global _REGISTERED
    if _REGISTERED or _ACTIVE is None:
        return
    import jax

    jax.monitoring.register_event_duration_secs_listener(_session_on_duration)
    jax.monitoring.register_event_listener(_session_on_event)
    _REGISTERED = True
    _ACTIVE._installed = True


def _unregister() -> None:
    global _REGISTERED
    if not _REGISTERED:
        return
    _REGISTERED = False
    import jax

    for remove, fn in (
        (jax.monitoring.unregister_event_duration_listener, _session_on_duration),
        (jax.monitoring.unregister_event_listener, _session_on_event),
    ):
        try:
            remove(fn)
        except (AssertionError, ValueError):  # already cleared by jax.monitoring.clear_event_listeners
            pass


class _AfterJaxImport(importlib.abc.MetaPathFinder):
    """Registers the session listeners right after ``import jax`` finishes, so that
    ``%load_ext jaxmagic`` never imports jax itself and the first cell's compiles still count."""

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name != "jax":
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        exec_module = getattr(loader, "exec_module", None)
        if exec_module is None:
            return None

        class _Loader(importlib.abc.Loader):
            def create_module(self, spec: Any) -> Any:
                return loader.create_module(spec)

            def exec_module(self, module: Any) -> None:
                exec_module(module)
                _remove_import_hook()
                _register()

        spec.loader = _Loader()
        return spec


def _remove_import_hook() -> None:
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _AfterJaxImport)]


def start(**kwargs: Any) -> CompileLedger:
    """Start the session ledger, replacing any earlier one. Its listeners are registered now
    if jax is imported, else right after ``import jax``."""
    global _ACTIVE
    stop()
    _ACTIVE = CompileLedger(**kwargs)
    if "jax" in sys.modules:
        _register()
    else:
        sys.meta_path.insert(0, _AfterJaxImport())
    return _ACTIVE


def stop() -> None:
    """Remove the session ledger's listeners (or pending import hook) and forget its records."""
    global _ACTIVE
    _remove_import_hook()
    _unregister()
    if _ACTIVE is not None:
        _ACTIVE._installed = False
    _ACTIVE = None


def active() -> CompileLedger | None:
    """The session ledger, or None when the extension is not loaded."""
    return _ACTIVE
