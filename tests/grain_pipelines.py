"""Grain pipelines for the trainer's data-position tests (a shuffle and a random map, so a batch
depends on its position and on the pipeline's seeds), with a source that counts its reads."""

from __future__ import annotations

import grain
import numpy as np

from tests.helpers import dataset

BATCH = 16


class CountingSource:
    """A random-access source of ``(x, y)`` examples that counts how often it was read."""

    def __init__(self, n: int = 200):
        self.X, self.y = dataset(n)
        self.reads = 0

    def __len__(self) -> int:
        return len(self.X)

    def __repr__(self) -> str:  # Grain's DataLoader checks a restored state against repr(source)
        return f"CountingSource({len(self.X)})"

    def __getitem__(self, i: int):
        self.reads += 1
        return self.X[i], self.y[i]


def _noise(example, rng: np.random.Generator):
    x, y = example
    return (x + 0.1 * rng.normal(size=x.shape)).astype(np.float32), y


def map_dataset(source: CountingSource, *, seed: int = 5) -> grain.MapDataset:
    """One epoch of shuffled, noised batches of ``BATCH`` (12 batches of 200 examples)."""
    return (
        grain.MapDataset.source(source)
        .shuffle(seed=seed)
        .random_map(_noise, seed=7)
        .batch(BATCH, drop_remainder=True)
    )


def iter_dataset(source: CountingSource) -> grain.IterDataset:
    """The same batches, repeated without end, read synchronously (no read-ahead threads, so the
    source's read count is exactly what the trainer asked for)."""
    return map_dataset(source).repeat(None).to_iter_dataset(grain.ReadOptions(num_threads=0))


def data_loader(
    source: CountingSource, *, seed: int = 5, shard_options=None, batch: int = BATCH
) -> grain.DataLoader:
    """A ``grain.DataLoader`` over the source: shuffled index sampler, random map, batches
    (``shard_options``: e.g. ``ShardByJaxProcess`` for one shard per process)."""

    class Noise(grain.transforms.RandomMap):
        def random_map(self, element, rng):
            return _noise(element, rng)

    sampler = grain.samplers.IndexSampler(
        num_records=len(source),
        shard_options=shard_options or grain.sharding.NoSharding(),
        shuffle=True,
        num_epochs=None,
        seed=seed,
    )
    return grain.DataLoader(
        data_source=source,
        sampler=sampler,
        operations=[Noise(), grain.transforms.Batch(batch, drop_remainder=True)],
        worker_count=0,
        read_options=grain.ReadOptions(num_threads=0),  # no read-ahead: reads are what was asked for
    )
