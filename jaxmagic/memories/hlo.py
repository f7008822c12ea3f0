"""The collectives XLA inserted, read from a compiled module's HLO text (no JAX import); also
every instruction with its metadata (``instructions``) and counts by opcode (``op_counts``).

Each ``all-reduce``, ``all-gather``, ``reduce-scatter``, ``all-to-all`` and
``collective-permute`` instruction (async ``-start`` forms included, ``-done`` not counted)
becomes a :class:`Collective`: its result and operand types and bytes (per device, per call),
its device groups in whichever form XLA printed them (explicit ``{{0,1},{2,3}}``, iota
``[2,4]<=[8]``, ``mesh[...] {'axis_1'}``, ``source_target_pairs``), the mesh axes those groups
span, and the source line from the HLO metadata (``source_file``/``source_line`` or the
``StackFrames`` tables of newer XLA).
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

KINDS = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")

_ITEMSIZE = {
    "pred": 1,
    "s4": 1,
    "u4": 1,
    "s8": 1,
    "u8": 1,
    "s16": 2,
    "u16": 2,
    "f16": 2,
    "bf16": 2,
    "s32": 4,
    "u32": 4,
    "f32": 4,
    "s64": 8,
    "u64": 8,
    "f64": 8,
    "c64": 8,
    "c128": 16,
    "f8e4m3fn": 1,
    "f8e5m2": 1,
    "f8e4m3": 1,
    "f8e5m2fnuz": 1,
    "f8e4m3fnuz": 1,
    "f8e4m3b11fnuz": 1,
    "f8e3m4": 1,
    "f8e8m0fnu": 1,
    "f4e2m1fn": 1,
    "token": 0,
}
_ARRAY = re.compile(r"\b([a-z][a-z0-9]*)\[([\d,]*)\]")
_INSTR = re.compile(
    r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(\(.*?\)|[a-z][a-z0-9]*\[[\d,]*\](?:\{[^}]*\})?|[a-z]+\[\])\s+"
    r"([a-z][a-z\-]*)\((.*)$"
)
_OPERAND = re.compile(r"%([\w.\-]+)")


@dataclass(frozen=True)
class Collective:
    """One collective in the compiled program (sizes are per device, per call)."""

    kind: str  # "all-reduce", "all-gather", ...
    name: str  # the HLO instruction name
    out_type: str
    out_bytes: int
    in_bytes: int
    groups: str  # as XLA printed them
    group_size: int | None
    axes: tuple[str, ...] | None  # mesh axes the groups span, where they match a mesh
    source: str | None  # "file:line (function)"
    op_name: str | None  # "jit(step)/dot_general"

    @property
    def nbytes(self) -> int:
        """The larger of operand and result: what travels, within a factor the algorithm sets."""
        return max(self.out_bytes, self.in_bytes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "name": self.name,
            "out_type": self.out_type,
            "out_bytes": self.out_bytes,
            "in_bytes": self.in_bytes,
            "groups": self.groups,
            "group_size": self.group_size,
            "axes": list(self.axes) if self.axes is not None else None,
            "source": self.source,
            "op_name": self.op_name,
        }


def type_bytes(text: str) -> int:
    """Bytes of an HLO type: ``f32[16,64]{1,0}`` or a tuple ``(f32[], bf16[8,8])``."""
    total = 0
    for dtype, dims in _ARRAY.findall(text):
        size = _ITEMSIZE.get(dtype)
        if size is None:
            continue
        total += size * math.prod(int(d) for d in dims.split(",") if d)
    return total


def _stack_frames(text: str) -> dict[int, str]:
    """``stack_frame_id -> "file:line (function)"`` from the module's location tables."""
    tables: dict[str, dict[int, str]] = {}
    current = None
    for line in text.splitlines():
        head = line.strip()
        if head in ("FileNames", "FunctionNames", "FileLocations", "StackFrames"):
            current = head
            tables[current] = {}
            continue
        if not head or head.startswith(("%", "ENTRY", "HloModule")) or current is None:
            if head.startswith(("%", "ENTRY")):
                break
            continue
        m = re.match(r"^(\d+)\s+(.*)$", head)
        if m:
            tables[current][int(m.group(1))] = m.group(2)
    files = {k: v.strip('"') for k, v in tables.get("FileNames", {}).items()}
    funcs = {k: v.strip('"') for k, v in tables.get("FunctionNames", {}).items()}
    locs = {}
    for k, v in tables.get("FileLocations", {}).items():
        f = re.search(r"file_name_id=(\d+)", v)
        fn = re.search(r"function_name_id=(\d+)", v)
        ln = re.search(r"\bline=(\d+)", v)
        if f and ln:
            name = funcs.get(int(fn.group(1))) if fn else None
            locs[k] = f"{files.get(int(f.group(1)), '?')}:{ln.group(1)}" + (f" ({name})" if name else "")
    frames = {}
    for k, v in tables.get("StackFrames", {}).items():
        loc = re.search(r"file_location_id=(\d+)", v)
        if loc and int(loc.group(1)) in locs:
            frames[k] = locs[int(loc.group(1))]
    return frames


def _groups(attrs: str, kind: str) -> tuple[str, list[list[int]] | None, tuple[str, ...] | None]:
    """``(text, groups of logical device ids or None, axes named by a mesh form or None)``."""
    if kind == "collective-permute":
        m = re.search(r"source_target_pairs=(\{(?:\{\d+,\d+\},?)*\})", attrs)
        if not m:
            return "", None, None
        pairs = [[int(a), int(b)] for a, b in re.findall(r"\{(\d+),(\d+)\}", m.group(1))]
        return m.group(1), pairs, None
    m = re.search(r"replica_groups=mesh\[([^\]]*)\]\s*\{([^}]*)\}", attrs)
    if m:
        axes = re.findall(r"'([^']+)'=(\d+)", m.group(1))
        chosen = tuple(re.findall(r"'([^']+)'", m.group(2)))
        names = [a for a, _ in axes]
        sizes = [int(s) for _, s in axes]
        ids = np.arange(math.prod(sizes)).reshape(sizes) if sizes else np.zeros((1,), int)
        keep = [names.index(c) for c in chosen if c in names]
        rest = [i for i in range(len(names)) if i not in keep]
        grouped = np.transpose(ids, rest + keep).reshape(-1, math.prod(sizes[i] for i in keep) if keep else 1)
        return f"mesh[{m.group(1)}] {{{m.group(2)}}}", grouped.tolist(), chosen
    m = re.search(r"replica_groups=\[([\d,]+)\]<=\[([\d,]+)\](T\(([\d,]+)\))?", attrs)
    if m:
        shape = [int(s) for s in m.group(1).split(",")]
        reshape = [int(s) for s in m.group(2).split(",")]
        ids = np.arange(math.prod(reshape)).reshape(reshape)
        if m.group(4):
            ids = ids.transpose([int(s) for s in m.group(4).split(",")])
        return m.group(0).split("=", 1)[1], ids.reshape(shape).tolist(), None
    m = re.search(r"replica_groups=(\{(?:\{[\d,]*\},?)*\})", attrs)
    if m:
        groups = [[int(x) for x in g.split(",") if x] for g in re.findall(r"\{([\d,]*)\}", m.group(1)[1:-1])]
        return m.group(1), groups, None
    return "", None, None


def mesh_axes_of(
    groups: Sequence[Sequence[int]], axis_names: Sequence[str], axis_sizes: Sequence[int]
) -> tuple[str, ...] | None:
    """The mesh axes whose positions vary within each group (logical ids are row-major mesh
    positions), or ``None`` if no set of axes gives exactly these groups."""
    if not groups:
        return None
    want = {frozenset(g) for g in groups}
    ids = np.arange(math.prod(axis_sizes)).reshape(axis_sizes)
    for r in range(0, len(axis_names) + 1):
        for keep in itertools.combinations(range(len(axis_names)), r):
            rest = [i for i in range(len(axis_names)) if i not in keep]
            size = math.prod(axis_sizes[i] for i in keep)
            got = {frozenset(row) for row in np.transpose(ids, rest + list(keep)).reshape(-1, size).tolist()}
            if got == want:
                return tuple(axis_names[i] for i in keep)
    return None


def collectives(
    hlo_text: str, mesh_axes: tuple[Sequence[str], Sequence[int]] | None = None
) -> list[Collective]:
    """Every collective of ``hlo_text`` in program order.

    Args:
        hlo_text: ``Compiled.as_text()``.
        mesh_axes: ``(names, sizes)`` of the mesh, to name the axes each collective spans.
    """
    types: dict[str, str] = {}
    found: list[tuple[str, str, str, str, str]] = []
    done_types: dict[str, str] = {}
    for line in hlo_text.splitlines():
        m = _INSTR.match(line)
        if not m:
            continue
        name, typ, op, rest = m.groups()
        types[name] = typ
        base = op[:-6] if op.endswith("-start") else op
        if base in KINDS:
            found.append((base, name, typ, rest, op))
        elif op.endswith("-done") and op[:-5] in KINDS:
            operand = _OPERAND.search(rest)
            if operand:
                done_types[operand.group(1)] = typ
    frames = _stack_frames(hlo_text)
    out = []
    for kind, name, typ, rest, op in found:
        depth, i = 0, 0
        for i, ch in enumerate(rest):  # noqa: B007 - i is the end of the operand list after the loop
            depth += ch == "("
            if ch == ")":
                if depth == 0:
                    break
                depth -= 1
        operands, attrs = rest[:i], rest[i + 1 :]
        in_bytes = sum(type_bytes(types.get(o, "")) for o in _OPERAND.findall(operands))
        out_type = done_types.get(name, typ) if op.endswith("-start") else typ
        text, groups, axes = _groups(attrs, kind)
        if groups is not None and mesh_axes is not None:
            # the groups (logical ids = row-major mesh positions) name the user's axes; a
            # mesh[...] form's own names ('axis_1') are kept where they match none
            named = (
                _permute_axes(groups, *mesh_axes)
                if kind == "collective-permute"
                else mesh_axes_of(groups, *mesh_axes)
            )
            axes = named if named is not None else axes
        source = None
        sf = re.search(r"stack_frame_id=(\d+)", attrs)
        if sf:
            source = frames.get(int(sf.group(1)))
        sfile, sline = re.search(r'source_file="([^"]*)"', attrs), re.search(r"source_line=(\d+)", attrs)
        if source is None and sfile and sline:
            source = f"{sfile.group(1)}:{sline.group(1)}"
        op_name = re.search(r'op_name="([^"]*)"', attrs)
        size = len(groups[0]) if groups and kind != "collective-permute" else None
        shown_type = re.sub(
            r"/\*.*?\*/", "", re.sub(r"\{[^}]*\}", "", out_type)
        )  # no layouts, no /*index=5*/
        out.append(
            Collective(
                kind,
                name,
                shown_type,
                type_bytes(out_type),
                in_bytes,
                text,
                size,
                axes,
                source,
                op_name.group(1) if op_name else None,
            )
        )
    return out


_COMPUTATION = re.compile(r"^\s*(?:ENTRY\s+)?%?([\w.\-]+)\s*\(.*\)\s*->.*\{\s*$")
_CALLED = re.compile(r"\b(?:calls|body|condition|to_apply|true_computation|false_computation)=%([\w.\-]+)")
_BRANCHES = re.compile(r"\bbranch_computations=\{([^}]*)\}")


@dataclass(frozen=True)
class Instruction:
    """One HLO instruction: where it is, what it is, where it came from, what it calls."""

    computation: str
    name: str
    opcode: str
    op_name: str | None  # metadata op_name: "jit(f)/scope/dot_general"
    called: tuple[str, ...]  # computations it runs: fusion bodies, loop body/condition, branches


def instructions(hlo_text: str) -> list[Instruction]:
    """Every instruction of ``Compiled.as_text()`` with its computation, opcode, metadata
    ``op_name`` and the computations it calls."""
    out, computation = [], ""
    for line in hlo_text.splitlines():
        head = _COMPUTATION.match(line)
        if head and "=" not in line.split("(", 1)[0]:
            computation = head.group(1)
            continue
        m = _INSTR.match(line)
        if not m:
            continue
        rest = m.group(4)
        op_name = re.search(r'op_name="([^"]*)"', rest)
        called = _CALLED.findall(rest)
        for branches in _BRANCHES.findall(rest):
            called += _OPERAND.findall(branches)
        out.append(
            Instruction(
                computation, m.group(1), m.group(3), op_name.group(1) if op_name else None, tuple(called)
            )
        )
    return out


def op_counts(hlo_text: str) -> dict[str, int]:
    """Instructions by opcode (``fusion``, ``dot``, ``all-reduce-start``, ...) over the whole module
    of ``Compiled.as_text()``, fused computations included, parameters not counted."""
    counts: dict[str, int] = {}
    for ins in instructions(hlo_text):
        if ins.opcode != "parameter":
            counts[ins.opcode] = counts.get(ins.opcode, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def _permute_axes(
    pairs: Sequence[Sequence[int]], names: Sequence[str], sizes: Sequence[int]
) -> tuple[str, ...] | None:
    """The mesh axes along which a collective-permute moves data (source and target differ)."""
    if not pairs or math.prod(sizes) <= max(max(p) for p in pairs):
        return None
    pos = np.arange(math.prod(sizes)).reshape(sizes)
    coords = {int(pos[idx]): idx for idx in np.ndindex(*sizes)}
    moved = set()
    for a, b in pairs:
        for i, (x, y) in enumerate(zip(coords[a], coords[b])):
            if x != y:
                moved.add(i)
    return tuple(names[i] for i in sorted(moved))


_LAYOUT = re.compile(r"entry_computation_layout=\{\((.*?)\)->(.*?)\}(?:, [a-z_]+=|$)")
_ALIAS = re.compile(r"\{(\d*)\}:\s*\((\d+),")
_TYPE = re.compile(r"[a-z][a-z0-9]*\[[\d,]*\](?:\{[^}]*\})?")


def entry_types(hlo: str) -> tuple[list[str], list[str], dict[int, int]] | None:
    """``(parameter types, output types, {output index: parameter it aliases})`` of the entry
    computation, per device (``f32[2,64]{1,0}``), from the module's first line; ``None`` when
    that line does not say."""
    head = hlo.split("\n", 1)[0]
    m = _LAYOUT.search(head)
    if not m:
        return None
    params, outs = _TYPE.findall(m.group(1)), _TYPE.findall(m.group(2))
    aliased: dict[int, int] = {}
    start = head.find("input_output_alias={")
    if start >= 0:
        body = head[start : head.find("}, entry_computation_layout", start)]
        for out, param in _ALIAS.findall(body):
            aliased[int(out or 0)] = int(param)
    return params, outs, aliased


def donatable_bytes(hlo: str) -> int | None:
    """Bytes per device that donating the call's arguments could let its outputs reuse: each
    output not aliased yet, matched one to one with a parameter of the same type and layout
    that is not donated yet (XLA reuses a donated buffer only for an output of its exact type).
    ``None`` when the module's signature cannot be read."""
    types = entry_types(hlo)
    if types is None:
        return None
    params, outs, aliased = types
    free = [t for i, t in enumerate(params) if i not in set(aliased.values())]
    total = 0
    for i, t in enumerate(outs):
        if i in aliased or t not in free:
            continue
        free.remove(t)
        total += type_bytes(t)
    return total
