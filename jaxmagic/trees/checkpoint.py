"""Read the structure of an Orbax checkpoint from its metadata only: no array is loaded and
nothing is written.

Accepted paths: a ``CheckpointManager`` directory (numbered step folders; the latest step,
or ``step=``), one step folder (items as sub-folders), or one PyTree item folder (the one
holding ``_METADATA``). Anything else raises :class:`CheckpointError` with the reason.
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
from typing import Any

TMP_MARK = ".orbax-checkpoint-tmp"


class CheckpointError(ValueError):
    """The path is not a readable Orbax checkpoint."""


def _is_item(p: pathlib.Path) -> bool:
    return (p / "_METADATA").is_file()


def _is_json_item(p: pathlib.Path) -> bool:
    return (p / "metadata").is_file() and not _is_item(p)


def _steps(root: pathlib.Path) -> list[int]:
    return sorted(int(c.name) for c in root.iterdir() if c.is_dir() and c.name.isdigit())


def _read_item(item: pathlib.Path) -> Any:
    if _is_json_item(item):
        try:
            return json.loads((item / "metadata").read_text())
        except (OSError, ValueError) as e:
            raise CheckpointError(f"corrupted JSON item {item}: {e}") from None
    try:
        json.loads((item / "_METADATA").read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(
            f"corrupted checkpoint item {item}: _METADATA is not valid JSON ({e})"
        ) from None
    import orbax.checkpoint as ocp

    absl = logging.getLogger("absl")
    level = absl.level
    absl.setLevel(logging.ERROR)  # orbax logs a warning for every optional file it does not find
    try:
        meta = ocp.PyTreeCheckpointHandler().metadata(item)
    except Exception as e:
        raise CheckpointError(f"corrupted checkpoint item {item}: {type(e).__name__}: {e}") from None
    finally:
        absl.setLevel(level)
    return getattr(meta, "tree", meta)


def read_checkpoint(path: str | os.PathLike, step: int | None = None) -> tuple[Any, str, list[str]]:
    """``(tree of metadata leaves, description, notes)`` for the checkpoint at ``path``.

    Example:
        >>> tree, what, notes = read_checkpoint("/tmp/ckpts", step=100)
    """
    root = pathlib.Path(path).expanduser().absolute()  # Orbax needs absolute paths
    if not root.exists():
        raise CheckpointError(f"{root}: no such file or directory")
    if not root.is_dir():
        raise CheckpointError(f"{root}: not a directory; an Orbax checkpoint is a directory")
    notes: list[str] = []
    leftovers = [c.name for c in root.iterdir() if TMP_MARK in c.name]
    if leftovers:
        notes.append(
            f"unfinished save(s) left behind (crash or interrupted async save): {', '.join(leftovers[:5])}"
        )
    steps = _steps(root)
    if step is not None and not steps:
        raise CheckpointError(f"{root}: step={step} given but this folder has no numbered step folders")
    if steps and not _is_item(root):
        chosen = steps[-1] if step is None else step
        if chosen not in steps:
            raise CheckpointError(f"{root}: no step {chosen}; steps on disk: {', '.join(map(str, steps))}")
        notes.insert(
            0, f"steps on disk: {', '.join(map(str, steps[-12:]))}" + (" …" if len(steps) > 12 else "")
        )
        tree, what, more = read_checkpoint(root / str(chosen))
        return (
            tree,
            f"Orbax checkpoint {root} step {chosen}" + what.split(str(root / str(chosen)), 1)[-1],
            notes + more,
        )
    if _is_item(root):
        return _read_item(root), f"Orbax checkpoint item {root}", notes
    items = sorted(c for c in root.iterdir() if c.is_dir() and (_is_item(c) or _is_json_item(c)))
    if items:
        return {c.name: _read_item(c) for c in items}, f"Orbax checkpoint {root}", notes
    if (root / "_CHECKPOINT_METADATA").is_file() or (root / "manifest.ocdbt").is_file():
        raise CheckpointError(
            f"{root}: looks like an Orbax checkpoint but has no readable item "
            "(missing _METADATA: the checkpoint is incomplete or corrupted)"
        )
    raise CheckpointError(
        f"{root}: not an Orbax checkpoint (no _METADATA, no item folders, no numbered step folders)"
    )
