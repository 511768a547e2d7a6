"""SeqIO data sources over local benchmark copies: shard-aware, and lazy.

Why not `seqio.FunctionDataSource`: it cannot shard at the source, so every
host would read the whole benchmark and keep 1/N of it. `ReaderSource` hands
the shard to its reader, which reads only its share (a row range of a parquet
file, a slice of a jsonl file, ...). It also never reads anything before
`get_dataset` is called, so registering thousands of tasks costs nothing.

A reader has the signature
  read(split: str, shuffle: bool, seed: int | None, shard: Shard) -> tf.data.Dataset
and returns reader records (see `records.py`).

For the example cache (example_cache.py) a source may also say
  files(split) -> paths   the data files the reader reads: the cache is rebuilt
                          when their sizes or modification times change
  pieces(split) -> int    how many shards to read and cache one at a time (C4:
                          its files), for sources larger than memory
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence

import seqio
import tensorflow as tf


@dataclasses.dataclass(frozen=True)
class Shard:
  """This process's share of a source: `index` of `count` (from jax process index/count)."""
  index: int = 0
  count: int = 1

  def __post_init__(self):
    if self.count < 1 or not 0 <= self.index < self.count:
      raise ValueError(f"invalid shard {self.index} of {self.count}")

  def slice(self, items: Sequence) -> list:
    """Contiguous slice of `items` owned by this shard (sizes differ by at most one)."""
    n = len(items)
    return list(items[self.index * n // self.count:(self.index + 1) * n // self.count])

  def row_range(self, num_rows: int) -> tuple[int, int]:
    return self.index * num_rows // self.count, (self.index + 1) * num_rows // self.count


Reader = Callable[..., tf.data.Dataset]


class ReaderSource(seqio.DataSource):
  """A DataSource whose reader shards and shuffles on its own."""

  def __init__(self, reader: Reader, splits: Sequence[str], description: str, *,
               files: Callable[[str], Sequence[str]] | None = None,
               pieces: Callable[[str], int] | None = None):
    super().__init__(splits=splits, caching_permitted=False)
    self._reader = reader
    self._description = description
    self.files = files
    self.pieces = pieces

  @property
  def reader(self) -> Reader:
    return self._reader

  @property
  def supports_arbitrary_sharding(self) -> bool:
    return True

  def list_shards(self, split: str) -> Sequence[str]:
    return [split]

  def __repr__(self) -> str:
    return f"ReaderSource({self._description}, splits={self.splits})"

  def get_dataset(self, split: str = "train", shuffle: bool = True, seed: int | None = None,
                  shard_info: seqio.ShardInfo | None = None, *, sequence_length=None,
                  use_cached=False, num_epochs=1) -> tf.data.Dataset:
    del sequence_length, use_cached, num_epochs  # not the source's business
    if split not in self.splits:
      raise ValueError(f"{self._description} has no split {split!r}; it has {self.splits}")
    shard = Shard(shard_info.index, shard_info.num_shards) if shard_info else Shard()
    return self._reader(split=split, shuffle=shuffle, seed=seed, shard=shard)
