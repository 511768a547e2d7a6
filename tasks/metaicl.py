"""MetaICL: meta-training tasks and k=16 target tasks, in its three task splits.

Reads MetaICL's data/ folder under $HYPERT5_METAICL_DIR:
  {task}/{task}_{k}_{seed}_{split}.jsonl, one {"task", "input", "output", "options"} a line.
The task splits hr_to_lr, non_nli_to_nli and non_class_to_class, and each task's
type and label set, come from package copies of MetaICL's config files
(data/metaicl_{split}.json; data/metaicl_task_configs.json merges config/tasks/*.json).

Training tasks read {task}_16384_100_train.jsonl (MetaICL's meta-training
data); each example gets up to 16 few-shot examples of the same task
(`fewshot.draw_within_task`). Registered as `metaicl.{task}`.

Target tasks are evaluated for k=16 and seeds 100, 13, 21, 42, 87: the few-shot
set is the 16 lines of {task}_16_{seed}_train.jsonl, fixed for the task and seed,
and the queries are {task}_16_{seed}_test.jsonl. Registered as
`metaicl.{task}.seed{seed}` (split "test"); the evaluator gets one phi per task
and seed. Scoring: greedy generation, as MetaICL's evaluation; Macro-F1 for
classification tasks, accuracy (stripped exact match) for the others (each
line's options are kept as the example's answer choices). Results
(`BENCHMARK`): each task's score averaged over the 5 seeds, then over tasks.

Mixtures: metaicl_{split}_train (rates: the number of training lines) and
metaicl_{split}_test, each also _concat and _xonly.

Bad input raises ValueError naming the file and line: malformed JSON, a missing
key, a wrong task name, an output that is not one of the options of a
classification or multi-choice task, or a few-shot file with fewer than k lines.
"""

from __future__ import annotations

import functools
import json
import os
import pathlib
import re
from collections.abc import Mapping, Sequence

import numpy as np
import seqio
from absl import logging

from hypert5.errors import ConfigError, DataError
from hypert5.text import metrics, prompts
from hypert5_tasks import fewshot, forms, locations, scoring, sources
from hypert5_tasks import records as records_lib
from hypert5_tasks import vocab as vocab_lib

DATA = pathlib.Path(__file__).parent / "data"
SPLITS = ("hr_to_lr", "non_nli_to_nli", "non_class_to_class")
TEST_SEEDS = (100, 13, 21, 42, 87)
TEST_K = 16
TRAIN_K, TRAIN_SEED = 16384, 100
PREFIX = "metaicl"
KEYS = ("task", "input", "output", "options")


@functools.cache
def split_config(split: str) -> dict[str, list[str]]:
  """{"train": [...], "test": [...], "unseen_domain_test": [...]} of a task split."""
  if split not in SPLITS:
    raise ConfigError(f"unknown MetaICL split {split!r}; expected one of {SPLITS}")
  with open(DATA / f"metaicl_{split}.json", encoding="utf-8") as f:
    return json.load(f)


@functools.cache
def task_configs() -> dict[str, dict]:
  with open(DATA / "metaicl_task_configs.json", encoding="utf-8") as f:
    return json.load(f)


def has_choices(task: str) -> bool:
  """Classification and multi-choice tasks are scored over their options."""
  return task_configs().get(task, {}).get("task_type") in ("classification", "multi-choice")


def scoring_of(task: str) -> dict:
  """add_task's scoring arguments: Macro-F1 for classification, else accuracy."""
  if task_configs().get(task, {}).get("task_type") == "classification":
    return scoring.generation(metrics.macro_f1)
  return scoring.generation(metrics.accuracy)


def config_key(task_name: str) -> str:
  """A registered task's MetaICL task: metaicl.glue_rte.seed13 -> glue-rte."""
  middle = task_name.split(".")[1]
  for key in task_configs():
    if re.sub(r"[^\w]", "_", key) == middle:
      return key
  return middle


def aggregate(per_task: scoring.PerTask) -> dict:
  """Each MetaICL task's score (its one metric) averaged over its seeds, then the
  mean over tasks."""
  by_task = {}
  for name, values in per_task.items():
    by_task.setdefault(config_key(name), []).append(next(iter(values.values())))
  groups = {t: float(np.mean(v)) for t, v in sorted(by_task.items())}
  return {"groups": groups, "average": float(np.mean(list(groups.values())))}


BENCHMARK = scoring.Benchmark("metaicl", aggregate)


def jsonl_path(root: str, task: str, k: int, seed: int, split: str) -> str:
  return os.path.join(root, task, f"{task}_{k}_{seed}_{split}.jsonl")


def read_jsonl(path: str, task: str) -> list[dict]:
  """Validated lines of a MetaICL file; errors name the file and line."""
  if not os.path.exists(path):
    raise locations.METAICL.missing(os.path.dirname(os.path.dirname(path)), f"no file {path}")
  lines = []
  with open(path, "rb") as f:
    for number, raw in enumerate(f, start=1):
      try:
        text = raw.decode("utf-8")
      except UnicodeDecodeError as e:
        raise DataError(f"{path}:{number}: not UTF-8 text (byte {e.start + 1} of the line)"
                        ) from None
      if not text.strip():
        continue
      try:
        line = json.loads(text)
      except json.JSONDecodeError as e:
        raise DataError(f"{path}:{number}: malformed JSON ({e.msg})") from e
      if not isinstance(line, dict):
        raise DataError(f"{path}:{number}: expected a JSON object, got {type(line).__name__}")
      missing = [k for k in KEYS if k not in line]
      if missing:
        raise DataError(f"{path}:{number}: missing key(s) {missing}; a line needs {list(KEYS)}")
      if line["task"] != task:
        raise DataError(f"{path}:{number}: line of task {line['task']!r} in a {task!r} file")
      options = line["options"] or []
      if has_choices(task) and line["output"] not in options:
        raise DataError(f"{path}:{number}: output {line['output']!r} is not one of its "
                         f"options {options}")
      lines.append({"input": line["input"], "output": line["output"], "options": options})
  return lines


def _record(line: dict, task_name: str, context=None) -> dict:
  options = line["options"]
  return records_lib.make_record(
      task_name, line["input"], line["output"], answer_choices=options,
      label=options.index(line["output"]) if line["output"] in options else -1, context=context)


def _files(root: str | None, task: str, k: int, seeds, splits, split: str) -> list[str]:
  del split  # a task's files serve its one split
  root = locations.METAICL.require(root)
  return [jsonl_path(root, task, k, seed, s) for seed in seeds for s in splits]


def train_reader(root: str | None, task: str, task_name: str):
  def read(split, shuffle, seed, shard):
    del split  # the only split
    path = jsonl_path(locations.METAICL.require(root), task, TRAIN_K, TRAIN_SEED, "train")
    records = [_record(line, task_name) for line in shard.slice(read_jsonl(path, task))]
    return records_lib.records_dataset(records, shuffle, seed)
  return read


def fewshot_context(root: str, task: str, seed: int, k: int = TEST_K) -> list[str]:
  """The fixed context of a target task and seed: its k training lines as pairs."""
  path = jsonl_path(root, task, k, seed, "train")
  lines = read_jsonl(path, task)
  if len(lines) < k:
    raise DataError(f"{path}: a {k}-shot file with only {len(lines)} examples")
  if len(lines) > k:
    logging.warning("%s has %d lines; using the first %d as the few-shot set", path,
                    len(lines), k)
  return [prompts.format_pair(line["input"], line["output"]) for line in lines[:k]]


def test_reader(root: str | None, task: str, data_seed: int, task_name: str):
  def read(split, shuffle, seed, shard):
    del split, shuffle, seed  # evaluation order is the file order
    root_ = locations.METAICL.require(root)
    context = fewshot_context(root_, task, data_seed)
    queries = read_jsonl(jsonl_path(root_, task, TEST_K, data_seed, "test"), task)
    return records_lib.records_dataset(
        [_record(line, task_name, context) for line in shard.slice(queries)])
  return read


def train_task_name(task: str, prefix: str = PREFIX) -> str:
  return f"{prefix}.{forms.safe_name(task)}"


def test_task_name(task: str, seed: int, prefix: str = PREFIX) -> str:
  return f"{prefix}.{forms.safe_name(task)}.seed{seed}"


@functools.cache
def _line_count(path: str) -> int:
  with open(path, "rb") as f:
    return sum(1 for line in f if line.strip())


def register(root: str | None = None, vocabulary: seqio.Vocabulary | None = None, *,
             configs: Mapping[str, Mapping[str, Sequence[str]]] | None = None,
             prefix: str = PREFIX, mixture_prefix: str = PREFIX) -> None:
  """Registers the train and target tasks of each split and their mixtures; reads nothing.

  configs: split name -> {"train": tasks, "test": tasks}; default MetaICL's three splits.
  """
  root = root or locations.METAICL.root()
  vocabulary = vocabulary or vocab_lib.default_vocabulary()
  configs = configs if configs is not None else {s: split_config(s) for s in SPLITS}
  draw = functools.partial(fewshot.draw_within_task, num_shots=fewshot.NUM_SHOTS)
  registered = set()
  for split, config in configs.items():
    for task in config["train"]:
      name = train_task_name(task, prefix)
      if name not in registered:
        forms.add_task(name, sources.ReaderSource(
            train_reader(root, task, name), ("train",), f"MetaICL {task} under {root}",
            files=functools.partial(_files, root, task, TRAIN_K, (TRAIN_SEED,), ("train",))),
                       vocabulary, context_preprocessors=[draw], **scoring_of(task))
        registered.add(name)
    for task in config["test"]:
      for seed in TEST_SEEDS:
        name = test_task_name(task, seed, prefix)
        if name not in registered:
          forms.add_task(name, sources.ReaderSource(
              test_reader(root, task, seed, name), ("test",), f"MetaICL {task} under {root}",
              files=functools.partial(_files, root, task, TEST_K, (seed,), ("train", "test"))),
                         vocabulary, **scoring_of(task))
          registered.add(name)

    def rate(name, tasks=tuple(config["train"])):
      task = next(t for t in tasks if train_task_name(t, prefix) == name)
      return float(_line_count(jsonl_path(locations.METAICL.require(root), task, TRAIN_K,
                                          TRAIN_SEED, "train")))

    forms.add_mixture(f"{mixture_prefix}_{split}_train",
                      [train_task_name(t, prefix) for t in config["train"]], rate)
    forms.add_mixture(f"{mixture_prefix}_{split}_test",
                      [test_task_name(t, s, prefix) for t in config["test"] for s in TEST_SEEDS],
                      benchmark=BENCHMARK)
