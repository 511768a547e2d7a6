"""P3 (bigscience/P3): the T0 training mixture and the held-out rank-classification evaluation.

Reads a local copy of the Hugging Face dataset under $HYPERT5_P3_DIR, one
folder per dataset-prompt subset, in either layout it is distributed in:
  parquet    data/{subset}/{split}.parquet, {split}-*.parquet or {split}/*.parquet
             (the refs/convert/parquet revision's {subset}/{split}/0000.parquet too)
  tfrecord   data/{subset}/{split}.tfrecord-00000-of-00001 (+ info.{split}.json,
             stats.{split}.json), written by seqio's cache
Columns: inputs_pretokenized, targets_pretokenized (strings), inputs, targets
(T5 token ids), answer_choices (some subsets); *_score_eval subsets have one row
per (example, choice) with idx = [example, choice], is_correct and weight.
Examples are re-tokenized from the *_pretokenized strings with the configured
vocabulary (the stored ids are used only to measure input lengths).

Training (`p3_t0_train`): the subsets of T0's training datasets (datasets.csv,
do_train == BASE: 313 subsets), minus the *_score_eval ones. A subset whose
average input length exceeds 320 tokens is excluded, as in the paper: its mixing
rate is 0 (logged). The average comes from stats.train.json when present, else
from the stored ids of the first 10,000 rows. Other rates: min(size, 500,000),
T0's cap. Each example gets up to 16 few-shot examples of the same subset
(`fewshot.draw_within_task`).

Held-out (`p3_heldout_score_eval`): the *_score_eval subsets of ANLI R1-R3,
HellaSwag, CB, COPA, RTE, WiC, WSC and WinoGrande (XL), 111 subsets; queries are
the validation split, one per example with its answer choices and label; the
few-shot set is fixed per subset: 16 examples drawn (seed 0) from the first
8,192 rows of the subset's own train split, with their correct choice as output.

Scoring: held-out subsets by rank classification accuracy over their answer
choices; training subsets (for a look at training tasks) by generation,
MetaICL's exact accuracy. Results (`BENCHMARK`): accuracy per subset, averaged
per dataset (the ANLI prompts per round first, then the three rounds), in the
order of the paper's Table 1.

Streaming: parquet and tfrecord rows are read by a Python generator, so P3
pipelines are resumed by skipping batches, not by tf.data iterator checkpoints.
Sharding: parquet files are split into row ranges (a host opens only the row
groups of its range); tfrecord files are read whole and strided.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import glob
import json
import os
import pathlib
import re
import struct
from collections.abc import Iterator, Sequence

import numpy as np
import pyarrow.parquet as pq
import seqio
from absl import logging
from tensorflow.core.example import example_pb2

from hypert5.errors import DataError
from hypert5.text import metrics, prompts
from hypert5_tasks import fewshot, forms, locations, scoring, sources
from hypert5_tasks import records as records_lib
from hypert5_tasks import vocab as vocab_lib

DATA = pathlib.Path(__file__).parent / "data"
PREFIX = "p3"
TRAIN_MIXTURE = "p3_t0_train"
EVAL_MIXTURE = "p3_heldout_score_eval"
MAX_AVERAGE_INPUT_TOKENS = 320
MAX_EXAMPLES_PER_SUBSET = 500_000
LENGTH_SAMPLE_ROWS = 10_000
FEWSHOT_POOL_ROWS = 8192
_PARQUET_BATCH_ROWS = 1024
HELDOUT_DATASETS = (("anli", ""), ("hellaswag", ""), ("super_glue", "cb"),
                    ("super_glue", "copa"), ("super_glue", "rte"), ("super_glue", "wic"),
                    ("super_glue", "wsc.fixed"), ("winogrande", "winogrande_xl"))
SCORE_EVAL = "_score_eval"

# ---------------------------------------------------------------------------
# Which subsets (package copies of T0's datasets.csv and P3's subset names).


@functools.cache
def dataset_table() -> tuple[dict[str, str], ...]:
  with open(DATA / "p3_datasets.csv", newline="", encoding="utf-8") as f:
    return tuple(csv.DictReader(f))


@functools.cache
def subset_names() -> tuple[str, ...]:
  return tuple(line.strip() for line in (DATA / "p3_subsets.txt").read_text().splitlines()
               if line.strip())


def dataset_prefix(hf_name: str, subset: str) -> str:
  """P3 names a subset '{dataset}_{config}_{prompt}', with odd characters as '_'."""
  name = f"{hf_name}_{subset}_" if subset else f"{hf_name}_"
  return re.sub(r"[^\w\d\._]+", "_", name)


@functools.cache
def _prefixes() -> dict[str, tuple[str, str]]:
  return {dataset_prefix(r["HF_name"], r["subset"]): (r["HF_name"], r["subset"])
          for r in dataset_table()}


def dataset_of(subset_name: str) -> tuple[str, str] | None:
  """(HF dataset, config) a subset was made from; the longest matching prefix wins."""
  matches = [p for p in _prefixes() if subset_name.startswith(p)]
  return _prefixes()[max(matches, key=len)] if matches else None


def t0_train_subsets() -> list[str]:
  train = {(r["HF_name"], r["subset"]) for r in dataset_table() if r["do_train"] == "BASE"}
  return [s for s in subset_names()
          if not s.endswith(SCORE_EVAL) and dataset_of(s) in train]


def heldout_eval_subsets() -> list[str]:
  return [s for s in subset_names()
          if s.endswith(SCORE_EVAL) and dataset_of(s) in HELDOUT_DATASETS]


# ---------------------------------------------------------------------------
# Files and rows.


@dataclasses.dataclass(frozen=True)
class SubsetFiles:
  kind: str  # "parquet" or "tfrecord"
  paths: tuple[str, ...]
  folder: str


def _patterns(root: str, subset: str, split: str) -> list[tuple[str, str, str]]:
  """(kind, subset folder, glob) of every layout we read, in order of preference."""
  out = []
  for folder in (os.path.join(root, "data", subset), os.path.join(root, subset)):
    out += [("parquet", folder, os.path.join(folder, f"{split}.parquet")),
            ("parquet", folder, os.path.join(folder, f"{split}-*.parquet")),
            ("parquet", folder, os.path.join(folder, split, "*.parquet")),
            ("tfrecord", folder, os.path.join(folder, f"{split}.tfrecord-*"))]
  return out


def find_files(root: str | None, subset: str, split: str) -> SubsetFiles:
  """The files of one subset split, or MissingDataError listing where we looked."""
  locations.P3.require(root)
  tried = []
  for kind, folder, pattern in _patterns(root, subset, split):
    paths = sorted(glob.glob(pattern))
    if paths:
      return SubsetFiles(kind, tuple(paths), folder)
    tried.append(pattern)
  raise locations.P3.missing(root, f"subset {subset!r} split {split!r}; looked for "
                             + ", ".join(tried))


def _tfrecord_payloads(path: str) -> Iterator[bytes]:
  """Records of an uncompressed TFRecord file (checksums are not verified)."""
  with open(path, "rb") as f:
    while header := f.read(12):
      if len(header) < 12:
        raise DataError(f"{path}: truncated TFRecord header")
      (length,) = struct.unpack("<Q", header[:8])
      payload = f.read(length)
      if len(payload) < length or len(f.read(4)) < 4:
        raise DataError(f"{path}: truncated TFRecord record")
      yield payload


def _parse_example(payload: bytes) -> dict:

  row = {}
  for key, feature in example_pb2.Example.FromString(payload).features.feature.items():
    kind = feature.WhichOneof("kind")
    values = list(getattr(feature, kind).value) if kind else []
    if kind == "bytes_list":
      values = [v.decode("utf-8") for v in values]
    row[key] = values
  # Scalars are stored as one-element lists; lists stay lists.
  for key in ("inputs_pretokenized", "targets_pretokenized", "is_correct", "weight"):
    if key in row:
      row[key] = row[key][0] if row[key] else None
  return row


def iter_rows(files: SubsetFiles, columns: Sequence[str], shard: sources.Shard = sources.Shard(),
              rng: np.random.Generator | None = None,
              max_rows: int | None = None) -> Iterator[dict]:
  """Rows (dicts of `columns`) of this shard (at most `max_rows` of the file are considered).

  rng: shuffles the order of row groups and of rows within 1,024-row batches.
  """
  if files.kind == "tfrecord":  # no random access: read in order, keep every count-th row
    del rng  # TFRecords are read in file order; the task's shuffle buffer mixes them
    count = 0
    for path in files.paths:
      for payload in _tfrecord_payloads(path):
        if max_rows is not None and count >= max_rows:
          return
        if count % shard.count == shard.index:
          yield _parse_example(payload)
        count += 1
    return

  pieces = []  # (path, row group, first row, rows) in file order
  for path in files.paths:
    parquet = pq.ParquetFile(path)
    missing = [c for c in columns if c not in parquet.schema_arrow.names]
    if missing:
      raise DataError(f"{path}: missing P3 columns {missing}; has {parquet.schema_arrow.names}")
    start = pieces[-1][2] + pieces[-1][3] if pieces else 0
    for g in range(parquet.num_row_groups):
      rows = parquet.metadata.row_group(g).num_rows
      pieces.append((path, g, start, rows))
      start += rows
  total = pieces[-1][2] + pieces[-1][3] if pieces else 0
  if max_rows is not None:
    total = min(total, max_rows)
  lo, hi = shard.row_range(total)
  mine = [p for p in pieces if p[2] < hi and p[2] + p[3] > lo]
  if rng is not None:
    mine = [mine[i] for i in rng.permutation(len(mine))]
  for path, group, first, _ in mine:
    # Batches bound the memory of a large row group; rows are shuffled within a batch.
    batches = pq.ParquetFile(path).iter_batches(batch_size=_PARQUET_BATCH_ROWS,
                                                row_groups=[group], columns=list(columns))
    for batch in batches:
      rows = batch.to_pylist()
      keep = [i for i in range(len(rows)) if lo <= first + i < hi]
      first += len(rows)
      if rng is not None:
        keep = [keep[i] for i in rng.permutation(len(keep))]
      for i in keep:
        yield rows[i]
      if first >= hi:
        break


def average_input_tokens(root: str | None, subset: str, split: str = "train") -> float:
  """Mean stored input length (T5 tokens) of a subset split."""
  files = find_files(root, subset, split)
  stats = os.path.join(files.folder, f"stats.{split}.json")
  if os.path.exists(stats):
    with open(stats, encoding="utf-8") as f:
      values = json.load(f)
    if values.get("examples") and "inputs_tokens" in values:
      return values["inputs_tokens"] / values["examples"]
  lengths = [len(row["inputs"]) for row in iter_rows(files, ["inputs"],
                                                     max_rows=LENGTH_SAMPLE_ROWS)]
  return float(np.mean(lengths)) if lengths else 0.0


@functools.cache
def _split_sizes() -> dict[str, dict[str, int]]:
  with open(DATA / "p3_data_splits_sizes.json", encoding="utf-8") as f:
    return json.load(f)


def num_examples(root: str | None, subset: str, split: str = "train") -> int:
  """Size of a subset split: P3's published sizes, else the local files' row count."""
  size = _split_sizes().get(subset, {}).get(split)
  if size is not None:
    return size
  return sum(1 for _ in iter_rows(find_files(root, subset, split), ["targets_pretokenized"]))


# ---------------------------------------------------------------------------
# Records.


def _train_record(row: dict, task_name: str) -> dict:
  choices = row.get("answer_choices") or []
  target = row["targets_pretokenized"]
  return records_lib.make_record(task_name, row["inputs_pretokenized"], target,
                                 answer_choices=choices,
                                 label=records_lib.label_of(target, choices))


def grouped_choices(rows: Iterator[dict], path: str) -> Iterator[tuple[str, list[str], int]]:
  """Score-eval rows (one per choice) -> (input, choices, label) per example.

  A choice's rows are consecutive in P3's files; label is the one choice marked
  correct, -1 when none or several are (hidden test labels).
  """
  seen = set()
  current, group = None, []

  def flush():
    ordered = sorted(group, key=lambda r: r["idx"][1])
    correct = [i for i, r in enumerate(ordered) if r["is_correct"]]
    return (ordered[0]["inputs_pretokenized"], [r["targets_pretokenized"] for r in ordered],
            correct[0] if len(correct) == 1 else -1)

  for row in rows:
    example = row["idx"][0]
    if example != current:
      if group:
        yield flush()
      if example in seen:
        raise DataError(f"{path}: rows of example {example} are not consecutive")
      seen.add(example)
      current, group = example, []
    group.append(row)
  if group:
    yield flush()


_SCORE_COLUMNS = ("inputs_pretokenized", "targets_pretokenized", "idx", "is_correct")


def _files(root: str | None, subset: str, split: str, also: Sequence[str] = ()) -> list[str]:
  """The files a subset's split is read from (held-out subsets also read their train
  split, for the few-shot set)."""
  return [p for s in (split, *also) for p in find_files(root, subset, s).paths]


def train_reader(root: str | None, subset: str, task_name: str):
  """Reader of a training subset: records without context, streamed."""

  def read(split, shuffle, seed, shard):
    files = find_files(root, subset, split)
    columns = ["inputs_pretokenized", "targets_pretokenized"]
    if files.kind == "parquet":
      if "answer_choices" in pq.ParquetFile(files.paths[0]).schema_arrow.names:
        columns.append("answer_choices")

    def generate():
      rng = np.random.default_rng([seed or 0, shard.index]) if shuffle else None
      for row in iter_rows(files, columns, shard, rng):
        yield _train_record(row, task_name)

    return records_lib.records_from_generator(generate)

  return read


def fixed_fewshot_pairs(root: str | None, subset: str, num_shots: int, seed: int) -> list[str]:
  """The held-out context of a score-eval subset: pairs from its train split."""
  files = find_files(root, subset, "train")
  pool = list(grouped_choices(iter_rows(files, _SCORE_COLUMNS, max_rows=FEWSHOT_POOL_ROWS),
                              files.paths[0]))
  pool = [(x, choices[label]) for x, choices, label in pool if label >= 0]
  chosen = fewshot.choose_fixed(pool, num_shots, seed, f"P3 {subset} train split")
  return [prompts.format_pair(x, y) for x, y in chosen]


def eval_reader(root: str | None, subset: str, task_name: str, num_shots: int, fewshot_seed: int):
  """Reader of a held-out score-eval subset: one record per example, fixed context."""

  def read(split, shuffle, seed, shard):
    del shuffle, seed  # evaluation order is the file order
    context = fixed_fewshot_pairs(root, subset, num_shots, fewshot_seed)
    files = find_files(root, subset, split)

    def generate():
      examples = grouped_choices(iter_rows(files, _SCORE_COLUMNS), files.paths[0])
      for i, (x, choices, label) in enumerate(examples):
        if i % shard.count == shard.index:
          yield records_lib.make_record(task_name, x, choices[label] if label >= 0 else "",
                                        answer_choices=choices, label=label, context=context)

    return records_lib.records_from_generator(generate, with_context=True)

  return read


# ---------------------------------------------------------------------------
# Scoring.

TABLE_ORDER = ("ANLI", "HSwag", "CB", "COPA", "RTE", "WiC", "WSC", "WGD")
TABLE_COLUMNS = {("anli", ""): "ANLI", ("hellaswag", ""): "HSwag", ("super_glue", "cb"): "CB",
                 ("super_glue", "copa"): "COPA", ("super_glue", "rte"): "RTE",
                 ("super_glue", "wic"): "WiC", ("super_glue", "wsc.fixed"): "WSC",
                 ("winogrande", "winogrande_xl"): "WGD",
                 ("winogrande", "winogrande_debiased"): "WGD"}
_ANLI_ROUND = re.compile(r"_r([123])_score_eval$")


def aggregate(per_task: scoring.PerTask) -> dict:
  """Accuracy per dataset (its prompts' mean; ANLI: per round, then the rounds'
  mean), in Table 1's order, and the mean over datasets."""
  datasets, anli = {}, {}
  for task, values in per_task.items():
    subset = task.split(".", 1)[1]
    hf_name, config = dataset_of(subset) or (subset, "")
    column = TABLE_COLUMNS.get((hf_name, config), hf_name)
    if column == "ANLI":
      found = _ANLI_ROUND.search(subset)
      anli.setdefault(found.group(1) if found else "?", []).append(values["accuracy"])
    else:
      datasets.setdefault(column, []).append(values["accuracy"])
  groups = {k: float(np.mean(v)) for k, v in datasets.items()}
  if anli:
    groups["ANLI"] = float(np.mean([np.mean(v) for v in anli.values()]))
  ordered = {c: groups[c] for c in TABLE_ORDER if c in groups}
  return {"groups": ordered, "average": float(np.mean(list(ordered.values())))}


# The held-out *_score_eval subsets are scored on their validation split (test
# labels are hidden).
BENCHMARK = scoring.Benchmark("p3", aggregate, split="validation")


# ---------------------------------------------------------------------------
# Registration.


def task_name(subset: str, prefix: str = PREFIX) -> str:
  return f"{prefix}.{subset}"


def training_rate(root: str | None, subset: str, max_average_input_tokens: float) -> float:
  """T0's size-proportional rate, or 0 for a subset whose inputs are too long."""
  average = average_input_tokens(root, subset)
  if average > max_average_input_tokens:
    logging.info("P3 subset %s excluded: average input %.1f > %s tokens",
                 subset, average, max_average_input_tokens)
    return 0.0
  return float(min(num_examples(root, subset), MAX_EXAMPLES_PER_SUBSET))


def register(root: str | None = None, vocabulary: seqio.Vocabulary | None = None, *,
             train_subsets: Sequence[str] | None = None,
             eval_subsets: Sequence[str] | None = None, prefix: str = PREFIX,
             train_mixture: str = TRAIN_MIXTURE, eval_mixture: str = EVAL_MIXTURE,
             max_average_input_tokens: float = MAX_AVERAGE_INPUT_TOKENS,
             num_shots: int = fewshot.NUM_SHOTS, fewshot_seed: int = 0) -> None:
  """Registers one task per subset (in each form) and the two mixtures; reads nothing."""
  root = root or locations.P3.root()
  vocabulary = vocabulary or vocab_lib.default_vocabulary()
  train_subsets = t0_train_subsets() if train_subsets is None else list(train_subsets)
  eval_subsets = heldout_eval_subsets() if eval_subsets is None else list(eval_subsets)
  for subset in train_subsets:
    name = task_name(subset, prefix)
    forms.add_task(
        name, sources.ReaderSource(train_reader(root, subset, name), ("train", "validation"),
                                   f"P3 {subset} under {root}",
                                   files=functools.partial(_files, root, subset)),
        vocabulary,
        context_preprocessors=[functools.partial(fewshot.draw_within_task, num_shots=num_shots)],
        **scoring.generation(metrics.accuracy))
  for subset in eval_subsets:
    name = task_name(subset, prefix)
    forms.add_task(
        name, sources.ReaderSource(eval_reader(root, subset, name, num_shots, fewshot_seed),
                                   ("validation", "test"), f"P3 {subset} under {root}",
                                   files=functools.partial(_files, root, subset,
                                                           also=("train",))),
        vocabulary, **scoring.RANK_ACCURACY)
  prefix_length = len(prefix) + 1
  if train_subsets:
    forms.add_mixture(train_mixture, [task_name(s, prefix) for s in train_subsets],
                      lambda name: training_rate(root, name[prefix_length:],
                                                 max_average_input_tokens))
  if eval_subsets:
    forms.add_mixture(eval_mixture, [task_name(s, prefix) for s in eval_subsets],
                      benchmark=BENCHMARK)
