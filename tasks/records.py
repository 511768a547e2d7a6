"""Reader records: what every benchmark reader yields, before formatting.

Readers (P3, MetaICL, S-NI, the embedded benchmark) only parse files; the
few-shot machinery (`fewshot.py`) and the forms (`forms.py`) turn records into
task features the same way for all of them. A record is a dict of tensors:

  task_name       string []      the task (and few-shot set) it belongs to
  input           string []      the query x, as the downstream model reads it
  target          string []      the output y trained on (first reference)
  references      string [R]     every acceptable output (S-NI keeps them all)
  answer_choices  string [C]     choices for rank classification, [] if none
  label           int32 []       index of the correct choice, -1 if unknown
  context         string [S]     only after a context is attached: the segments
                                 the hypermodel reads (formatted few-shot pairs,
                                 or an S-NI definition and positive examples)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

LIST_FIELDS = ("references", "answer_choices")
CONTEXT = "context"

QUERY_SIGNATURE = {
    "task_name": tf.TensorSpec([], tf.string),
    "input": tf.TensorSpec([], tf.string),
    "target": tf.TensorSpec([], tf.string),
    "references": tf.TensorSpec([None], tf.string),
    "answer_choices": tf.TensorSpec([None], tf.string),
    "label": tf.TensorSpec([], tf.int32),
}
CONTEXT_SIGNATURE = {**QUERY_SIGNATURE, CONTEXT: tf.TensorSpec([None], tf.string)}


def make_record(task_name: str, input: str, target: str, *,  # noqa: A002  (the field's name)
                references: Sequence[str] | None = None,
                answer_choices: Sequence[str] = (), label: int = -1,
                context: Sequence[str] | None = None) -> dict[str, Any]:
  """A record as plain Python values; `references` defaults to [target]."""
  record = {
      "task_name": task_name,
      "input": input,
      "target": target,
      "references": list(references) if references is not None else [target],
      "answer_choices": list(answer_choices),
      "label": int(label),
  }
  if context is not None:
    record[CONTEXT] = list(context)
  return record


def label_of(target: str, answer_choices: Sequence[str]) -> int:
  """Index of `target` among the choices (whitespace-insensitive), -1 if absent."""
  stripped = [c.strip() for c in answer_choices]
  return stripped.index(target.strip()) if target.strip() in stripped else -1


@tf.autograph.experimental.do_not_convert
def densify(record: Mapping[str, Any]) -> dict[str, tf.Tensor]:
  """Rows of ragged columns (e.g. after unbatch) come out as RaggedTensors of rank 1;
  downstream code wants plain tensors."""
  return {k: v.to_tensor() if isinstance(v, tf.RaggedTensor) else v for k, v in record.items()}


def records_dataset(records: Sequence[Mapping[str, Any]], shuffle: bool = False,
                    seed: int | None = None) -> tf.data.Dataset:
  """A tf.data.Dataset of `records` (made by `make_record`), held in memory.

  With shuffle, the order is a new permutation every epoch, fixed by the seed.
  Only row indices go through the shuffle buffer (rows are gathered after), so
  the first record comes at once even for large tasks. In-memory datasets are
  checkpointable (tf.data iterator checkpoints), unlike generator-backed ones.
  """
  with_context = bool(records) and CONTEXT in records[0]
  signature = CONTEXT_SIGNATURE if with_context else QUERY_SIGNATURE
  scalars, lists = {}, {}
  for field in signature:
    values = [r[field] for r in records]
    if field in LIST_FIELDS or field == CONTEXT:
      flat = np.array([v for row in values for v in row], dtype=object)
      splits = np.concatenate([[0], np.cumsum([len(row) for row in values])]).astype(np.int64)
      lists[field] = (tf.constant(flat, tf.string, shape=[len(flat)]), tf.constant(splits))
    elif field == "label":
      scalars[field] = tf.constant(np.array(values, dtype=np.int32), shape=[len(values)])
    else:
      scalars[field] = tf.constant(np.array(values, dtype=object), tf.string, shape=[len(values)])

  @tf.autograph.experimental.do_not_convert
  def row(i):
    out = {k: v[i] for k, v in scalars.items()}
    for k, (flat, splits) in lists.items():
      out[k] = flat[splits[i]:splits[i + 1]]
    return out

  indices = tf.data.Dataset.range(len(records))
  if shuffle:
    indices = indices.shuffle(max(len(records), 1), seed=seed, reshuffle_each_iteration=True)
  return indices.map(row, num_parallel_calls=tf.data.AUTOTUNE)


# Records a streaming reader hands to TensorFlow at a time: each hand-over is one
# Python call under the interpreter lock, which all of a mixture's streaming
# readers share, so one record per call caps a P3 mixture at about a thousand
# records/s whatever the host's cores. 1 hands over each record alone.
GENERATOR_CHUNK = 256


def records_from_generator(generate: Callable[[], Iterator[Mapping[str, Any]]],
                           with_context: bool = False,
                           chunk: int | None = None) -> tf.data.Dataset:
  """A streaming dataset of records; `generate()` is called once per epoch.

  For benchmarks too large to hold in memory (P3). Records cross into TensorFlow
  `chunk` at a time (default GENERATOR_CHUNK) as columns, then are split again:
  the same records in the same order as one at a time. Not checkpointable: resume
  such pipelines by skipping batches (see pipeline.py).
  """
  signature = CONTEXT_SIGNATURE if with_context else QUERY_SIGNATURE
  chunk = GENERATOR_CHUNK if chunk is None else chunk
  if chunk <= 1:
    return tf.data.Dataset.from_generator(generate, output_signature=signature)
  lists = [k for k, spec in signature.items() if spec.shape.rank == 1]

  def columns(records):
    out = {}
    for field, spec in signature.items():
      values = [r[field] for r in records]
      if field in lists:
        out[field] = np.array([v for row in values for v in row], dtype=object)
        out[field + "/lengths"] = np.array([len(row) for row in values], np.int64)
      else:
        out[field] = np.array(values, dtype=object if spec.dtype == tf.string else np.int32)
    return out

  def chunks():
    records = []
    for record in generate():
      records.append(record)
      if len(records) == chunk:
        yield columns(records)
        records = []
    if records:
      yield columns(records)

  chunk_signature = {}
  for field, spec in signature.items():
    chunk_signature[field] = tf.TensorSpec([None], spec.dtype)  # flat values for lists
    if field in lists:
      chunk_signature[field + "/lengths"] = tf.TensorSpec([None], tf.int64)

  @tf.autograph.experimental.do_not_convert
  def rows(columns_):
    out = {k: v for k, v in columns_.items() if k in signature and k not in lists}
    for field in lists:  # [chunk, None]; unbatched rows come out ragged, densified below
      out[field] = tf.RaggedTensor.from_row_lengths(columns_[field], columns_[field + "/lengths"])
    return out

  dataset = tf.data.Dataset.from_generator(chunks, output_signature=chunk_signature)
  return dataset.map(rows).unbatch().map(densify)
