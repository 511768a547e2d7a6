"""The example cache: each task's examples, tokenized once, read by random access.

The training stream (indexed.py) reads any example of any task directly: the
few-shot context of a record is other records of its task, a resumed run starts
at its position. So each task is read from its SeqIO source once, up to its
cache point (indexed.py says where that is: the records of a few-shot task, the
spans of a CACLM task), tokenized, and written here:

  {root}/{task}/{split}-{identity}/manifest.json       written last: the cache is complete
  {root}/{task}/{split}-{identity}/piece-00000-of-00008.safetensors

`identity` is a hash of what the examples are made from: the source and the
arguments of its reader, the source code of the module that reads it, the
vocabulary, the steps before the cache point, and this format. The manifest
also keeps the sizes and modification times of the data files the source
names (`ReaderSource(files=...)`); when they change, the cache is rebuilt. A
cache whose data files are absent (the data stays on the machine that built
the cache) is used as it is, with a log line.

Pieces: a source that names pieces (`ReaderSource(pieces=...)`, C4's files)
is read and written one piece at a time, so a cache larger than memory can be
built and an interrupted build resumes at its first missing piece. Records
tasks are one piece.

A piece is a safetensors file (written with the safetensors library) of
`tokens` (uint16 when the vocabulary fits, else int32) and tables of token
spans into it, one row per example:
  records  `records` [N, 10]: the (start, end) of input, target, query ("Input: x
           Output:") and pair ("Input: x Output: y"), then the range of its
           attached context (a fixed set the reader attached, e.g. S-NI's
           definition) in `context_spans` [C, 2]; `pair_key` [N] (a hash of the
           pair, to keep a record's copies out of its context); `subtask_offsets`
           (records of one `task_name` are contiguous: contexts are drawn within it)
  tokens   `spans` [N, 2F]: the (start, end) of each int32 feature (CACLM:
           hyper_inputs, inputs, targets; LM spans: tokens)
Pieces are read through numpy memory maps: safetensors' own reader copies every
slice it returns, which costs twice as much per slice, and one row of a span
table gives all of an example's fields.

The cache root: `config.data.cache_dir`, else $HYPERT5_DATA_CACHE, else
~/.cache/hypert5/data. `python -m hypert5.preprocess` fills it ahead of time.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import inspect
import json
import os
import re
import shutil
import struct
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import seqio
import tensorflow as tf
from absl import logging
from safetensors.numpy import save_file

from hypert5.errors import DataError
from hypert5_tasks import fewshot
from hypert5_tasks import records as records_lib

FORMAT_VERSION = 2
ENV_CACHE = "HYPERT5_DATA_CACHE"
DEFAULT_ROOT = os.path.join("~", ".cache", "hypert5", "data")
MANIFEST = "manifest.json"
RECORDS, TOKENS = "records", "tokens"
RECORD_FIELDS = ("input", "target", "query", "pair")
# Columns of a records piece's `records` table: each field's token span, then the
# range of its attached context's segments in `context_spans`.
RECORD_COLUMNS = tuple(f"{f}_{end}" for f in RECORD_FIELDS for end in ("start", "end")) + (
    "context_first", "context_last")


def cache_root(configured: str | None = None) -> str:
  """The cache folder: `configured` (config.data.cache_dir), $HYPERT5_DATA_CACHE, or
  ~/.cache/hypert5/data."""
  return os.path.abspath(os.path.expanduser(
      configured or os.environ.get(ENV_CACHE) or DEFAULT_ROOT))


# ---------------------------------------------------------------------------
# What a cache is made from.

_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def describe(value: Any, depth: int = 0) -> Any:
  """A stable, JSON-able description of a reader, a preprocessor or their arguments:
  functions by their qualified name and the values they close over, other objects
  by their repr without memory addresses."""
  if depth > 6:
    return "..."
  if isinstance(value, functools.partial):
    return {"partial": describe(value.func, depth + 1),
            "args": [describe(a, depth + 1) for a in value.args],
            "keywords": {k: describe(v, depth + 1) for k, v in sorted(value.keywords.items())}}
  if inspect.isfunction(value) or inspect.ismethod(value):
    function = value.__func__ if inspect.ismethod(value) else value
    cells = [c.cell_contents for c in (function.__closure__ or ()) if _filled(c)]
    return {"function": f"{function.__module__}.{function.__qualname__}",
            "closure": [describe(c, depth + 1) for c in cells]}
  if isinstance(value, dict):
    return {str(k): describe(v, depth + 1) for k, v in sorted(value.items(), key=str)}
  if isinstance(value, (list, tuple)):
    return [describe(v, depth + 1) for v in value]
  if isinstance(value, (str, int, float, bool)) or value is None:
    return value
  return _ADDRESS.sub("", repr(value))


def _filled(cell) -> bool:
  try:
    cell.cell_contents  # noqa: B018  (reading it raises ValueError for an empty cell)
    return True
  except ValueError:  # a cell not yet assigned
    return False


@functools.cache
def _file_digest(path: str) -> str:
  with open(path, "rb") as f:
    return hashlib.sha256(f.read()).hexdigest()[:16]


def _code_digest(function) -> str | None:
  """The source file of the module defining `function` (its reader), hashed: the cache
  follows changes to the code that makes the examples."""
  while isinstance(function, functools.partial):
    function = function.func
  try:
    path = inspect.getsourcefile(function)
  except TypeError:
    return None
  return _file_digest(path) if path and os.path.exists(path) else None


_VOCABULARY_DIGESTS: dict[int, tuple[Any, str]] = {}


def _vocabulary_digest(vocabulary) -> str:
  """The SentencePiece model's bytes, hashed (once per vocabulary object)."""
  known = _VOCABULARY_DIGESTS.get(id(vocabulary))
  if known is None or known[0] is not vocabulary:
    model = getattr(vocabulary, "sp_model", None)
    digest = hashlib.sha256(model).hexdigest()[:16] if model else str(describe(vocabulary))
    known = _VOCABULARY_DIGESTS[id(vocabulary)] = (vocabulary, digest)
  return known[1]


def identity(task, base: str, split: str, kind: str, steps: Sequence[Callable]) -> str:
  """The hash naming a task's cache folder (see the module docstring)."""
  source = task.source
  reader = getattr(source, "reader", None)
  parts = {
      "format": FORMAT_VERSION, "task": base, "split": split, "kind": kind,
      "source": describe(source), "reader": describe(reader) if reader else None,
      "code": _code_digest(reader) if reader else None,
      "vocabulary": _vocabulary_digest(task.output_features["targets"].vocabulary),
      "steps": [describe(s) for s in steps],
      "step_code": [_code_digest(s) for s in steps],
  }
  return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def data_files(task, split: str) -> dict[str, list[int]] | None:
  """{path: [size, mtime_ns]} of the files the source names; None when it names none
  or they cannot be listed (the data is absent here)."""
  files = getattr(task.source, "files", None)
  if files is None:
    return None
  try:
    paths = files(split)
    return {p: [os.stat(p).st_size, os.stat(p).st_mtime_ns] for p in sorted(paths)}
  except OSError:
    return None


def num_pieces(task, split: str) -> int:
  pieces = getattr(task.source, "pieces", None)
  return max(int(pieces(split)), 1) if pieces is not None else 1


# ---------------------------------------------------------------------------
# Pieces: safetensors files, read through memory maps.

_DTYPES = {"U16": np.uint16, "I32": np.int32, "I64": np.int64, "U64": np.uint64}


def write_piece(path: str, arrays: dict[str, np.ndarray], metadata: dict) -> None:
  """Writes a piece atomically (a complete file or none)."""
  partial = f"{path}.partial-{os.getpid()}"
  try:
    save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, partial,
              metadata={"hypert5": json.dumps(metadata)})
    os.replace(partial, path)
  finally:
    if os.path.exists(partial):
      os.remove(partial)


class Piece:
  """The columns of one piece file, memory-mapped (nothing is read until used)."""

  __slots__ = ("path", "metadata", "_map", "columns")

  def __init__(self, path: str):
    self.path = path
    try:
      with open(path, "rb") as f:
        (size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(size))
    except (OSError, ValueError, struct.error) as e:
      raise DataError(f"{path}: not a readable cache piece ({e}); delete its folder to "
                      "rebuild it") from e
    self.metadata = json.loads(header.pop("__metadata__", {}).get("hypert5", "{}"))
    # A plain ndarray over the map: slicing a np.memmap builds a memmap each time.
    self._map = (np.memmap(path, dtype=np.uint8, mode="r").view(np.ndarray)
                 if os.path.getsize(path) else None)
    self.columns = {}
    for name, spec in header.items():
      start, end = spec["data_offsets"]
      raw = self._map[8 + size + start:8 + size + end] if end > start else np.zeros(0, np.uint8)
      self.columns[name] = raw.view(_DTYPES[spec["dtype"]]).reshape(spec["shape"])

  def __getitem__(self, name: str) -> np.ndarray:
    return self.columns[name]


# ---------------------------------------------------------------------------
# Building.


def _run_steps(dataset, task, steps: Sequence[Callable]):
  """Applies the preprocessors before the cache point, as SeqIO would (no lengths)."""
  with seqio.utils.map_seed_manager(0):
    for step in steps:
      parameters = inspect.signature(step).parameters
      kwargs = {}
      if "output_features" in parameters:
        kwargs["output_features"] = task.output_features
      if "sequence_length" in parameters:
        kwargs["sequence_length"] = None
      dataset = step(dataset, **kwargs)
  return dataset


class _Tokens:
  """A growing token array; `add` returns the (start, end) of what it appended."""

  def __init__(self, dtype):
    self.dtype = dtype
    self.chunks: list[np.ndarray] = []
    self.size = 0

  def add(self, ids: np.ndarray) -> tuple[int, int]:
    self.chunks.append(np.asarray(ids, dtype=self.dtype))
    self.size += len(ids)
    return self.size - len(ids), self.size

  def array(self) -> np.ndarray:
    return np.concatenate(self.chunks) if self.chunks else np.zeros(0, self.dtype)


def token_dtype(vocab_size: int):
  return np.uint16 if vocab_size <= np.iinfo(np.uint16).max + 1 else np.int32


def _tokenized_records(dataset, vocabulary):
  """Records -> the token ids of their fields (TF, as the TF pipeline tokenizes)."""


  @tf.autograph.experimental.do_not_convert
  def tokenize(record):
    pair = fewshot.format_pairs_tf(record["input"], record["target"])
    out = {"task_name": record["task_name"],
           "input": vocabulary.encode_tf(record["input"]),
           "target": vocabulary.encode_tf(record["target"]),
           "query": vocabulary.encode_tf(fewshot.format_query(record["input"])),
           "pair": vocabulary.encode_tf(pair),
           "pair_key": tf.strings.to_hash_bucket_fast(pair, 2**62)}
    if records_lib.CONTEXT in record:
      context = record[records_lib.CONTEXT]
      ids = vocabulary.encode_tf(context)  # [S, None]
      out["context_ids"] = ids.flat_values
      out["context_lengths"] = ids.row_lengths()
      out["context_key"] = tf.strings.to_hash_bucket_fast(
          tf.strings.reduce_join(context, separator="\x1f"), 2**62)
    return out

  return dataset.map(tokenize, num_parallel_calls=tf.data.AUTOTUNE).prefetch(64)


def build_records_piece(dataset, vocabulary, what: str) -> tuple[dict, dict]:
  """A records task's examples -> (columns, metadata)."""
  tokens = _Tokens(token_dtype(vocabulary.vocab_size))
  subtasks: dict[bytes, int] = {}
  rows = []  # (subtask, 4 fields' spans, pair_key, context id)
  contexts: list[list[tuple[int, int]]] = []
  context_of_key: dict[int, int] = {}
  for record in _tokenized_records(dataset, vocabulary).as_numpy_iterator():
    subtask = subtasks.setdefault(record["task_name"], len(subtasks))
    spans = [span for f in RECORD_FIELDS for span in tokens.add(record[f])]
    context = -1
    if "context_ids" in record:
      context = context_of_key.get(int(record["context_key"]))
      if context is None:
        flat, lengths = record["context_ids"], record["context_lengths"]
        bounds = np.concatenate([[0], np.cumsum(lengths)])
        context = context_of_key[int(record["context_key"])] = len(contexts)
        contexts.append([tokens.add(flat[a:b]) for a, b in zip(bounds[:-1], bounds[1:])])
    rows.append((subtask, spans, int(record["pair_key"]), context))
  if not rows:
    raise DataError(f"{what}: no examples")
  order = sorted(range(len(rows)), key=lambda i: rows[i][0])  # stable: a task_name contiguous
  context_start = np.concatenate([[0], np.cumsum([len(c) for c in contexts])]).astype(int)
  table = np.zeros((len(rows), len(RECORD_COLUMNS)), np.int64)
  for row, i in enumerate(order):
    _, spans, _, context = rows[i]
    table[row, :8] = spans
    if context >= 0:
      table[row, 8:] = context_start[context], context_start[context + 1]
  pair_keys = np.array([rows[i][2] for i in order], dtype=np.uint64)
  counts = np.bincount([rows[i][0] for i in order], minlength=len(subtasks))
  bounds = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
  columns = {
      "records": table, "pair_key": pair_keys, "subtask_offsets": bounds,
      "context_spans": np.array([span for c in contexts for span in c],
                                np.int64).reshape(-1, 2),
      "tokens": tokens.array(),
  }
  # The fewest distinct pairs in one task_name: a context drawn within it needs two.
  distinct = min(len(np.unique(pair_keys[a:b])) for a, b in zip(bounds[:-1], bounds[1:]))
  metadata = {"examples": len(rows), "subtasks": len(subtasks), "min_distinct_pairs": distinct,
              "subtask_names": [n.decode("utf-8", "replace") for n in subtasks][:1000],
              "attached_contexts": bool(contexts)}
  return columns, metadata


def build_tokens_piece(dataset, vocabulary, what: str) -> tuple[dict, dict]:
  """A task's token examples (int32 features of rank 1) -> (columns, metadata)."""
  features = sorted(k for k, spec in dataset.element_spec.items()
                    if spec.dtype == tf.int32 and spec.shape.rank == 1)
  if not features:
    raise DataError(f"{what}: its examples have no int32 token features to cache "
                    f"(features: {sorted(dataset.element_spec)})")
  dataset = dataset.map(tf.autograph.experimental.do_not_convert(
      lambda e: {k: e[k] for k in features}), num_parallel_calls=tf.data.AUTOTUNE)
  tokens = _Tokens(token_dtype(vocabulary.vocab_size))
  rows = [[span for f in features for span in tokens.add(example[f])]
          for example in dataset.prefetch(64).as_numpy_iterator()]
  spans = np.array(rows, dtype=np.int64).reshape(len(rows), 2 * len(features))
  return {"spans": spans, "tokens": tokens.array()}, {"examples": len(rows),
                                                       "features": features}


@dataclasses.dataclass(frozen=True)
class CacheSpec:
  """What to cache of one task: its name, the name its cache is kept under (a
  few-shot task's forms share their base task's), the split, the kind of examples
  and the preprocessors that run before the cache point."""
  task: Any  # seqio.Task
  base: str
  split: str
  kind: str
  steps: tuple = ()

  @functools.cached_property
  def identity(self) -> str:
    return identity(self.task, self.base, self.split, self.kind, self.steps)

  def folder(self, root: str) -> str:
    safe = re.sub(r"[^\w.:#-]", "_", self.base)
    return os.path.join(root, safe, f"{self.split}-{self.identity}")


def read_manifest(folder: str) -> dict | None:
  path = os.path.join(folder, MANIFEST)
  if not os.path.exists(path):
    return None
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except (OSError, ValueError) as e:
    raise DataError(f"{path}: damaged cache manifest ({e}); delete {folder} to rebuild") from e


def is_current(spec: CacheSpec, root: str) -> bool:
  """Whether `spec`'s cache is complete and built from the data files present now."""
  manifest = read_manifest(spec.folder(root))
  if manifest is None:
    return False
  files = data_files(spec.task, spec.split)
  if files is None or manifest.get("data_files") is None:
    if manifest.get("data_files") and files is None:
      logging.info("cache of %s: its data files are not here; using the cache as built",
                   spec.base)
    return True
  return files == manifest["data_files"]


def _piece_name(index: int, count: int) -> str:
  return f"piece-{index:05d}-of-{count:05d}.safetensors"


def build(spec: CacheSpec, root: str, *, max_pieces: int | None = None,
          progress: Callable[[str], None] | None = None) -> dict:
  """Reads the task's source (piece by piece), writes its cache, returns the manifest.

  Pieces already written for the same identity and data are kept (an interrupted
  build resumes); the manifest is written last. Errors name the task.
  """
  folder = spec.folder(root)
  what = f"task {spec.task.name} (split {spec.split!r}, {spec.task.source!r})"
  files = data_files(spec.task, spec.split)
  count = num_pieces(spec.task, spec.split)
  used = min(count, max_pieces) if max_pieces else count
  if spec.kind == RECORDS and count != 1:
    raise DataError(f"{what}: a records task is one piece, its source names {count}")
  manifest_path = os.path.join(folder, MANIFEST)
  try:
    os.remove(manifest_path)  # rebuilding: the data changed
  except FileNotFoundError:
    pass
  os.makedirs(folder, exist_ok=True)
  vocabulary = spec.task.output_features["targets"].vocabulary
  start, pieces = time.time(), []
  for index in range(used):
    name = _piece_name(index, count)
    path = os.path.join(folder, name)
    if os.path.exists(path):
      old = Piece(path).metadata
      if old.get("data_files") == files and old.get("identity") == spec.identity:
        pieces.append({"file": name, **{k: old[k] for k in ("examples",)}})
        continue
    try:
      dataset = spec.task.source.get_dataset(
          split=spec.split, shuffle=False, seed=None,
          shard_info=seqio.ShardInfo(index=index, num_shards=count) if count > 1 else None)
      dataset = _run_steps(dataset, spec.task, spec.steps)
      make = build_records_piece if spec.kind == RECORDS else build_tokens_piece
      columns, metadata = make(dataset, vocabulary, what)
    except (ValueError, OSError, KeyError) as e:  # DataError too: the task said first
      raise DataError(f"{what}: {e}") from e
    except Exception as e:  # TensorFlow wraps the reader's errors
      message = getattr(e, "message", None) or str(e)
      raise DataError(f"{what}: {type(e).__name__}: {message.strip().splitlines()[-1]}") from e
    metadata.update(identity=spec.identity, data_files=files, task=spec.task.name,
                    base=spec.base, split=spec.split, kind=spec.kind, piece=index,
                    vocab_size=vocabulary.vocab_size)
    write_piece(path, columns, metadata)
    pieces.append({"file": name, "examples": metadata["examples"]})
    if progress:
      progress(f"{spec.base}: piece {index + 1} of {used}")
  if not sum(p["examples"] for p in pieces):
    raise DataError(f"{what}: no examples")
  first = Piece(os.path.join(folder, pieces[0]["file"])).metadata
  manifest = {"format": FORMAT_VERSION, "task": spec.task.name, "base": spec.base,
              "split": spec.split, "kind": spec.kind, "identity": spec.identity,
              "data_files": files, "pieces": pieces, "pieces_in_source": count,
              "examples": sum(p["examples"] for p in pieces),
              "vocab_size": vocabulary.vocab_size, "seconds": round(time.time() - start, 3),
              **{k: first[k] for k in ("features", "attached_contexts") if k in first}}
  if spec.kind == RECORDS:
    manifest["min_distinct_pairs"] = first["min_distinct_pairs"]
    manifest["subtasks"] = first["subtasks"]
  partial = f"{manifest_path}.partial-{os.getpid()}"
  with open(partial, "w", encoding="utf-8") as f:
    json.dump(manifest, f)
  os.replace(partial, manifest_path)
  return manifest


class CachedTask:
  """A complete cache, read by example index across its pieces."""

  __slots__ = ("folder", "manifest", "kind", "size", "_starts", "_pieces", "_only")

  def __init__(self, folder: str):
    manifest = read_manifest(folder)
    if manifest is None:
      raise DataError(f"{folder}: no complete cache here (no {MANIFEST})")
    self.folder = folder
    self.manifest = manifest
    self.kind = manifest["kind"]
    self.size = int(manifest["examples"])
    sizes = [p["examples"] for p in manifest["pieces"]]
    self._starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    self._pieces: dict[int, Piece] = {}
    self._only: Piece | None = None  # a one-piece cache's piece, once opened

  def piece(self, index: int) -> Piece:
    piece = self._pieces.get(index)
    if piece is None:
      if len(self._pieces) >= 64:  # bounds open files for caches of many pieces
        self._pieces.pop(next(iter(self._pieces)))
      piece = Piece(os.path.join(self.folder, self.manifest["pieces"][index]["file"]))
      self._pieces[index] = piece
    return piece

  def row(self, example: int) -> tuple[Piece, int]:
    """The piece holding one example, and its row there."""
    if self._only is not None:
      return self._only, example
    if len(self._starts) == 2:
      self._only = self.piece(0)
      return self._only, example
    p = int(np.searchsorted(self._starts, example, side="right") - 1)
    return self.piece(p), example - int(self._starts[p])

  def locate(self, examples) -> Iterator[tuple[Piece, np.ndarray, np.ndarray]]:
    """(piece, which of `examples`, their indices within the piece) per piece touched."""
    examples = np.asarray(examples, dtype=np.int64)
    pieces = np.searchsorted(self._starts, examples, side="right") - 1
    for p in np.unique(pieces):
      mine = np.nonzero(pieces == p)[0]
      yield self.piece(int(p)), mine, examples[mine] - self._starts[p]


def remove(folder: str) -> None:
  shutil.rmtree(folder, ignore_errors=True)
