"""How a task is scored, and how a benchmark's task scores add up to its headline.

A task declares its scoring on the seqio.Task, as SeqIO and t5x expect
(`forms.add_task(..., metric_fns=..., postprocess_fn=...)`):

  metric_fns      SeqIO metric functions, {name: value} each. The argument names
                  choose the scoring mode, SeqIO's rule:
                    fn(targets, predictions)  generation: the evaluator decodes
                        greedily; predictions are strings.
                    fn(targets, scores)       rank classification: the evaluator
                        scores every answer choice by its summed log-likelihood;
                        scores[i] is example i's list of choice scores.
  postprocess_fn  fn(output, example=None, is_target=False), SeqIO's signature.
                  Targets become what the metrics compare with (`label`: the
                  index of the correct choice; `references`: every acceptable
                  output); predictions pass through.

Rank classification needs each example's `answer_choices` and `label`, task
features every task has (forms.METADATA_FEATURES). hypert5.eval groups the
choices of a task's examples by few-shot set, so phi is generated once per set.

A mixture declares its `Benchmark` (`forms.add_mixture(..., benchmark=...)`):
its name, its evaluation split and how per-task scores become the groups and
the average of the results table (P3: ANLI rounds, then datasets; MetaICL:
seeds, then tasks). A mixture that declares none is averaged over its tasks.

This module imports neither TensorFlow nor SeqIO.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from hypert5.text import metrics

PerTask = Mapping[str, Mapping[str, float]]  # task (without form suffix) -> {metric: value}


def _text(value) -> str:
  return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def references(output, example: Mapping[str, Any] | None = None, is_target: bool = False):
  """postprocess_fn of generation tasks: a target is the list of the example's
  references (S-NI keeps several); a prediction is the decoded string."""
  if not is_target:
    return output
  if example is None or "references" not in example:
    return [_text(output)]
  value = example["references"]
  if isinstance(value, (bytes, str)):
    value = [value]
  return [_text(v) for v in value]


def label(output, example: Mapping[str, Any] | None = None, is_target: bool = False):
  """postprocess_fn of rank-classification tasks: a target is the index of the
  correct answer choice; a prediction is passed through."""
  if not is_target:
    return output
  if example is None or "label" not in example:
    raise ValueError("rank classification needs the example's label")
  return int(example["label"])


RANK_ACCURACY = dict(metric_fns=(metrics.rank_classification_accuracy,), postprocess_fn=label)


def generation(*metric_fns: Callable) -> dict:
  """add_task keyword arguments of a task scored by generation with `metric_fns`."""
  return dict(metric_fns=tuple(metric_fns), postprocess_fn=references)


def is_score_metric(fn: Callable) -> bool:
  """True for fn(targets, scores) (rank classification), False for fn(targets,
  predictions) (generation); anything else is an error (SeqIO's rule)."""
  params = tuple(key for key, param in inspect.signature(fn).parameters.items()
                 if param.default is inspect.Parameter.empty
                 and param.kind == inspect.Parameter.POSITIONAL_OR_KEYWORD)
  if params == ("targets", "scores"):
    return True
  if params == ("targets", "predictions"):
    return False
  raise ValueError(f"metric function {getattr(fn, '__name__', fn)!r} takes {params}; a "
                   "metric takes (targets, predictions) or (targets, scores)")


# ---------------------------------------------------------------------------
# Benchmarks: mixture-level aggregation.


def mean_over_tasks(per_task: PerTask) -> dict:
  """One group per task (its first metric), and their mean."""
  groups = {task: float(next(iter(values.values()))) for task, values in per_task.items()}
  return {"groups": groups, "average": float(np.mean(list(groups.values())))}


@dataclasses.dataclass(frozen=True)
class Benchmark:
  """How the results of an evaluation mixture are summarized.

  aggregate: per-task scores (task names without their form suffix) ->
    {"groups": {column: value}, "average": value, ...extra headline numbers}.
  split: the split its tasks are evaluated on.
  table_groups: results.md has a column per group (when at most 12); else averages only.
  table_extras: (label, key) of extra numbers printed beside the average,
    e.g. ("EM", "exact_match") -> "41.2 (EM 30.1)".
  """
  name: str
  aggregate: Callable[[PerTask], dict] = mean_over_tasks
  split: str = "test"
  table_groups: bool = True
  table_extras: tuple[tuple[str, str], ...] = ()


_BY_MIXTURE: dict[str, Benchmark] = {}


def set_benchmark(mixture: str, benchmark: Benchmark) -> None:
  """Declares the benchmark of a registered mixture name (one form)."""
  _BY_MIXTURE[mixture] = benchmark


def benchmark_of(mixture: str) -> Benchmark:
  """The mixture's declared benchmark, or a plain average over its tasks."""
  return _BY_MIXTURE.get(mixture) or Benchmark(name=mixture)


def find(name: str) -> Benchmark:
  """A declared benchmark by its name (as results.json records it), or the default."""
  for benchmark in _BY_MIXTURE.values():
    if benchmark.name == name:
      return benchmark
  return Benchmark(name=name)


def check_declared(tasks: Sequence) -> None:
  """Raises ValueError naming the first task without metric functions."""
  for task in tasks:
    if not task.metric_fns:
      raise ValueError(f"task {task.name!r} declares no metric_fns, so it cannot be "
                       "evaluated (see tasks/scoring.py)")
