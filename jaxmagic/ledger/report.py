"""``CompileLedgerReport``: the session's compiles by call site, with fixes and their savings."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from jaxmagic._format import fmt_seconds, plural
from jaxmagic._result import Result
from jaxmagic.ledger.capture import (
    BELOW_MIN,
    DISABLED,
    HIT,
    NOT_CONFIGURED,
    OUTCOMES,
    WRITTEN,
    Entry,
    Group,
)

RECOMPILE_MIN = 3  # compiles of one function at one site before it is called out


@dataclass(frozen=True)
class FunctionRow:
    """All compiles of one function at one call site (over the cells in the report)."""

    name: str
    count: int
    trace_s: float
    lower_s: float
    backend_s: float
    saved_s: float
    outcomes: dict[str, int]
    cells: tuple[int, ...]
    eager: bool = False  # one op run outside jit

    @property
    def total_s(self) -> float:
        return self.trace_s + self.lower_s + self.backend_s

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "count": self.count,
            "trace_s": self.trace_s,
            "lower_s": self.lower_s,
            "backend_s": self.backend_s,
            "total_s": self.total_s,
            "saved_s": self.saved_s,
            "cache": dict(self.outcomes),
            "cells": list(self.cells),
            "eager": self.eager,
        }


@dataclass(frozen=True)
class SiteRow:
    """One call site (``In[5]:3`` or ``train.py:40``) and its functions, costliest first."""

    site: str
    file: str
    line: int
    functions: tuple[FunctionRow, ...]

    @property
    def count(self) -> int:
        return sum(f.count for f in self.functions)

    @property
    def total_s(self) -> float:
        return sum(f.total_s for f in self.functions)

    def to_dict(self) -> dict[str, Any]:
        return {
            "site": self.site,
            "file": self.file,
            "line": self.line,
            "count": self.count,
            "total_s": self.total_s,
            "functions": [f.to_dict() for f in self.functions],
        }


@dataclass(frozen=True)
class Fix:
    """What to change, what it saves (seconds, per run like this one), and why."""

    action: str
    saves_s: float
    why: str

    def to_dict(self) -> dict[str, Any]:
        return {"action": self.action, "saves_s": self.saves_s, "why": self.why}


@dataclass(frozen=True)
class CompileLedgerReport(Result):
    """Every compile of the session (``%jaxcompiles``), grouped by call site, costliest first."""

    sites: tuple[SiteRow, ...]
    fixes: tuple[Fix, ...]
    notes: tuple[str, ...]
    outcomes: dict[str, int]  # persistent-cache outcome -> compiles
    count: int
    trace_s: float
    lower_s: float
    backend_s: float
    saved_s: float
    cache_dir: str | None
    cache_enabled: bool
    min_compile_s: float
    since: int | None
    recent: tuple[Entry, ...]  # the last compiles, newest last

    @property
    def total_s(self) -> float:
        return self.trace_s + self.lower_s + self.backend_s

    def summary(self) -> str:
        since = f" since In[{self.since}]" if self.since is not None else ""
        return (
            f"{plural(self.count, 'compile')}, {fmt_seconds(self.total_s)}{since}, cache {self.cache_state}"
        )

    @property
    def cache_state(self) -> str:
        if not self.cache_dir:
            return "not configured"
        if not self.cache_enabled:
            return f"disabled ({self.cache_dir})"
        hits = self.outcomes.get(HIT, 0)
        return f"{self.cache_dir} ({plural(hits, 'hit')})"

    def to_text(self, width: int = 100) -> str:
        from jaxmagic.render.ledger import ledger_text

        return ledger_text(self, width=width)

    def to_html(self) -> str:
        from jaxmagic.render.ledger import ledger_html

        return ledger_html(self)

    def to_dict(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "total_s": self.total_s,
            "trace_s": self.trace_s,
            "lower_s": self.lower_s,
            "backend_s": self.backend_s,
            "saved_s": self.saved_s,
            "cache": {
                "dir": self.cache_dir,
                "enabled": self.cache_enabled,
                "min_compile_time_secs": self.min_compile_s,
                "outcomes": dict(self.outcomes),
            },
            "since": self.since,
            "sites": [s.to_dict() for s in self.sites],
            "fixes": [f.to_dict() for f in self.fixes],
            "notes": list(self.notes),
            "recent": [
                {
                    "seq": e.seq,
                    "name": e.name,
                    "file": e.file,
                    "line": e.line,
                    "cell": e.cell,
                    "trace_s": e.trace_s,
                    "lower_s": e.lower_s,
                    "backend_s": e.backend_s,
                    "cache": e.outcome,
                    "saved_s": e.saved_s,
                    "eager": e.eager,
                }
                for e in self.recent
            ],
        }


def _site_label(g: Group) -> str:
    if not g.file:
        return g.name  # the overflow group
    if g.file == "?":
        return "?"
    where = g.label or os.path.basename(g.file)
    return f"{where}:{g.line}"


def build_report(
    groups: list[Group],
    entries: list[Entry],
    *,
    since: int | None,
    cache_dirs: list[str],
    cache_dir: str | None,
    cache_enabled: bool,
    min_compile_s: float,
    kept_entries: int,
    inspections: tuple[int, float] = (0, 0.0),
) -> CompileLedgerReport:
    """Fold per-(site, function, cell) groups into sites, totals and fixes."""
    by_site: dict[tuple[str, int, str], dict[str, list[Group]]] = {}
    for g in groups:
        label = _site_label(g)
        by_site.setdefault((label, g.line, g.file), {}).setdefault(g.name, []).append(g)
    sites = []
    for (label, line, file), functions in by_site.items():
        rows = [_function_row(name, gs) for name, gs in functions.items()]
        rows.sort(key=lambda r: -r.total_s)
        sites.append(SiteRow(label, file, line, tuple(rows)))
    sites.sort(key=lambda s: -s.total_s)

    outcomes = {o: 0 for o in OUTCOMES}
    outcome_s = {o: 0.0 for o in OUTCOMES}
    for g in groups:
        for o, n in g.outcomes.items():
            outcomes[o] += n
            outcome_s[o] += g.outcome_s.get(o, 0.0)
    outcomes = {o: n for o, n in outcomes.items() if n}
    trace_s = sum(g.trace_s for g in groups)
    lower_s = sum(g.lower_s for g in groups)
    backend_s = sum(g.backend_s for g in groups)
    total_s = trace_s + lower_s + backend_s
    count = sum(g.count for g in groups)

    fixes = _cache_fixes(outcomes, outcome_s, total_s, min_compile_s, cache_dir)
    fixes += _recompile_fixes(sites)
    notes = _cache_notes(cache_dirs, cache_dir, outcomes, sum(max(0.0, g.saved_s) for g in groups))
    if count > len(entries) and len(entries) == kept_entries:
        notes.append(f"the last {kept_entries} compiles are kept one by one; totals count all {count}")
    if inspections[0]:
        notes.append(
            f"{plural(inspections[0], 'compile')} ({fmt_seconds(inspections[1])}) made by jaxmagic to inspect "
            "calls (%jaxpr, %jaxhlo, %jaxcheck, %jaxplan, %jaxtabulate) or measure the device's peak FLOP/s "
            "are left out"
        )
    return CompileLedgerReport(
        sites=tuple(sites),
        fixes=tuple(sorted(fixes, key=lambda f: -f.saves_s)),
        notes=tuple(notes),
        outcomes=outcomes,
        count=count,
        trace_s=trace_s,
        lower_s=lower_s,
        backend_s=backend_s,
        saved_s=sum(max(0.0, g.saved_s) for g in groups),
        cache_dir=cache_dir,
        cache_enabled=cache_enabled,
        min_compile_s=min_compile_s,
        since=since,
        recent=tuple(entries[-20:]),
    )


def _function_row(name: str, groups: list[Group]) -> FunctionRow:
    outcomes: dict[str, int] = {}
    for g in groups:
        for o, n in g.outcomes.items():
            outcomes[o] = outcomes.get(o, 0) + n
    cells = sorted({g.cell for g in groups if g.cell is not None})
    return FunctionRow(
        name=name,
        count=sum(g.count for g in groups),
        trace_s=sum(g.trace_s for g in groups),
        lower_s=sum(g.lower_s for g in groups),
        backend_s=sum(g.backend_s for g in groups),
        saved_s=sum(g.saved_s for g in groups),
        outcomes=outcomes,
        cells=tuple(cells),
        eager=any(g.eager for g in groups),
    )


def _cache_fixes(
    outcomes: dict[str, int],
    outcome_s: dict[str, float],
    total_s: float,
    min_compile_s: float,
    cache_dir: str | None,
) -> list[Fix]:
    fixes = []
    if outcomes.get(NOT_CONFIGURED):
        s = outcome_s[NOT_CONFIGURED]
        fixes.append(
            Fix(
                "configure the persistent cache: "
                "jax.config.update('jax_compilation_cache_dir', '/path/to/jax-cache')",
                s,
                f"{fmt_seconds(s)} of the {fmt_seconds(total_s)} compiled "
                f"({plural(outcomes[NOT_CONFIGURED], 'compile')}) would be reused next time "
                "(tracing and lowering still run)",
            )
        )
    if outcomes.get(BELOW_MIN):
        s = outcome_s[BELOW_MIN]
        fixes.append(
            Fix(
                "lower the threshold: jax.config.update('jax_persistent_cache_min_compile_time_secs', 0)",
                s,
                f"{plural(outcomes[BELOW_MIN], 'compile')} ({fmt_seconds(s)}) took less than "
                f"{min_compile_s:g} s and were not written to the cache",
            )
        )
    if outcomes.get(DISABLED):
        s = outcome_s[DISABLED]
        fixes.append(
            Fix(
                "turn the cache on: jax.config.update('jax_enable_compilation_cache', True)",
                s,
                f"{plural(outcomes[DISABLED], 'compile')} ({fmt_seconds(s)}) did not use the cache "
                f"although jax_compilation_cache_dir is {cache_dir!r}",
            )
        )
    return fixes


def _recompile_fixes(sites: list[SiteRow], limit: int = 5) -> list[Fix]:
    fixes = []
    for site in sites:
        eager = [f for f in site.functions if f.eager]
        if sum(f.count for f in eager) >= RECOMPILE_MIN and site.file:
            saves = sum(f.total_s for f in eager)
            names = ", ".join(f.name for f in eager[:4]) + (", …" if len(eager) > 4 else "")
            fixes.append(
                Fix(
                    f"{site.site} runs {sum(f.count for f in eager)} op-by-op compiles outside jit "
                    f"({names}): move this code into a jax.jit function",
                    saves,
                    "each op run outside jit compiles on its own for every new shape and dtype; "
                    f"inside one jit they compile once, with the function (up to {fmt_seconds(saves)})",
                )
            )
        for f in site.functions:
            if f.count < RECOMPILE_MIN or not site.file or f.eager:
                continue
            saves = f.total_s - f.total_s / f.count
            fixes.append(
                Fix(
                    f"{f.name} compiled {f.count}× at {site.site}: pad inputs to a few bucket shapes "
                    "(or keep dtypes and static arguments fixed)",
                    saves,
                    f"each new input shape, dtype or static argument compiles again; compiling once "
                    f"would save up to {fmt_seconds(saves)} (%%jaxprofile names each cache-miss reason)",
                )
            )
    fixes.sort(key=lambda f: -f.saves_s)
    return fixes[:limit]


def _cache_notes(
    cache_dirs: list[str], cache_dir: str | None, outcomes: dict[str, int], saved_s: float = 0.0
) -> list[str]:
    notes = []
    if len(cache_dirs) > 1:
        notes.append(
            f"jax_compilation_cache_dir changed during the session ({' → '.join(cache_dirs)}): JAX opens "
            f"the cache once per process and keeps using {cache_dirs[0]!r}; restart to use "
            f"{cache_dirs[-1]!r}"
        )
    if cache_dir:
        problem = _dir_problem(cache_dir)
        if problem:
            notes.append(
                f"the cache directory {cache_dir!r} {problem}: JAX cannot save compiled programs there "
                "(it warns 'Error writing persistent compilation cache entry')"
            )
    if outcomes.get(WRITTEN):
        notes.append(
            f"{plural(outcomes[WRITTEN], 'compile')} written to the cache: the next run can reuse them"
        )
    if outcomes.get(HIT) and saved_s <= 0:
        # jax/_src/compiler.py stores int(compile_time_secs) with each entry
        notes.append(
            f"{plural(outcomes[HIT], 'cache hit')}, 0 s saved by JAX's count: JAX stores each entry's "
            "compile time in whole seconds, so a program that compiled in under a second is counted "
            "as saving nothing; its compile time in the run that wrote it is what the hit saved"
        )
    return notes


def _dir_problem(path: str) -> str | None:
    """Why ``path`` cannot hold cache entries, or None when it (or its parent) is writable."""
    if "://" in path:  # gs://, etc.: not checkable here
        return None
    path = os.path.expanduser(path)
    if os.path.exists(path):
        if not os.path.isdir(path):
            return "is a file, not a directory"
        if not os.access(path, os.W_OK | os.X_OK):
            return "is not writable"
        return None
    parent = os.path.dirname(os.path.abspath(path))
    while parent and not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if parent and not os.access(parent, os.W_OK | os.X_OK):
        return "does not exist and cannot be created"
    return None
