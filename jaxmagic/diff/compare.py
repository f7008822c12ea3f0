"""Compare two ``ProfileReport``s: per function, what got slower or faster and why.

Both sides are read through ``to_dict()`` (a report object, its dict, or a ``--json`` file),
so a report saved by another session, machine or JAX version compares like a live one.
Where the machines differ, times are compared as shares of each run, not as seconds.
"""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from dataclasses import dataclass
from typing import Any

from jaxmagic._format import fmt_seconds, plural
from jaxmagic._result import Result
from jaxmagic.diff.hlo import HloSummary, changed_counts, hlo_text, summarise_hlo

READS_VERSION = 1  # the newest ProfileReport.to_dict layout this module understands


class ReportVersionError(ValueError):
    """A report written by a newer jaxmagic than this one can read."""


def load_report(source: Any, which: str = "report") -> dict[str, Any]:
    """A report's ``to_dict()`` from a ``ProfileReport``, a dict, or a path to a JSON file."""
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        try:
            with open(os.path.expanduser(path), encoding="utf-8") as fh:
                data = json.load(fh)
        except OSError as e:
            raise ValueError(f"{which}: cannot read {path!r}: {e.strerror or e}") from None
        except json.JSONDecodeError as e:
            raise ValueError(f"{which}: {path!r} is not JSON ({e.msg}, line {e.lineno})") from None
    elif isinstance(source, dict):
        data = source
    elif hasattr(source, "to_dict") and hasattr(source, "functions"):
        data = source.to_dict()
    else:
        raise TypeError(
            f"{which}: expected a ProfileReport (%%jaxprofile -o), its to_dict(), or a path to a "
            f"file written by %%jaxprofile --json; got {type(source).__name__}"
        )
    if not isinstance(data, dict) or not isinstance(data.get("functions"), list):
        raise ValueError(f"{which}: not a profile report (no 'functions' list): keys {sorted(data)[:8]}")
    version = data.get("version", 0)
    if not isinstance(version, int) or version > READS_VERSION:
        raise ReportVersionError(
            f"{which} is a version {version} profile report; this jaxmagic reads versions up to "
            f"{READS_VERSION}: upgrade jaxmagic to compare it"
        )
    return data


@dataclass(frozen=True)
class FunctionChange:
    """One function in either run: its numbers in A and B (None where absent or unmeasured)."""

    name: str
    kind: str
    status: str  # "changed" | "appeared" | "vanished"
    compiles: tuple[int, int]
    compile_s: tuple[float, float]  # trace + lower + backend compile
    device_s: tuple[float | None, float | None]
    calls: tuple[int | None, int | None]
    flops: tuple[float | None, float | None]
    bytes_accessed: tuple[float | None, float | None]
    temp_bytes: tuple[int | None, int | None]
    new_reasons: tuple[str, ...]  # cache-miss reasons in B that A did not have
    impact: float  # what sorts the table: seconds, or a share of the run when machines differ
    hlo: tuple[HloSummary | None, HloSummary | None] = (None, None)  # from --hlo reports

    @property
    def hlo_changes(self) -> dict[str, Any] | None:
        """How the optimized HLO changed, when both sides carry it: ``fusions`` (A, B),
        ``ops`` and ``collectives`` as ``[(kind, A, B)]`` for the kinds whose count changed,
        ``collective_bytes`` (A, B); ``None`` when a side has no HLO."""
        a, b = self.hlo
        if a is None or b is None:
            return None
        return {
            "fusions": (a.fusions, b.fusions),
            "instructions": (a.instructions, b.instructions),
            "ops": changed_counts(a.ops, b.ops),
            "collectives": changed_counts(a.collectives, b.collectives),
            "collective_bytes": (a.collective_bytes, b.collective_bytes),
        }

    def ratio(self, pair: tuple[Any, Any]) -> float | None:
        """B / A, or None when either side is missing or A is 0."""
        a, b = pair
        if a is None or b is None or not a:
            return None
        return b / a

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "status": self.status,
            "compiles": list(self.compiles),
            "compile_s": list(self.compile_s),
            "compile_ratio": self.ratio(self.compile_s),
            "device_s": list(self.device_s),
            "device_ratio": self.ratio(self.device_s),
            "calls": list(self.calls),
            "flops": list(self.flops),
            "flops_ratio": self.ratio(self.flops),
            "bytes_accessed": list(self.bytes_accessed),
            "temp_bytes": list(self.temp_bytes),
            "new_cache_miss_reasons": list(self.new_reasons),
            "impact": self.impact,
            "hlo": [None if h is None else h.to_dict() for h in self.hlo],
            "hlo_changes": _listed(self.hlo_changes),
        }


def _listed(changes: dict[str, Any] | None) -> dict[str, Any] | None:
    if changes is None:
        return None
    return {k: [list(r) for r in v] if k in ("ops", "collectives") else list(v) for k, v in changes.items()}


@dataclass(frozen=True)
class ComparisonReport(Result):
    """Run B against run A (``jaxmagic.compare(a, b)``, ``%jaxdiff A B``), largest impact first."""

    labels: tuple[str, str]
    environments: tuple[dict, dict]
    same_machine: bool
    wall_s: tuple[float, float]
    compile_s: tuple[float, float]
    compiles: tuple[int, int]
    changes: tuple[FunctionChange, ...]
    notes: tuple[str, ...]

    @property
    def appeared(self) -> list[FunctionChange]:
        return [c for c in self.changes if c.status == "appeared"]

    @property
    def vanished(self) -> list[FunctionChange]:
        return [c for c in self.changes if c.status == "vanished"]

    def summary(self) -> str:
        ratio = self.wall_s[1] / self.wall_s[0] if self.wall_s[0] else math.inf
        return (
            f"{self.labels[1]} vs {self.labels[0]}: wall ×{ratio:.2f}, "
            f"{plural(len(self.changes), 'function')}, {len(self.appeared)} appeared, "
            f"{len(self.vanished)} vanished"
        )

    def to_text(self, width: int = 100) -> str:
        from jaxmagic.render.diff import diff_text

        return diff_text(self, width=width)

    def to_html(self) -> str:
        from jaxmagic.render.diff import diff_html

        return diff_html(self)

    def to_dict(self) -> dict[str, Any]:
        return {
            "labels": list(self.labels),
            "environments": [dict(e) for e in self.environments],
            "same_machine": self.same_machine,
            "wall_s": list(self.wall_s),
            "compile_s": list(self.compile_s),
            "compiles": list(self.compiles),
            "functions": [c.to_dict() for c in self.changes],
            "notes": list(self.notes),
        }


def _temp(f: dict | None) -> int | None:
    mem = (f or {}).get("memory") or {}
    value = mem.get("temp_bytes")
    return value if isinstance(value, (int, float)) and value >= 0 else None


def _num(f: dict | None, key: str) -> Any:
    value = (f or {}).get(key)
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0 else None


def _key(f: dict) -> tuple[str, str]:
    return f.get("name", "?"), f.get("kind", "jit")


def compare(a: Any, b: Any, *, labels: tuple[str, str] = ("A", "B")) -> ComparisonReport:
    """Compare profile report ``b`` against ``a``.

    Args:
      a, b: ``ProfileReport`` objects (``%%jaxprofile -o``), their ``to_dict()``, or paths of
        files written by ``%%jaxprofile --json``.
      labels: how the two runs are named in the report.

    Returns:
      A ``ComparisonReport``: per function compile and device time with B/A ratios, FLOPs,
      bytes and temporary memory in both, compiles that appeared or vanished, cache-miss
      reasons new in B, and, where both reports were made with ``--hlo``, how each function's
      optimized HLO changed (fusions, ops by kind, collectives); sorted by impact.

    Example::

        before = %jaxprofile -o -q step(state, batch)   # or a --json file
        after = ...
        jaxmagic.compare(before, after)
    """
    da, db = load_report(a, labels[0]), load_report(b, labels[1])
    notes = []
    va, vb = da.get("version", 0), db.get("version", 0)
    if va != vb:
        notes.append(
            f"the reports have different versions ({labels[0]}: {va or 'none'}, {labels[1]}: {vb or 'none'}):"
            " compared on the fields both have"
        )
    ea, eb = da.get("environment") or {}, db.get("environment") or {}
    same = (
        bool(ea)
        and bool(eb)
        and ea.get("device_kind") == eb.get("device_kind")
        and ea.get("backend") == eb.get("backend")
    )
    if ea and eb and not same:
        notes.append(
            f"different machines ({ea.get('device_kind')} vs {eb.get('device_kind')}): times are "
            "compared as shares of each run and ratios, not as seconds"
        )
    elif not (ea and eb):
        notes.append("a report does not say which machine made it: seconds are compared as they are")
        same = True
    if ea.get("jax") and eb.get("jax") and ea["jax"] != eb["jax"]:
        notes.append(f"JAX {ea['jax']} vs {eb['jax']}")
    with_hlo = [any(hlo_text(f) for f in d["functions"]) for d in (da, db)]
    if any(with_hlo) and not all(with_hlo):
        have, lack = (labels[0], labels[1]) if with_hlo[0] else (labels[1], labels[0])
        notes.append(
            f"optimized HLO is missing in {lack} (only {have} was profiled with --hlo): the HLO is not "
            f"compared, the rest is; profile both with %%jaxprofile --hlo to see how it changed"
        )

    # Functions match by name and kind; a name used twice in a run (two lambdas) also by
    # where it was defined.
    names = Counter(_key(f) for f in da["functions"]) + Counter(_key(f) for f in db["functions"])
    twice = {
        k
        for k in names
        if max(sum(_key(f) == k for f in da["functions"]), sum(_key(f) == k for f in db["functions"])) > 1
    }

    def key(f: dict) -> tuple:
        k = _key(f)
        return (*k, f.get("defined_at")) if k in twice else k

    fa = {key(f): f for f in da["functions"]}
    fb = {key(f): f for f in db["functions"]}
    total_a = (da.get("wall_s") or 0.0) or 1.0
    total_b = (db.get("wall_s") or 0.0) or 1.0
    changes = []
    for key in list(fa) + [k for k in fb if k not in fa]:
        x, y = fa.get(key), fb.get(key)
        status = "changed" if x and y else "vanished" if x else "appeared"
        cs = (float((x or {}).get("compile_total_s") or 0.0), float((y or {}).get("compile_total_s") or 0.0))
        ds = (_num(x, "device_s"), _num(y, "device_s"))
        reasons_a = set((x or {}).get("cache_misses") or [])
        new = tuple(r for r in dict.fromkeys((y or {}).get("cache_misses") or []) if r not in reasons_a and x)
        time_a = cs[0] + (ds[0] or 0.0)
        time_b = cs[1] + (ds[1] or 0.0)
        impact = abs(time_b - time_a) if same else abs(time_b / total_b - time_a / total_a)
        changes.append(
            FunctionChange(
                name=key[0] if len(key) == 2 else f"{key[0]} ({key[2] or '?'})",
                kind=key[1],
                status=status,
                compiles=(int((x or {}).get("compiles") or 0), int((y or {}).get("compiles") or 0)),
                compile_s=cs,
                device_s=ds,
                calls=(_num(x, "calls"), _num(y, "calls")),
                flops=(_num(x, "flops"), _num(y, "flops")),
                bytes_accessed=(_num(x, "bytes_accessed"), _num(y, "bytes_accessed")),
                temp_bytes=(_temp(x), _temp(y)),
                new_reasons=new,
                impact=impact,
                hlo=(_summary(x), _summary(y)),
            )
        )
    changes.sort(key=lambda c: -c.impact)
    return ComparisonReport(
        labels=labels,
        environments=(ea, eb),
        same_machine=same,
        wall_s=(float(da.get("wall_s") or 0.0), float(db.get("wall_s") or 0.0)),
        compile_s=(float(da.get("compile_total_s") or 0.0), float(db.get("compile_total_s") or 0.0)),
        compiles=(
            sum(int(f.get("compiles") or 0) for f in da["functions"]),
            sum(int(f.get("compiles") or 0) for f in db["functions"]),
        ),
        changes=tuple(changes),
        notes=tuple(notes),
    )


def _summary(function: dict | None) -> HloSummary | None:
    text = hlo_text(function)
    return None if text is None else summarise_hlo(text)


def describe_ratio(a: float | None, b: float | None) -> str:
    """``12 ms → 30 ms (×2.50)`` style text for two seconds values."""
    if a is None and b is None:
        return "n/a"
    if a is None or b is None:
        return f"{fmt_seconds(a)} → {fmt_seconds(b)}"
    ratio = f" (×{b / a:.2f})" if a else ""
    return f"{fmt_seconds(a)} → {fmt_seconds(b)}{ratio}"
