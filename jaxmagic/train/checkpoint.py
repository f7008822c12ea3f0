"""Orbax checkpoints for the trainer: validated directory, async saves, retention, resume.

A checkpoint holds the whole train state (parameters, other model state such as batch
statistics and RNG keys, optimizer state, step) plus small JSON metadata (data position,
shuffle seed, scores) whose size does not depend on the step count; the metric history is
logged beside the checkpoints (:mod:`jaxmagic.train.history_log`). Saves are asynchronous
and atomic (Orbax writes a temporary directory and renames it); leftovers of a crashed save
are removed when the manager opens. Retention keeps the last ``keep`` checkpoints and, with
``keep_best``, the best one by an evaluation metric.

A directory whose step folders were not written by the trainer (a user's own Orbax
``CheckpointManager``, numbered folders of something else) is refused before anything in it
is read, cleaned or written.
"""

from __future__ import annotations

import os
import pathlib
import uuid
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from jaxmagic._format import shape_str
from jaxmagic.train import data_state

ITEMS = ("state", "meta")  # the Orbax items of every trainer checkpoint (plus "data": an iterator position)


class CheckpointMismatchError(ValueError):
    """The checkpoint directory holds a checkpoint of a differently shaped model, or one the
    trainer did not write."""


def refuse_foreign(directory: pathlib.Path) -> None:
    """Raise :class:`CheckpointMismatchError` if ``directory`` has numbered folders that are not
    trainer checkpoints (reads the listing only; changes nothing)."""
    foreign = []
    for child in sorted(directory.iterdir(), key=lambda c: c.name):
        if child.is_dir() and child.name.isdigit():
            items = {c.name for c in child.iterdir() if c.is_dir()}
            if not set(ITEMS) <= items:
                foreign.append(f"{child.name}/ ({', '.join(sorted(items)) or 'no sub-folders'})")
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise CheckpointMismatchError(
            f"checkpoint_dir {str(directory)!r} holds numbered folders the Trainer did not write: {shown}. "
            f"A Trainer checkpoint has the Orbax items {' and '.join(repr(i) for i in ITEMS)}; these look like "
            "your own Orbax CheckpointManager or other data. Nothing was read, cleaned or written. "
            "Give the Trainer its own directory (restore your checkpoint with Orbax into the model "
            "before creating the Trainer, if that is the aim)."
        )


def validate_directory(path: str | os.PathLike) -> pathlib.Path:
    """Create ``path`` if needed and prove it is a writable directory, or raise a clear error.

    Returns the absolute path. Raises ``NotADirectoryError`` when it (or a parent) is a file,
    :class:`CheckpointMismatchError` when it holds checkpoints the trainer did not write, and
    ``PermissionError`` when it cannot be written.
    """
    p = pathlib.Path(path).expanduser().absolute()
    for parent in [p, *p.parents]:
        if parent.exists() and not parent.is_dir():
            raise NotADirectoryError(f"checkpoint_dir {str(p)!r}: {str(parent)!r} is a file, not a directory")
    if p.is_dir():
        refuse_foreign(p)
    try:
        if jax.process_index() == 0:
            p.mkdir(parents=True, exist_ok=True)
            probe = p / f".jaxmagic-write-test-{uuid.uuid4().hex}"
            probe.write_bytes(b"")
            probe.unlink()
    except OSError as e:
        raise PermissionError(f"checkpoint_dir {str(p)!r} is not writable: {e.strerror or e}") from None
    return p


def _names_shapes(tree: Any) -> dict[str, tuple[tuple[int, ...], str]]:
    """Orbax's name (``params.l1.kernel.value``) -> (shape, dtype) of every array leaf."""
    names = jax.tree.leaves(ocp.tree.get_param_names(tree, include_empty_nodes=False))
    out = {}
    for name, leaf in zip(names, jax.tree.leaves(tree)):
        if hasattr(leaf, "shape"):
            dtype = getattr(leaf, "dtype", "")
            if jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
                # keys are stored as their uint32 data
                data = jax.eval_shape(jax.random.key_data, leaf)
                out[name] = (tuple(data.shape), str(data.dtype))
            else:
                out[name] = (tuple(leaf.shape), str(np.dtype(dtype)))
    return out


def _metadata_shapes(meta: Any) -> dict[str, tuple[tuple[int, ...], str]]:
    out = {}

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for v in node.values():
                walk(v)
        elif isinstance(node, (list, tuple)):
            for v in node:
                walk(v)
        elif node is not None and hasattr(node, "shape") and hasattr(node, "name"):
            out[node.name] = (tuple(node.shape), str(np.dtype(node.dtype)) if node.dtype is not None else "")

    walk(getattr(meta, "tree", meta))
    return out


class Checkpointer:
    """An Orbax ``CheckpointManager`` with the trainer's policies.

    Args:
      directory: where checkpoints live (created; must be writable).
      keep: how many of the latest checkpoints to keep.
      keep_best: an evaluation metric name (e.g. ``"eval_loss"``); its best checkpoint is kept too.
      best_mode: ``"min"`` or ``"max"`` for ``keep_best``.

    Example:
      >>> ckpt = Checkpointer("/tmp/run", keep=2, keep_best="eval_loss")
      >>> ckpt.latest_step() is None
      True
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        *,
        keep: int = 3,
        keep_best: str | None = None,
        best_mode: str = "min",
    ):
        if best_mode not in ("min", "max"):
            raise ValueError(f"best_mode must be 'min' or 'max', got {best_mode!r}")
        if not isinstance(keep, int) or keep < 1:
            raise ValueError(f"keep must be a positive int, got {keep!r}")
        self.directory = validate_directory(directory)
        self.keep, self.keep_best, self.best_mode = keep, keep_best, best_mode
        handlers: dict[str, Any] = {
            "state": ocp.StandardCheckpointHandler(),
            "meta": ocp.JsonCheckpointHandler(),
        }
        grain = data_state.grain_module()
        self._grain_checkpoint = None
        if grain is not None:  # the data position, one JSON file per process (Grain's own handler)
            import grain.checkpoint as grain_checkpoint

            self._grain_checkpoint = grain_checkpoint
            handlers[data_state.HANDLER_ITEM] = grain_checkpoint.CheckpointHandler()
        self.manager = ocp.CheckpointManager(
            self.directory,
            item_handlers=handlers,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=None, create=True, cleanup_tmp_directories=True, enable_async_checkpointing=True
            ),
        )
        self._scores: dict[int, float] = {}

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def has_step(self, step: int) -> bool:
        return step in self.manager.all_steps()

    def step_path(self, step: int) -> str:
        return str(self.directory / str(step))

    def check_compatible(self, step: int, state: Any) -> None:
        """Raise :class:`CheckpointMismatchError` listing paths whose shape/dtype/presence differ."""
        saved = _metadata_shapes(self.manager.item_metadata(step)["state"])
        current = _names_shapes(state)
        problems = []
        for name in sorted(set(saved) | set(current)):
            a, b = saved.get(name), current.get(name)
            if a == b:
                continue
            if a is None:
                problems.append(f"  {name}: missing in checkpoint (model has {shape_str(b[0], b[1])})")
            elif b is None:
                problems.append(f"  {name}: in checkpoint ({shape_str(a[0], a[1])}), not in this model")
            else:
                problems.append(
                    f"  {name}: checkpoint {shape_str(a[0], a[1])}, model {shape_str(b[0], b[1])}"
                )
        if problems:
            shown = problems[:20] + ([f"  ... and {len(problems) - 20} more"] if len(problems) > 20 else [])
            raise CheckpointMismatchError(
                f"checkpoint_dir {str(self.directory)!r} holds a checkpoint (step {step}) of a different "
                f"model or optimizer; {len(problems)} mismatching path(s):\n"
                + "\n".join(shown)
                + "\nNothing was restored or overwritten. Use a new checkpoint_dir for this model."
            )

    @property
    def saves_data_state(self) -> bool:
        """Can iterator positions be saved (Grain, whose handler writes them, is installed)?"""
        return self._grain_checkpoint is not None

    def has_data_state(self, step: int) -> bool:
        """Does ``step`` hold *this* process's iterator position? (Not when it was saved by a
        different number of processes: Grain names the file by index and count.)"""
        name = f"process_{jax.process_index()}-of-{jax.process_count()}.json"
        return (self.directory / str(step) / data_state.HANDLER_ITEM / name).is_file()

    def restore(self, step: int, state: Any) -> tuple[Any, dict[str, Any]]:
        """Restore ``step`` into the structure, shapes and shardings of ``state``.

        The metadata's ``"data_state"`` holds this process's saved iterator position, if any."""
        self.manager.wait_until_finished()
        self.check_compatible(step, state)
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
        items: dict[str, Any] = {"state": ocp.args.StandardRestore(abstract), "meta": ocp.args.JsonRestore()}
        box = None
        if self.saves_data_state and self.has_data_state(step):
            box = data_state.StateBox()
            items[data_state.HANDLER_ITEM] = self._grain_checkpoint.CheckpointRestore(box)
        out = self.manager.restore(step, args=ocp.args.Composite(**items))
        meta = dict(out["meta"] or {})
        meta["data_state"] = box.record if box is not None else None
        for s, v in (meta.get("scores") or {}).items():
            self._scores[int(s)] = float(v)
        return out["state"], meta

    def save(
        self,
        step: int,
        state: Any,
        meta: dict[str, Any],
        *,
        score: float | None = None,
        data_position: dict[str, Any] | None = None,
    ) -> bool:
        """Start an async save of ``step``; returns False if that step is already saved.

        ``data_position``: this process's iterator position (:mod:`jaxmagic.train.data_state`),
        saved as the ``data`` item when Grain is installed."""
        if step in self.manager.all_steps():
            return False
        if score is not None and np.isfinite(score):
            self._scores[step] = float(score)
        meta = dict(meta, scores={str(k): v for k, v in self._scores.items()})
        items: dict[str, Any] = {"state": ocp.args.StandardSave(state), "meta": ocp.args.JsonSave(meta)}
        if data_position is not None and self.saves_data_state:
            items[data_state.HANDLER_ITEM] = self._grain_checkpoint.CheckpointSave(
                data_state.StateBox(data_position)
            )
        self.manager.save(step, args=ocp.args.Composite(**items), force=True)
        self._retain(step)
        return True

    def best_step(self) -> int | None:
        if not self._scores:
            return None
        pick = min if self.best_mode == "min" else max
        return pick(
            self._scores,
            key=lambda s: (self._scores[s], -s) if self.best_mode == "min" else (self._scores[s], s),
        )

    def _retain(self, newest: int) -> None:
        steps = sorted(set(self.manager.all_steps()) | {newest})
        keep = set(steps[-self.keep :])
        best = self.best_step() if self.keep_best else None
        if best is not None:
            keep.add(best)
        for s in steps:
            if s not in keep and s != newest:
                self.manager.delete(s)
                self._scores.pop(s, None)

    def wait(self) -> None:
        """Block until in-flight saves are durable (and raise their errors, if any)."""
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.close()
