"""Few-shot contexts (paper section 5.1): which examples the hypermodel reads, and how.

Format. Each few-shot example is one segment, "Input: {x} Output: {y}";
segments are joined with a space. A context holds up to 16 examples.

Truncation. A context must fit the hypermodel's input length (minus the EOS).
We keep the longest run of leading segments that fits and drop the rest:
trailing examples are dropped whole, never cut in half, so the hypermodel never
sees a half example whose output is missing. Only when the first segment alone
is too long is it cut (a hypermodel with an empty input would learn nothing);
for the concatenated baseline the query always wins and no context segment is
cut (see forms.py).

Drawing. Two ways, both deterministic given the seed:
  `draw_within_task` (training): each record's context is up to k other records
    of the same task (its `task_name`), never the record itself nor a copy of
    it, re-drawn every epoch; `leading` segments (a task's definition) come
    first, and records that come with a context keep it. The training stream
    (indexed.py) takes the k records that follow the record in its task's order
    for the epoch (a pseudo-random order, new every epoch). This TensorFlow
    version, which SeqIO's own pipeline runs, groups records k+1 at a time in
    stream order after the source's seeded shuffle and gives each the other k
    of its group; a record left alone in the last group of a finite stream has
    no context and is dropped.
  fixed contexts (held-out evaluation: MetaICL seeds, P3 held-out, the embedded
    held-out tasks): the reader attaches the same k examples to every query of a
    task, chosen with `choose_fixed`, so the evaluator generates phi once per task.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

import numpy as np
import tensorflow as tf

from hypert5.text import prompts
from hypert5_tasks import records as records_lib

NUM_SHOTS = 16

T = TypeVar("T")


def format_pairs_tf(xs: tf.Tensor, ys: tf.Tensor) -> tf.Tensor:
  """`format_pair` over string tensors of equal shape."""
  return tf.strings.join([prompts.PAIR_INPUT, xs, prompts.PAIR_OUTPUT, ys])


def format_query(x: str | tf.Tensor):
  """The query as the concatenated baseline shows it, after its context: "Input: x Output:"."""
  if isinstance(x, str):
    return prompts.format_query(x)
  return tf.strings.join([prompts.PAIR_INPUT, x, prompts.PAIR_OUTPUT.rstrip()])


def choose_fixed(pool: Sequence[T], k: int, seed: int, what: str) -> list[T]:
  """k items of `pool` drawn without replacement by `seed`, in pool order.

  Raises ValueError naming `what` (a file, a task) when the pool has fewer than k.
  """
  if len(pool) < k:
    raise ValueError(f"{what}: needs {k} few-shot examples but has only {len(pool)}")
  chosen = np.random.default_rng(seed).choice(len(pool), size=k, replace=False)
  return [pool[i] for i in sorted(chosen)]


@tf.autograph.experimental.do_not_convert
def _task_key(record) -> tf.Tensor:
  # Fingerprint hash: collisions among a few thousand task names are ~1e-12 likely.
  return tf.strings.to_hash_bucket_fast(record["task_name"], 2**62)


@tf.autograph.experimental.do_not_convert
def _leave_one_out(group):
  """A group of n records of one task, batched -> the same, each with the others as context.

  "The others" are compared by content, not position: a copy of the record
  itself (a duplicate in the data, or the same example from the next epoch,
  since groups run across epoch boundaries) is never in its context either.
  """
  n = tf.shape(group["input"])[0]
  pairs = format_pairs_tf(group["input"], group["target"])  # [n]
  others = tf.not_equal(pairs[:, None], pairs[None, :])  # [n, n]; False on the diagonal
  context = tf.ragged.boolean_mask(tf.tile(pairs[None], [n, 1]), others)  # [n, <= n-1]
  return {**group, records_lib.CONTEXT: context}


def draw_within_task(dataset: tf.data.Dataset, num_shots: int = NUM_SHOTS,
                     leading: Sequence[str] = ()) -> tf.data.Dataset:
  """Attaches to each record a context of up to `num_shots` other records of its task,
  after the `leading` segments (e.g. the task's definition), when there are any.

  Records that come with a context (a fixed evaluation set the reader attached)
  keep it.
  """
  if records_lib.CONTEXT in dataset.element_spec:
    return dataset
  group_size = num_shots + 1
  groups = dataset.group_by_window(
      key_func=_task_key,
      reduce_func=tf.autograph.experimental.do_not_convert(
          lambda _, window: window.ragged_batch(group_size)),
      window_size=group_size)
  with_context = groups.map(_leave_one_out).unbatch().map(records_lib.densify)
  with_context = with_context.filter(tf.autograph.experimental.do_not_convert(
      lambda r: tf.size(r[records_lib.CONTEXT]) > 0))
  if leading:
    first = tf.constant(list(leading), tf.string)
    with_context = with_context.map(tf.autograph.experimental.do_not_convert(
        lambda r: {**r, records_lib.CONTEXT: tf.concat([first, r[records_lib.CONTEXT]], 0)}))
  return with_context


def count_fitting(lengths: tf.Tensor, budget: int | None, keep_first: bool) -> tf.Tensor:
  """How many leading segments of these token lengths fit in `budget` tokens.

  lengths: [S] int. None budget keeps all. With keep_first, at least one
  segment is kept (it is then cut by the caller).
  """
  num_segments = tf.size(lengths)
  if budget is None:
    return num_segments
  fits = tf.cumsum(lengths) <= budget  # prefix-closed since lengths >= 0
  kept = tf.reduce_sum(tf.cast(fits, tf.int32))
  if keep_first:
    kept = tf.maximum(kept, tf.minimum(num_segments, 1))
  return kept


def fit_segments(segment_ids: tf.RaggedTensor, budget: int | None, keep_first: bool):
  """Concatenates the leading segments that fit in `budget` tokens.

  segment_ids: [S, None] int32 token ids of each segment.
  Returns (ids [<= budget] int32, number of segments kept).
  """
  kept = count_fitting(tf.cast(segment_ids.row_lengths(), tf.int32), budget, keep_first)
  ids = segment_ids[:kept].flat_values
  if budget is not None:
    ids = ids[:budget]  # only cuts when the first segment alone is too long
  return ids, kept
