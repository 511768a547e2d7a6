"""Index arithmetic of the training stream: which example of which task is row g.

Every row of a training stream is a pure function of integers (the seed, the
row, the tasks' rates and sizes), so any row is computed directly, without the
rows before it: a run resumes at step 100,000 as fast as at step 0, and a
global batch is the same whatever the number of hosts that split it.

  Mixing     row g -> (task t, task-local position p). The stream is cut into
             blocks of ROWS_PER_BLOCK rows; task t owns exactly
             C_t(k+1) - C_t(k) rows of block k, where C_t(k) = floor(k R w_t + u_t)
             (w_t its share of the rates, u_t a fixed offset in [0, 1)), so after k
             blocks every task has had its share of rows to within one. Inside a
             block the rows are in a pseudo-random order, and the j-th row of task
             t in block k (in row order) is its position C_t(k) + j: a task's
             positions come in order.
  Epochs     position p of a task of n examples -> example permutation(n, key of
             (seed, task, p // n))(p % n): every example once per epoch, in a new
             order every epoch.

Permutations: a Feistel network keyed by the stream's hash for large n (any
index in O(1), no table), and for n <= 4,096 a table sorting the indices by
their hashes (one vectorized sort, then lookups).

Randomness comes from our own 64-bit hash (`mix64`, splitmix64's finalizer) and
a Feistel network over it (`Permutation`), not from numpy's generators, whose
streams may change between numpy versions: a resumed run on an upgraded host
continues the same stream.
"""

from __future__ import annotations

import functools
import hashlib
import math

import numpy as np

# Rows per block: below 2**16 by enough that a block of up to 4,096 tasks (its size
# varies by less than the task count) keeps its permutation within 2**16.
ROWS_PER_BLOCK = (1 << 16) - 4096
_ROUNDS = 4

_MASK = (1 << 64) - 1
_GOLDEN, _MIX1, _MIX2 = 0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB
_SHIFTS = tuple(np.uint64(s) for s in (30, 27, 31))
_CONSTANTS = tuple(np.uint64(c) for c in (_GOLDEN, _MIX1, _MIX2))
# Permutations of at most this many elements are tabulated once per key and kept.
_TABLE_LIMIT = 1 << 12


def mix64(x) -> np.ndarray:
  """splitmix64's finalizer over uint64 arrays: a bijection that scrambles every bit
  (array arithmetic wraps around; numpy warns only for scalars, so this takes arrays)."""
  z = np.atleast_1d(np.asarray(x, dtype=np.uint64)) + _CONSTANTS[0]
  z = (z ^ (z >> _SHIFTS[0])) * _CONSTANTS[1]
  z = (z ^ (z >> _SHIFTS[1])) * _CONSTANTS[2]
  return z ^ (z >> _SHIFTS[2])


def mix64_int(x: int) -> int:
  """`mix64` of one Python int (no numpy call: keys are computed per read)."""
  z = (x + _GOLDEN) & _MASK
  z = ((z ^ (z >> 30)) * _MIX1) & _MASK
  z = ((z ^ (z >> 27)) * _MIX2) & _MASK
  return z ^ (z >> 31)


@functools.lru_cache(maxsize=1 << 16)
def name_key(name: str) -> int:
  """A stable 64-bit key of a name (a task, a stream's purpose)."""
  return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "little")


def key(*parts: int | str) -> int:
  """One 64-bit key from integers and names, order-sensitive."""
  h = 0
  for part in parts:
    h = mix64_int(h ^ (name_key(part) if isinstance(part, str) else int(part) & _MASK))
  return h


def uniform(keys) -> np.ndarray:
  """Floats in [0, 1) from uint64 keys (53 random bits each)."""
  return (mix64(keys) >> np.uint64(11)).astype(np.float64) / float(1 << 53)


class Permutation:
  """A pseudo-random bijection of [0, n) fixed by a 64-bit key, and its inverse.

  A 4-round Feistel network over the smallest 2**bits >= n (unbalanced when bits
  is odd), cycle-walked into [0, n) (under 2 steps on average): any index costs
  O(1), with no table. `Permutation.table` makes small ones as a table instead.
  """

  __slots__ = ("n", "_high", "_low", "_keys", "_table", "_inverse_table")

  def __init__(self, n: int, key_: int):
    self.n = int(n)
    bits = max(2, math.ceil(math.log2(max(self.n, 2))))
    self._high, self._low = bits // 2, bits - bits // 2  # widths of the two halves
    self._keys = [np.uint64(key(key_, r)) for r in range(_ROUNDS)]
    self._table = self._inverse_table = None

  @staticmethod
  def _mask(width: int) -> np.uint64:
    return np.uint64((1 << width) - 1)

  def _encrypt(self, x):
    left_bits, right_bits = self._high, self._low
    left, right = x >> np.uint64(right_bits), x & self._mask(right_bits)
    for k in self._keys:
      left, right = right, left ^ (mix64(right ^ k) & self._mask(left_bits))
      left_bits, right_bits = right_bits, left_bits
    return (left << np.uint64(right_bits)) | right

  def _decrypt(self, y):
    left_bits, right_bits = self._high, self._low  # an even number of rounds restores them
    left, right = y >> np.uint64(right_bits), y & self._mask(right_bits)
    for k in reversed(self._keys):
      left, right = right ^ (mix64(left ^ k) & self._mask(right_bits)), left
      left_bits, right_bits = right_bits, left_bits
    return (left << np.uint64(right_bits)) | right

  def _walk(self, step, values) -> np.ndarray:
    values = np.asarray(values, dtype=np.int64)
    if self.n <= 1:
      return np.zeros_like(values)
    if values.size and (values.min() < 0 or values.max() >= self.n):
      raise IndexError(f"index outside [0, {self.n})")
    out = step(values.astype(np.uint64).reshape(-1))
    outside = out >= self.n
    while outside.any():
      out[outside] = step(out[outside])
      outside = out >= self.n
    return out.astype(np.int64).reshape(values.shape)

  @classmethod
  def table(cls, n: int, key_: int) -> Permutation:
    """Another bijection of [0, n) for the same key, as a table (for small n): the
    indices sorted by their hashes, in one vectorized sort."""
    made = cls(n, key_)
    made._table = np.argsort(mix64(np.arange(made.n, dtype=np.uint64) ^ np.uint64(key_)),
                             kind="stable")
    made._inverse_table = np.empty_like(made._table)
    made._inverse_table[made._table] = np.arange(made.n)
    return made

  def __call__(self, indices) -> np.ndarray:
    """The images of `indices` (ints in [0, n)), same shape."""
    if self._table is not None:
      return self._table[np.asarray(indices, dtype=np.int64)]
    return self._walk(self._encrypt, indices)

  def at(self, index: int) -> int:
    """The image of one index."""
    if self._table is not None:
      return int(self._table[index])
    return int(self._walk(self._encrypt, [index])[0])

  def inverse(self, images) -> np.ndarray:
    """The indices whose images are `images`."""
    if self._inverse_table is not None:
      return self._inverse_table[np.asarray(images, dtype=np.int64)]
    return self._walk(self._decrypt, images)


@functools.lru_cache(maxsize=4096)
def permutation(n: int, key_: int) -> Permutation:
  """The permutation of [0, n) the stream uses for a key, kept for reuse: a table for
  small n (a task's epoch, the context order of its records), else the Feistel one."""
  return Permutation.table(n, key_) if n <= _TABLE_LIMIT else Permutation(n, key_)


def epoch_examples(positions, size: int, seed: int, task: str) -> np.ndarray:
  """Task-local positions -> example indices: every example once per epoch of `size`
  positions, in a fresh order every epoch."""
  positions = np.asarray(positions, dtype=np.int64)
  epochs, offsets = np.divmod(positions, size)
  out = np.empty_like(positions)
  for epoch in np.unique(epochs):
    mine = epochs == epoch
    out[mine] = permutation(size, key(seed, "epoch", task, int(epoch)))(offsets[mine])
  return out


class Mixing:
  """Rows of a stream over tasks with the given rates -> (task, task-local position).

  rates: [T] non-negative, not all zero; a task of rate 0 never appears.
  """

  def __init__(self, rates, seed: int, rows_per_block: int = ROWS_PER_BLOCK):
    rates = np.asarray(rates, dtype=np.float64)
    if rates.ndim != 1 or not len(rates) or (rates < 0).any() or not rates.sum() > 0:
      raise ValueError(f"mixing rates must be non-negative and not all zero, got {rates}")
    self.seed = int(seed)
    self.rows_per_block = int(rows_per_block)
    self._weights = rates / rates.sum()
    offsets = uniform([key(seed, "offset", t) for t in range(len(rates))])
    self._offsets = np.where(rates > 0, offsets, 0.0)  # rate 0: C_t(k) = 0 forever
    self._counts_cache: dict[int, np.ndarray] = {}
    self._blocks: dict[int, tuple[np.ndarray, np.ndarray]] = {}

  @property
  def num_tasks(self) -> int:
    return len(self._weights)

  def counts(self, block: int) -> np.ndarray:
    """[T] rows each task owns in the blocks before `block` (C_t(block))."""
    cached = self._counts_cache.get(block)
    if cached is None:
      cached = np.floor(block * self.rows_per_block * self._weights
                        + self._offsets).astype(np.int64)
      if len(self._counts_cache) > 8:
        self._counts_cache.clear()
      self._counts_cache[block] = cached
    return cached

  def block_start(self, block: int) -> int:
    """The first row of `block`."""
    return int(self.counts(block).sum())

  def block(self, block: int) -> tuple[np.ndarray, np.ndarray]:
    """(task [n], task-local position [n]) of every row of `block`: each task's rows in
    the block, in row order, take its next positions in order."""
    cached = self._blocks.get(block)
    if cached is None:
      before, after = self.counts(block), self.counts(block + 1)
      owned = np.concatenate([[0], np.cumsum(after - before)])  # [T + 1]
      size = int(owned[-1])
      shuffled = Permutation(size, key(self.seed, "block", block))(np.arange(size))
      tasks = np.searchsorted(owned, shuffled, side="right") - 1  # [n]
      by_task = np.argsort(tasks, kind="stable")  # rows of task 0 in row order, then 1, ...
      positions = np.empty(size, np.int64)
      positions[by_task] = np.arange(size) - owned[tasks[by_task]] + before[tasks[by_task]]
      if len(self._blocks) >= 4:
        self._blocks.pop(next(iter(self._blocks)))
      cached = self._blocks[block] = (tasks, positions)
    return cached

  def locate(self, rows) -> tuple[np.ndarray, np.ndarray]:
    """rows [N] int -> (task [N], task-local position [N])."""
    rows = np.asarray(rows, dtype=np.int64)
    tasks = np.empty_like(rows)
    positions = np.empty_like(rows)
    if not rows.size:
      return tasks, positions
    slack = self.num_tasks // self.rows_per_block + 2  # |block_start(k) - k R| < T
    first = max(int(rows.min()) // self.rows_per_block - slack, 0)
    last = int(rows.max()) // self.rows_per_block + slack
    starts = np.array([self.block_start(k) for k in range(first, last + 1)])
    blocks = np.searchsorted(starts, rows, side="right") - 1 + first
    for block in np.unique(blocks):
      mine = blocks == block
      block_tasks, block_positions = self.block(int(block))
      offsets = rows[mine] - self.block_start(int(block))
      tasks[mine], positions[mine] = block_tasks[offsets], block_positions[offsets]
    return tasks, positions
