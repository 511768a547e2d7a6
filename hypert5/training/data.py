"""Batches for the train loop: SeqIO mixtures (hypert5_tasks) or synthetic tokens.

Each process computes only its slice of every global batch, as numpy arrays.
The stream is a pure function of (config, position): global batch b is the
same whatever the number of processes that split it, and a resumed run
continues at its saved position at once (`DataState`, saved with each
checkpoint), without reading the batches before it.

Sources (`config.data.source`):
  seqio         the mixture's examples read by random access from the example
                cache (hypert5_tasks.indexed; built once by `python -m
                hypert5.preprocess`, or by the first single-process run)
  seqio_tfdata  SeqIO's own tf.data pipeline (a shuffle buffer per task; a
                resumed run replays the batches before its position): kept
                to measure against (`hypert5.input_bench`)
  synthetic     random tokens
TensorFlow and SeqIO are imported only for the seqio sources, so the model,
the train step and `hypert5.bench` run where they are not installed.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import queue
import threading
from collections.abc import Iterator

import numpy as np

from hypert5 import experiment
from hypert5.errors import ConfigError

log = logging.getLogger("hypert5.data")

SOURCES = experiment.DATA_SOURCES
PREPROCESS_COMMAND = "python -m hypert5.preprocess --config=CONFIG (with the run's overrides)"


def feature_lengths(config) -> dict[str, int]:
  return {"hyper_inputs": config.data.hyper_inputs_length, "inputs": config.data.inputs_length,
          "targets": config.data.targets_length}


@dataclasses.dataclass(frozen=True)
class DataState:
  """Where a stream stands: batches consumed and the stream row the next one starts
  at (packed batches hold a varying number of rows)."""
  batches: int = 0
  rows: int | None = None  # None: batches x the global batch size

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, value) -> DataState:
    return cls(int(value.get("batches", 0)), value.get("rows"))


def open_stream(config, form: str, *, build_missing: bool = True, preprocess_hint: str = ""):
  """The config's mixture as a random-access stream (hypert5_tasks.indexed.IndexedMixture)."""
  from hypert5_tasks import indexed  # noqa: PLC0415  (TensorFlow and SeqIO only for real data)
  name = check_mixture(config, form, warn=False)
  return indexed.IndexedMixture(
      name, split=config.data.split, lengths=feature_lengths(config), seed=config.seed,
      cache_dir=config.data.get("cache_dir") or None, build_missing=build_missing,
      preprocess_hint=preprocess_hint or PREPROCESS_COMMAND)


def train_stream(config, features: tuple[str, ...], *, local_batch_size: int,
                 shard_index: int, num_shards: int, start: DataState = DataState(),
                 form: str = "hyper", stream=None
                 ) -> Iterator[tuple[dict[str, np.ndarray], DataState]]:
  """This process's batches from `start` on, each with the state after it.

  stream: an open `open_stream` (else opened here).
  """
  source = config.data.source
  if source not in SOURCES:
    raise ConfigError(f"config.data.source={source!r}: expected one of {', '.join(SOURCES)}")
  global_batch = local_batch_size * num_shards
  if source == "synthetic":
    index = start.batches
    while True:
      yield (synthetic_batch(config, features, local_batch_size, shard_index, index),
             DataState(index + 1))
      index += 1
  if source == "seqio_tfdata":
    for index, batch in enumerate(_tfdata_batches(config, local_batch_size, shard_index,
                                                  num_shards, start.batches, form),
                                  start=start.batches + 1):
      yield {k: batch[k] for k in features}, DataState(index)
    return
  stream = stream or open_stream(config, form)
  index = start.batches
  if not config.data.pack:
    while True:
      batch = stream.batch(index, batch_size=global_batch, shard_index=shard_index,
                           num_shards=num_shards)
      index += 1
      yield {k: batch[k] for k in features}, DataState(index)
  rows = start.rows
  if rows is None:  # a state saved without rows: plan the batches before it
    rows = 0
    for _ in range(start.batches):
      _, rows = stream.packed_batch(rows, batch_size=global_batch, shard_index=shard_index,
                                    num_shards=num_shards)
  while True:
    batch, rows = stream.packed_batch(rows, batch_size=global_batch, shard_index=shard_index,
                                      num_shards=num_shards)
    index += 1
    yield {k: batch[k] for k in features}, DataState(index, rows)


def train_batches(config, features: tuple[str, ...], *, local_batch_size: int, shard_index: int,
                  num_shards: int, start_batch: int = 0, form: str = "hyper"
                  ) -> Iterator[dict[str, np.ndarray]]:
  """This process's batches from position `start_batch` on: {feature: [local_batch, ...]}."""
  for batch, _ in train_stream(config, features, local_batch_size=local_batch_size,
                               shard_index=shard_index, num_shards=num_shards,
                               start=DataState(start_batch), form=form):
    yield batch


def _tfdata_batches(config, local_batch_size, shard_index, num_shards, start_batch, form):
  from hypert5_tasks import pipeline  # noqa: PLC0415  (TensorFlow and SeqIO only for real data)
  name = check_mixture(config, form, warn=False)
  dataset = pipeline.get_dataset(
      name, feature_lengths(config), split=config.data.split,
      shard_index=shard_index, num_shards=num_shards, seed=config.seed, shuffle=True,
      pack=config.data.pack, form="hyper", batch_size=local_batch_size)
  # Skipping replays the input pipeline up to the saved position.
  return dataset.skip(start_batch).as_numpy_iterator()


def synthetic_batch(config, features, batch_size: int, shard_index: int, index: int
                    ) -> dict[str, np.ndarray]:
  """Random tokens, a deterministic function of (seed, shard, batch index).

  Inputs are padded to random lengths so masking is exercised; targets end in EOS.
  """
  rng = np.random.default_rng([config.seed, shard_index, index])
  vocab = config.model.vocab_size
  lengths = feature_lengths(config)

  def tokens(length, min_fill):
    ids = rng.integers(2, vocab, (batch_size, length), dtype=np.int32)
    fill = rng.integers(max(1, int(length * min_fill)), length + 1, batch_size)
    ids[np.arange(length)[None, :] >= fill[:, None]] = 0
    ids[np.arange(batch_size), fill - 1] = 1  # EOS
    return ids

  targets = tokens(lengths["targets"], 0.5)
  batch = {
      "hyper_encoder_input_tokens": tokens(lengths["hyper_inputs"], 0.75),
      "encoder_input_tokens": tokens(lengths["inputs"], 0.5),
      "decoder_target_tokens": targets,
      "decoder_input_tokens": np.concatenate(
          [np.zeros((batch_size, 1), np.int32), targets[:, :-1]], axis=1),
      "decoder_loss_weights": (targets > 0).astype(np.float32),
  }
  if "encoder_segment_ids" in features:  # synthetic rows are single segments
    for name in ("encoder", "decoder"):
      key = "encoder_input_tokens" if name == "encoder" else "decoder_target_tokens"
      batch[f"{name}_segment_ids"] = (batch[key] > 0).astype(np.int32)
      batch[f"{name}_positions"] = np.broadcast_to(
          np.arange(batch[key].shape[1], dtype=np.int32), batch[key].shape).copy()
  return {k: batch[k] for k in features}


def _mixture_vocab_size(mixture: str, form: str) -> tuple[str, int]:
  import seqio  # noqa: PLC0415  (TensorFlow and SeqIO only for real data)

  from hypert5_tasks import forms  # noqa: PLC0415  (TensorFlow and SeqIO only for real data)
  name = forms.resolve_mixture(mixture, form)
  return name, seqio.get_mixture_or_task(name).output_features["targets"].vocabulary.vocab_size


def size_vocabulary(config, form: str) -> None:
  """config.model.vocab_size 0 -> sized from the mixture's vocabulary
  (experiment.size_vocabulary)."""
  if config.model.vocab_size:
    return
  if config.data.source not in ("seqio", "seqio_tfdata"):
    raise ConfigError("config.model.vocab_size=0 sizes the model from the mixture's "
                      f"vocabulary; data.source={config.data.source!r} has none: set it")
  experiment.size_vocabulary(config, _mixture_vocab_size(config.data.mixture, form)[1])


def check_mixture(config, form: str, warn: bool = True) -> str:
  """Resolves the mixture's name. Ids beyond the model's embedding table are an error,
  not NaNs; a model trained from scratch with far more outputs than the vocabulary
  has ids is warned about (the extra outputs can still be predicted, as " ⁇ ")."""
  name, size = _mixture_vocab_size(config.data.mixture, form)
  model_size = config.model.vocab_size
  if size > model_size:
    raise ConfigError(f"mixture {name!r} uses a vocabulary of {size} ids but "
                      f"config.model.vocab_size={model_size}")
  if warn and model_size >= 2 * size and not config.init.downstream_checkpoint:
    log.warning("config.model.vocab_size=%d but mixture %s's vocabulary has %d ids: a model "
                "trained from scratch wastes outputs on ids no text has, and may predict "
                "them; --config.model.vocab_size=0 sizes it from the vocabulary",
                model_size, name, size)
  return name


def write_vocabulary(mixture: str, path: str) -> None:
  """The mixture's SentencePiece model (with its extra ids) as a file."""
  import seqio  # noqa: PLC0415  (TensorFlow and SeqIO only for real data)
  vocabulary = seqio.get_mixture_or_task(mixture).output_features["targets"].vocabulary
  with open(path + ".partial", "wb") as f:
    f.write(vocabulary.sp_model)
  os.replace(path + ".partial", path)


class Prefetcher:
  """Runs a batch generator in a background thread, `size` batches ahead.

  Building the input pipeline (TensorFlow graphs, reading files) then overlaps
  with parameter initialization and compilation, and each step's host-side
  input work overlaps the previous step on the device.
  """

  def __init__(self, make_iterator, size: int = 2):
    self._queue = queue.Queue(maxsize=size)
    self._stop = threading.Event()
    self._thread = threading.Thread(target=self._run, args=(make_iterator,), daemon=True,
                                    name="hypert5-input")
    self._thread.start()

  def _offer(self, item) -> bool:
    """Puts `item` once there is room; False if stopped first."""
    while not self._stop.is_set():
      try:
        self._queue.put(item, timeout=0.1)
        return True
      except queue.Full:
        continue
    return False

  def _run(self, make_iterator):
    try:
      for batch in make_iterator():
        if not self._offer(("batch", batch)):
          return
      self._offer(("end", None))
    except BaseException as e:  # noqa: BLE001  (re-raised in the consumer)
      self._offer(("error", e))

  def __iter__(self):
    return self

  def __next__(self):
    kind, value = self._queue.get()
    if kind == "batch":
      return value
    if kind == "error":
      raise value
    raise StopIteration

  def close(self) -> None:
    """Stops the thread and waits for it (it ends after the batch it is making): a
    thread still inside numpy or JAX while the interpreter exits can abort it."""
    self._stop.set()
    self._thread.join(timeout=30)
