"""Super-NaturalInstructions (S-NI): instructions as the hypermodel's input.

Reads a clone of allenai/natural-instructions under $HYPERT5_SNI_DIR:
  tasks/{task}.json    Definition, Positive Examples, Instances, languages, ...
  splits/default/{train,test}_tasks.txt   (splits/{train,test}_tasks.txt also accepted)
Registration reads the clone's split lists when it has them; without a clone
(or with one lacking splits/), the default split's task lists (756 train, 119
test, English), packaged as data/sni_{train,test}_tasks.txt, are used, so
registering needs no data. `register(split_dir=...)` reads another folder.

Settings (paper section 6): what the hypermodel reads.
  def       ["Definition: {definition}"]
  def_pos2  the definition, then "Positive Example 1: Input: {x} Output: {y}" and
            the same for the second positive example.
The downstream input is the instance input. Forms as everywhere (forms.py):
concat puts the definition (and examples) before the input, as Tk-Instruct does.

Instances. Evaluation ("test" split) uses the first 100 instances of a test
task and keeps every reference output (`references`; `targets` is the first).
Training ("train" split) uses up to 100 instances per task, sampled with a
seed fixed by the task name (as Tk-Instruct's 100 per task); target = first output.

Mixtures: sni_def_train, sni_def_test, sni_def_pos2_train, sni_def_pos2_test
(and their _concat/_xonly forms), one task `sni_{setting}.{task}` per S-NI task.

Scoring: greedy generation; ROUGE-L (the headline) and exact match against
every reference. Results (`BENCHMARK`): ROUGE-L per task and its mean, with
the mean exact match beside it.

English only: a task whose Input/Output/Instruction languages are not all
English gets mixing rate 0 (logged) and so is skipped by the mixtures.

Bad input raises with the file named: malformed JSON (ValueError with line
and column; a bare NaN is valid, Python's json reads it), a missing key, an
empty definition, Def+2Pos on a task with fewer than 2 positive examples, a
non-string instance; a split file naming a task with no file raises
FileNotFoundError naming the split file and line.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import pathlib
import zlib
from collections.abc import Sequence

import numpy as np
import seqio
from absl import logging

from hypert5.errors import DataError
from hypert5.text import metrics, prompts
from hypert5_tasks import forms, locations, scoring, sources
from hypert5_tasks import records as records_lib
from hypert5_tasks import vocab as vocab_lib

DATA = pathlib.Path(__file__).parent / "data"
SETTINGS = {"def": 0, "def_pos2": 2}  # setting -> positive examples in the context
EVAL_INSTANCES = 100
MAX_TRAIN_INSTANCES = 100
LANGUAGE_KEYS = ("Input_language", "Output_language", "Instruction_language")
REQUIRED_KEYS = ("Definition", "Positive Examples", "Instances")


@dataclasses.dataclass(frozen=True)
class TaskListEntry:
  """A task named by a split file, with where it was named (for error messages)."""
  name: str
  split_file: str
  line: int


def read_split_file(path: str | os.PathLike) -> list[TaskListEntry]:
  with open(path, encoding="utf-8") as f:
    return [TaskListEntry(text.strip(), str(path), number)
            for number, text in enumerate(f, start=1) if text.strip()]


def packaged_split(split: str) -> list[TaskListEntry]:
  """The default split's task list ("train" or "test"), packaged with hypert5_tasks."""
  return read_split_file(DATA / f"sni_{split}_tasks.txt")


def split_folder(root: str | None) -> str | None:
  """The folder of a clone's split lists (splits/default, else splits), or None when
  `root` holds no train_tasks.txt and test_tasks.txt."""
  if not root:
    return None
  for folder in (os.path.join(root, "splits", "default"), os.path.join(root, "splits")):
    if all(os.path.exists(os.path.join(folder, f"{s}_tasks.txt")) for s in ("train", "test")):
      return folder
  return None


@dataclasses.dataclass(frozen=True)
class SniTask:
  name: str
  path: str
  definition: str
  positives: tuple[tuple[str, str], ...]
  instances: tuple[tuple[str, tuple[str, ...]], ...]  # (input, references), the kept ones
  english: bool


def _strings(value, what: str, path: str) -> list[str]:
  values = value if isinstance(value, list) else [value]
  if not all(isinstance(v, str) for v in values):
    raise DataError(f"{path}: {what} must be text, got {value!r}")
  return values


def task_path(root: str, entry: TaskListEntry) -> str:
  path = os.path.join(root, "tasks", f"{entry.name}.json")
  if not os.path.exists(path):
    raise FileNotFoundError(f"{entry.split_file}:{entry.line}: names task {entry.name!r}, "
                            f"but there is no {path}")
  return path


@functools.lru_cache(maxsize=4096)
def load_task(path: str, split: str) -> SniTask:
  """A validated task file with the instances `split` uses (first 100, or a sample of 100)."""
  try:
    with open(path, encoding="utf-8") as f:
      data = json.load(f)  # accepts the bare NaN some files contain
  except UnicodeDecodeError as e:
    raise DataError(f"{path}: not UTF-8 text (byte {e.start + 1})") from None
  except json.JSONDecodeError as e:
    raise DataError(f"{path}:{e.lineno}:{e.colno}: malformed JSON ({e.msg})") from e
  missing = [k for k in REQUIRED_KEYS if k not in data]
  if missing:
    raise DataError(f"{path}: missing key(s) {missing}")
  definition = " ".join(d.strip() for d in _strings(data["Definition"], "Definition", path))
  if not definition.strip():
    raise DataError(f"{path}: empty Definition")
  positives = tuple((ex["input"], _strings(ex["output"], "a positive example output", path)[0])
                    for ex in data["Positive Examples"])
  instances = []
  for i, instance in enumerate(data["Instances"]):
    x = _strings(instance.get("input"), f"Instances[{i}].input", path)[0]
    references = tuple(_strings(instance.get("output"), f"Instances[{i}].output", path))
    if not references:
      raise DataError(f"{path}: Instances[{i}] has no output")
    instances.append((x, references))
  if split == "test":
    instances = instances[:EVAL_INSTANCES]
  elif len(instances) > MAX_TRAIN_INSTANCES:
    rng = np.random.default_rng(zlib.crc32(os.path.basename(path).encode()))
    instances = [instances[i] for i in sorted(rng.choice(len(instances), MAX_TRAIN_INSTANCES,
                                                         replace=False))]
  english = all(data.get(k) == ["English"] for k in LANGUAGE_KEYS)
  return SniTask(name=os.path.basename(path)[:-len(".json")], path=path, definition=definition,
                 positives=positives, instances=tuple(instances), english=english)


def context(task: SniTask, setting: str) -> list[str]:
  """The hypermodel's segments for a setting: the definition, then positive examples."""
  num_positives = SETTINGS[setting]
  if len(task.positives) < num_positives:
    raise DataError(f"{task.path}: setting {setting} needs {num_positives} positive examples, "
                     f"the task has {len(task.positives)}")
  segments = [prompts.format_definition(task.definition)]
  segments += [prompts.format_positive_example(i + 1, x, y)
               for i, (x, y) in enumerate(task.positives[:num_positives])]
  return segments


def reader(root: str | None, entry: TaskListEntry, setting: str, task_name: str):
  def read(split, shuffle, seed, shard):
    task = load_task(task_path(locations.SNI.require(root), entry), split)
    segments = context(task, setting)
    records = [records_lib.make_record(task_name, x, references[0], references=references,
                                       context=segments)
               for x, references in shard.slice(task.instances)]
    return records_lib.records_dataset(records, shuffle, seed)
  return read


def _reader_by_split(root, entries: dict[str, TaskListEntry], setting: str, task_name: str):
  readers = {split: reader(root, entry, setting, task_name) for split, entry in entries.items()}
  return lambda split, **kwargs: readers[split](split=split, **kwargs)


def _task_files(root: str | None, entries: dict[str, TaskListEntry], split: str) -> list[str]:
  return [task_path(locations.SNI.require(root), entries[split])]


def english_rate(root: str | None, entry: TaskListEntry, split: str) -> float:
  """1 for an English task, 0 (skipped, logged) otherwise."""
  task = load_task(task_path(locations.SNI.require(root), entry), split)
  if not task.english:
    logging.warning("S-NI task %s is not English (%s); the mixture skips it", entry.name,
                    entry.split_file)
    return 0.0
  return 1.0


SCORING = scoring.generation(metrics.rouge_l, metrics.exact_match)


def aggregate(per_task: scoring.PerTask) -> dict:
  """ROUGE-L per task and the mean; the mean exact match beside it."""
  out = scoring.mean_over_tasks({t: {"rouge_l": v["rouge_l"]} for t, v in per_task.items()})
  out["exact_match"] = float(np.mean([v["exact_match"] for v in per_task.values()]))
  return out


BENCHMARK = scoring.Benchmark("sni", aggregate, table_groups=False,
                              table_extras=(("EM", "exact_match"),))


def task_name(setting: str, task: str, prefix: str = "sni") -> str:
  return f"{prefix}_{setting}.{forms.safe_name(task)}"


def register(root: str | None = None, vocabulary: seqio.Vocabulary | None = None, *,
             split_dir: str | None = None, prefix: str = "sni",
             settings: Sequence[str] = tuple(SETTINGS)) -> None:
  """Registers one task per S-NI task and setting, and the mixtures.

  split_dir: a folder with train_tasks.txt and test_tasks.txt, read now. Default:
  the clone's own split lists under `root` when it has them (split_folder), else
  the packaged default split. The choice is logged.
  """
  root = root or locations.SNI.root()
  vocabulary = vocabulary or vocab_lib.default_vocabulary()
  split_dir = split_dir or split_folder(root)
  if split_dir is None:
    logging.info("S-NI tasks: the packaged default split (%s holds no split lists)", root)
    entries = {"train": packaged_split("train"), "test": packaged_split("test")}
  else:
    logging.info("S-NI tasks: the split lists in %s", split_dir)
    entries = {s: read_split_file(os.path.join(split_dir, f"{s}_tasks.txt"))
               for s in ("train", "test")}
  # A task listed in both files gets both splits (the default split lists never overlap).
  splits_of: dict[str, list[str]] = {}
  entry_of: dict[tuple[str, str], TaskListEntry] = {}
  for split, split_entries in entries.items():
    for entry in split_entries:
      splits_of.setdefault(entry.name, []).append(split)
      entry_of[entry.name, split] = entry
  for setting in settings:
    for task, splits in splits_of.items():
      name = task_name(setting, task, prefix)
      by_split = {s: entry_of[task, s] for s in splits}
      forms.add_task(name, sources.ReaderSource(
          _reader_by_split(root, by_split, setting, name),
          tuple(splits), f"S-NI {task} under {root}",
          files=functools.partial(_task_files, root, by_split)), vocabulary, **SCORING)
    for split, split_entries in entries.items():
      by_name = {task_name(setting, e.name, prefix): e for e in split_entries}
      forms.add_mixture(f"{prefix}_{setting}_{split}", list(by_name),
                        lambda name, by_name=by_name, split=split: english_rate(
                            root, by_name[name], split),
                        benchmark=BENCHMARK if split == "test" else None)
