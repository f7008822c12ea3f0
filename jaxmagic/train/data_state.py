"""Data position saved with the model: iterators with ``get_state``/``set_state`` (Grain's).

A Grain iterator (``iter(grain.MapDataset)``, ``iter(grain.IterDataset)``, ``iter(DataLoader)``)
or any iterator exposing ``get_state()``/``set_state(state)`` is *stateful*: its position is
saved in the same Orbax checkpoint as the model, through Grain's own checkpoint handler
(``grain.checkpoint.CheckpointHandler``, one JSON file per process), and restored in one
``set_state`` call, so a resumed run reads no batch twice. The state saved is the one taken
right after the last batch of the last completed call was read, in the feeding thread, not
the live iterator's (that runs ahead, prefetching). Plain iterables are replayed on resume
(their first batches read again and discarded: the cost of reading them once more).

Without Grain installed, stateful iterators are replayed like plain ones.
"""

from __future__ import annotations

import base64
import json
import sys
from typing import Any

HANDLER_ITEM = "data"  # the Orbax item holding the iterator state (absent: replay)


def grain_module() -> Any | None:
    """``grain`` if installed (imported lazily: it is an optional extra), else ``None``."""
    try:
        import grain
    except ImportError:
        return None
    return grain


def _grain_if_loaded() -> Any | None:
    # a Grain object can only exist if grain was imported: no import cost for other data
    return grain_module() if "grain" in sys.modules else None


def map_dataset_length(data: Any) -> int | None:
    """Elements (batches) of one epoch of a ``grain.MapDataset``; ``None`` for anything else or
    an infinite one (``.repeat()``)."""
    grain = _grain_if_loaded()
    if grain is None or not isinstance(data, grain.MapDataset):
        return None
    n = len(data)
    return None if n >= sys.maxsize else int(n)


def is_map_dataset(data: Any) -> bool:
    grain = _grain_if_loaded()
    return grain is not None and isinstance(data, grain.MapDataset)


# Batches Grain's reading threads may hold ready for a MapDataset fit turns into an iterator.
# Grain's default buffer (500 elements) is sized for single examples; here an element is a batch
# and the run is endless (repeated), so the default read ~270 batches past the end of a one-epoch
# fit (10x the examples trained on, measured on digits). The trainer's own prefetch thread
# already stages the next calls: a small buffer keeps Grain's threads busy without reading far
# past the target.
READ_AHEAD_BATCHES = 32


def iterator_for(data: Any) -> Any:
    """The iterator ``fit`` reads. A finite ``MapDataset`` is repeated without end (Grain reseeds
    its shuffles each epoch) and the trainer stops at its target; anything else: ``iter(data)``
    (an ``IterDataset`` or ``DataLoader`` keeps the read options its user gave it)."""
    if map_dataset_length(data) is not None:
        grain = grain_module()
        options = grain.ReadOptions(prefetch_buffer_size=READ_AHEAD_BATCHES)
        return iter(data.repeat(None).to_iter_dataset(options))
    return iter(data)


def is_stateful(it: Any) -> bool:
    """Can the iterator's position be saved and restored (``get_state``/``set_state``)?"""
    return callable(getattr(it, "get_state", None)) and callable(getattr(it, "set_state", None))


def describe(it: Any) -> str:
    return f"{type(it).__module__}.{type(it).__qualname__}"


def encode(it: Any, state: Any) -> dict[str, Any]:
    """A JSON-able record of ``it.get_state()``'s result and which kind of iterator gave it."""
    if isinstance(state, (bytes, bytearray)):
        return {"iterator": describe(it), "format": "bytes", "state": base64.b64encode(state).decode()}
    try:
        json.dumps(state)
    except (TypeError, ValueError) as e:
        raise TypeError(
            f"{describe(it)}.get_state() returned a {type(state).__name__} that is neither bytes nor "
            f"JSON-serialisable ({e}); the data position cannot be checkpointed"
        ) from None
    return {"iterator": describe(it), "format": "json", "state": state}


def take_state(it: Any) -> dict[str, Any]:
    """``encode(it, it.get_state())``, with a clear error when ``get_state`` fails."""
    try:
        state = it.get_state()
    except Exception as e:
        raise RuntimeError(
            f"the data iterator's get_state() raised {type(e).__name__}: {e}; training stopped at the last "
            "completed call (its checkpoint, if any, is intact)"
        ) from e
    return encode(it, state)


def apply(it: Any, record: dict[str, Any]) -> None:
    """Put ``it`` at the position ``record`` (from :func:`encode`) describes, or raise ``ValueError``
    naming the mismatch (the iterator is then unchanged as far as we can tell)."""
    if record.get("iterator") != describe(it):
        raise ValueError(
            f"the checkpoint's data position was saved from a {record.get('iterator')}, but this fit "
            f"reads a {describe(it)}: a different pipeline. Resume with the same data pipeline, or use a "
            "new checkpoint_dir"
        )
    state = record["state"]
    if record.get("format") == "bytes":
        state = base64.b64decode(state)
    try:
        it.set_state(state)
    except Exception as e:
        raise ValueError(
            f"the checkpoint's data position does not fit this data pipeline ({describe(it)}.set_state "
            f"raised {type(e).__name__}: {e}); it was saved from another pipeline. Resume with the same "
            "pipeline, or use a new checkpoint_dir"
        ) from e


class StateBox:
    """What Grain's Orbax handler saves and restores: it calls ``get_state()`` (bytes) and
    ``set_state(bytes)`` + ``start_prefetch()``; the box holds an :func:`encode` record."""

    def __init__(self, record: dict[str, Any] | None = None):
        self.record = record

    def get_state(self) -> bytes:
        return json.dumps(self.record).encode()

    def set_state(self, state: bytes) -> None:
        self.record = json.loads(state.decode() if isinstance(state, (bytes, bytearray)) else state)

    def start_prefetch(self) -> None:  # Grain's handler calls it after set_state
        pass
