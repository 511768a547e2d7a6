"""A user's own few-shot benchmark, from jsonl files, in one call.

    hypert5_tasks.register_jsonl_benchmark("my_tasks", "my_data")

reads a folder with one subfolder per task:

  my_data/{task}/train.jsonl      examples to train on; also the pool the test
                                  split's few-shot set is drawn from
  my_data/{task}/test.jsonl       queries to evaluate
  my_data/{task}/definition.txt   optional: the task's definition, read by the
                                  hypermodel before the examples ("Definition: ...")

one JSON object a line: {"input": x, "output": y}, or with answer choices
{"input": x, "options": [...], "output": y} (y among the options). A task
needs train.jsonl, test.jsonl, or both.

Registered (forms.py: each task and mixture also as _concat and _xonly):
  task  {name}.{task}   split "train": each example with up to `num_shots`
                        other examples of its task as context (drawn within
                        the task, re-drawn every epoch, never itself); split
                        "test": every query with the same fixed few-shot set,
                        `num_shots` examples drawn (fewshot_seed) from
                        train.jsonl, all of them when it has fewer, so one phi
                        per task.
  mixtures  {name}_train (the tasks with train.jsonl, or `train_tasks`; rate:
            number of examples) and {name}_test (the tasks with test.jsonl).

Scoring (scoring.py): `metric` names one for every task, or a dict
{task: metric}; unnamed tasks infer it: options on the test lines -> rank
classification and accuracy, otherwise greedy generation and ROUGE-L. Names:
  accuracy     rank classification over the options when the task has them,
               else generation and MetaICL's stripped exact match
  rouge_l, exact_match, macro_f1    generation (hypert5/text/metrics.py)
or SeqIO metric functions: fn(targets, predictions) (generation; targets are
the lists of references) or fn(targets, scores) (rank classification; targets
are the correct options' indices).

Everything is read and checked before anything is registered: a missing
folder, a malformed line, a line without "output", options without the output,
an empty file, or a name already registered raise a DataError, ConfigError (or
MissingDataError) naming the file and line.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable, Mapping, Sequence

import seqio
from absl import logging

from hypert5 import files
from hypert5.errors import ConfigError, DataError, MissingDataError
from hypert5.text import metrics as metrics_lib
from hypert5.text import prompts
from hypert5_tasks import fewshot, forms, scoring, sources
from hypert5_tasks import records as records_lib
from hypert5_tasks import vocab as vocab_lib

SPLITS = ("train", "test")
DEFINITION_FILE = "definition.txt"
KEYS = ("input", "output", "options")
GENERATION_METRICS = {"rouge_l": metrics_lib.rouge_l, "exact_match": metrics_lib.exact_match,
                      "macro_f1": metrics_lib.macro_f1}
METRIC_NAMES = ("accuracy",) + tuple(GENERATION_METRICS)

Metric = str | Callable | Sequence[str | Callable]


@dataclasses.dataclass(frozen=True)
class Line:
  input: str
  output: str
  options: tuple[str, ...] | None


@dataclasses.dataclass(frozen=True)
class UserTask:
  name: str  # the folder's name
  folder: str
  splits: dict  # split -> tuple of Lines
  definition: str | None

  @property
  def has_options(self) -> bool:
    lines = self.splits.get("test") or self.splits["train"]
    return lines[0].options is not None


def read_lines(path: str) -> tuple[Line, ...]:
  """The validated lines of one task file; errors name the file and line."""
  lines = []
  for where, row in files.read_jsonl(path, ("input", "output"), DataError):
    unknown = sorted(set(row) - set(KEYS))
    if unknown:
      raise DataError(f"{where}: unknown key(s) {unknown}; a line has 'input', 'output' "
                      "and optionally 'options'")
    for key in ("input", "output"):
      if not isinstance(row[key], str):
        raise DataError(f"{where}: {key!r} must be a string, got {row[key]!r}")
    options = row.get("options")
    if options is not None:
      if (not isinstance(options, list) or not options
          or not all(isinstance(o, str) for o in options)):
        raise DataError(f"{where}: 'options' must be a non-empty list of strings, "
                        f"got {options!r}")
      if row["output"] not in options:
        raise DataError(f"{where}: output {row['output']!r} is not one of its options "
                        f"{options}")
      options = tuple(options)
    if lines and (options is None) != (lines[0].options is None):
      raise DataError(f"{where}: {'has' if options is not None else 'has no'} 'options' "
                      f"unlike line(s) before it; a task's lines all have options or none")
    lines.append(Line(row["input"], row["output"], options))
  if not lines:
    raise DataError(f"{path}: no examples (an empty split)")
  return tuple(lines)


def read_folder(folder: str) -> list[UserTask]:
  """Every task under `folder`, read and checked."""
  if not os.path.isdir(folder):
    raise MissingDataError(f"no folder {folder}; expected {folder}/TASK/train.jsonl and/or "
                            f"{folder}/TASK/test.jsonl")
  tasks = []
  for name in sorted(os.listdir(folder)):
    path = os.path.join(folder, name)
    if not os.path.isdir(path) or name.startswith("."):
      continue
    splits = {s: read_lines(os.path.join(path, f"{s}.jsonl")) for s in SPLITS
              if os.path.exists(os.path.join(path, f"{s}.jsonl"))}
    if not splits:
      raise MissingDataError(f"{path}: no train.jsonl or test.jsonl")
    definition = None
    definition_path = os.path.join(path, DEFINITION_FILE)
    if os.path.exists(definition_path):
      with open(definition_path, encoding="utf-8") as f:
        definition = " ".join(f.read().split())
      if not definition:
        raise DataError(f"{definition_path}: empty definition")
    task = UserTask(name, path, splits, definition)
    if "train" in splits and "test" in splits and (
        (splits["train"][0].options is None) != (splits["test"][0].options is None)):
      raise DataError(f"{path}: train.jsonl and test.jsonl must both have 'options' or "
                       "both have none")
    if "test" in splits and "train" not in splits and definition is None:
      raise MissingDataError(f"{path}: test.jsonl needs a train.jsonl to draw its few-shot "
                              f"examples from (or a {DEFINITION_FILE})")
    tasks.append(task)
  if not tasks:
    raise MissingDataError(f"{folder} has no task folders (TASK/train.jsonl, TASK/test.jsonl)")
  return tasks


def scoring_for(task: UserTask, metric: Metric | None) -> dict:
  """add_task's metric_fns and postprocess_fn for a task and the user's choice."""
  if metric is None:
    metric = "accuracy" if task.has_options else "rouge_l"
  chosen = [metric] if isinstance(metric, str) or callable(metric) else list(metric)
  fns = []
  for m in chosen:
    if m == "accuracy":
      fns.append(metrics_lib.rank_classification_accuracy if task.has_options
                 else metrics_lib.accuracy)
    elif isinstance(m, str):
      if m not in GENERATION_METRICS:
        raise ConfigError(f"task {task.name!r}: unknown metric {m!r}; expected one of "
                         f"{', '.join(METRIC_NAMES)} or a SeqIO metric function")
      fns.append(GENERATION_METRICS[m])
    elif callable(m):
      fns.append(m)
    else:
      raise ConfigError(f"task {task.name!r}: a metric is a name or a function, got {m!r}")
  ranked = [scoring.is_score_metric(fn) for fn in fns]
  if any(ranked) and not task.has_options:
    raise ConfigError(f"task {task.name!r} ({task.folder}): a rank-classification metric "
                     "needs 'options' on every line")
  if all(ranked):
    return dict(metric_fns=tuple(fns), postprocess_fn=scoring.label)
  if any(ranked):
    raise ConfigError(f"task {task.name!r}: its metrics mix rank classification and "
                     "generation; pick one")
  return scoring.generation(*fns)


def _record(task_name: str, line: Line, context=None) -> dict:
  options = line.options or ()
  return records_lib.make_record(task_name, line.input, line.output, answer_choices=options,
                                 label=options.index(line.output) if options else -1,
                                 context=context)


def _definition_segments(task: UserTask) -> list[str]:
  return [prompts.format_definition(task.definition)] if task.definition else []


def fixed_context(task: UserTask, num_shots: int, seed: int) -> list[str]:
  """The test split's few-shot set: the definition, then num_shots train pairs."""
  pool = task.splits.get("train", ())
  chosen = fewshot.choose_fixed(pool, min(num_shots, len(pool)), seed, task.folder)
  return _definition_segments(task) + [prompts.format_pair(e.input, e.output) for e in chosen]


def _task_files(task: UserTask, split: str) -> list[str]:
  paths = [os.path.join(task.folder, f"{split}.jsonl")]
  definition = os.path.join(task.folder, DEFINITION_FILE)
  return paths + [definition] * os.path.exists(definition)


def _reader(task: UserTask, task_name: str, num_shots: int, fewshot_seed: int):
  """Test queries with the fixed few-shot set; training records without a context
  (the task's preprocessors draw it, after the definition)."""
  def read(split, shuffle, seed, shard):
    if split == "test":  # evaluation order is the file order
      context = fixed_context(task, num_shots, fewshot_seed)
      return records_lib.records_dataset(
          [_record(task_name, line, context) for line in shard.slice(task.splits["test"])])
    records = [_record(task_name, line) for line in shard.slice(task.splits["train"])]
    return records_lib.records_dataset(records, shuffle, seed)
  return read


def register_jsonl_benchmark(name: str, folder: str, *,
                             metric: Metric | Mapping[str, Metric] | None = None,
                             num_shots: int = fewshot.NUM_SHOTS, fewshot_seed: int = 0,
                             train_tasks: Sequence[str] | None = None,
                             vocabulary: seqio.Vocabulary | str | None = None,
                             replace: bool = False) -> list[str]:
  """Registers the tasks under `folder` and the mixtures {name}_train, {name}_test.

  metric: a metric for every task, or {task: metric}; None infers it (see above).
  train_tasks: the tasks of {name}_train (default: every task with a train.jsonl;
    leave held-out tasks out).
  vocabulary: a seqio vocabulary or a SentencePiece model file (100 extra ids are
    added); default T5's ($HYPERT5_VOCAB).
  replace: register again over an earlier registration of `name`.
  Returns the registered task names (base form).
  """
  if forms.safe_name(name) != name or "." in name:
    raise ConfigError(f"benchmark name {name!r}: use letters, digits and '_' only")
  folder = os.path.abspath(folder)
  tasks = read_folder(folder)
  per_task = metric if isinstance(metric, Mapping) else {t.name: metric for t in tasks}
  unknown = sorted(set(per_task) - {t.name for t in tasks})
  if unknown:
    raise ConfigError(f"metric names task(s) {unknown}, not folders of {folder}")
  scorings = {t.name: scoring_for(t, per_task.get(t.name)) for t in tasks}
  names = {t.name: f"{name}.{forms.safe_name(t.name)}" for t in tasks}
  by_name = {t.name: t for t in tasks}
  trained = [t.name for t in tasks if "train" in t.splits] if train_tasks is None else list(
      train_tasks)
  for task in trained:
    if task not in by_name or "train" not in by_name[task].splits:
      raise ConfigError(f"train_tasks names {task!r}, which has no {folder}/{task}/train.jsonl")
  tested = [t.name for t in tasks if "test" in t.splits]
  mixtures = [f"{name}_train"] * bool(trained) + [f"{name}_test"] * bool(tested)
  if not replace:
    taken = [m for m in mixtures if m in seqio.MixtureRegistry.names()]
    taken += [n for n in names.values() if n in seqio.TaskRegistry.names()]
    if taken:
      raise ConfigError(f"benchmark {name!r} is registered already ({', '.join(taken[:3])}); "
                       "pass replace=True to register it again, or pick another name")
  if isinstance(vocabulary, str):
    vocabulary = seqio.SentencePieceVocabulary(vocabulary, extra_ids=vocab_lib.EXTRA_IDS)
  vocabulary = vocabulary or vocab_lib.default_vocabulary()
  for task in tasks:
    draw = functools.partial(fewshot.draw_within_task, num_shots=num_shots,
                             leading=tuple(_definition_segments(task)))
    forms.add_task(names[task.name], sources.ReaderSource(
        _reader(task, names[task.name], num_shots, fewshot_seed), tuple(task.splits),
        f"{task.folder}", files=functools.partial(_task_files, task)), vocabulary,
                   context_preprocessors=[draw], **scorings[task.name])
  if trained:
    sizes = {names[t]: float(len(by_name[t].splits["train"])) for t in trained}
    forms.add_mixture(f"{name}_train", list(sizes), lambda n: sizes[n])
  if tested:
    forms.add_mixture(f"{name}_test", [names[t] for t in tested],
                      benchmark=scoring.Benchmark(name))
  logging.info("registered %s: %d tasks from %s (%s)", name, len(tasks), folder,
               ", ".join(mixtures))
  return list(names.values())
