"""What the generated embedded benchmarks share: examples, mirrored held-out tasks, held-out
words and their SeqIO tasks. The generators (embedded_icl.py, embedded_fewshot.py) make the
tasks; embedded_benchmarks.py names the benchmarks.

Why mirrors: every held-out task comes as two, `{base}_m0` and `{base}_m1`, with the same
queries and the same two answer choices per query but opposite answers. Scored by rank
classification, a model that does not read the few-shot examples ranks a query's choices the
same way in both mirrors, so it is right in exactly one of them: 50% over every mirrored pair,
whatever it learned. Reading the examples is the only way up.

Why held-out words: a pool of words is split once into held-out and training words, and
held-out tasks are made of held-out words only, so they test reading, not memory.

SeqIO, for a benchmark named N (each task and mixture in the three forms of forms.py):
  N.train               its training records (the generator says how contexts come)
  N.{task}              one per held-out task: its test queries, and a train split for
                        fine-tuning on the task, each with the task's fixed few-shot set
  N.instructed_{task}   the same with the task's rule said outright before x (xonly form;
                        generators that can say their rules)
  mixtures N_train, N_test and N_instructed_test, each test mixture declaring
  `BENCHMARK`: accuracy per held-out task and their mean.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np
import seqio

from hypert5.text import prompts
from hypert5_tasks import forms, scoring, sources, vocab
from hypert5_tasks import records as records_lib

BENCHMARK = scoring.Benchmark("embedded")
T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Example:
  input: str
  output: str
  choices: tuple[str, str]  # the two answers of the mirrored pair, in a fixed order
  label: int  # index of `output` in `choices`


@dataclasses.dataclass(frozen=True)
class HeldoutTask:
  """A held-out task: its rule (the generator's), a fixed few-shot set, test queries and
  examples for fine-tuning on the task (paper section 6)."""
  name: str
  rule: Any  # has a `family`
  shots: tuple[Example, ...]
  queries: tuple[Example, ...]
  train_examples: tuple[Example, ...]

  @property
  def family(self) -> str:
    return self.rule.family

  @property
  def orientation(self) -> int:
    """Which of its mirrored pair it is: 0 or 1, as its name ends."""
    return int(self.name[-1])

  @property
  def mirror_name(self) -> str:
    return mirror_name(self.name)


def mirror_names(base: str) -> tuple[str, str]:
  """The names of the two mirrors of a task."""
  return f"{base}_m0", f"{base}_m1"


def mirror_name(name: str) -> str:
  """The other task of `name`'s mirrored pair."""
  return name[:-1] + str(1 - int(name[-1]))


def hold_out(pool: Sequence[T], count: int, rng: np.random.Generator,
             eligible: Callable[[T], bool] = lambda _: True) -> tuple[list[T], list[T]]:
  """(held-out, training) words of a pool: `count` random eligible words are held out, the
  rest (in pool order) are for training."""
  shuffled = [pool[i] for i in rng.permutation(len(pool))]
  heldout = [w for w in shuffled if eligible(w)][:count]
  if len(heldout) < count:
    raise ValueError(f"only {len(heldout)} words of the pool can be held out; {count} are wanted")
  return heldout, [w for w in pool if w not in heldout]


def format_context(examples: Sequence[Example]) -> list[str]:
  """A few-shot set as the context segments of a record."""
  return [prompts.format_pair(e.input, e.output) for e in examples]


def train_task_name(name: str) -> str:
  return f"{name}.train"


def train_mixture_name(name: str) -> str:
  return f"{name}_train"


def test_mixture_name(name: str) -> str:
  return f"{name}_test"


def instructed_mixture_name(name: str) -> str:
  """The held-out tasks with their rule said outright before x (xonly form): what the
  frozen downstream model does when told the task, the most a PEFT form can elicit."""
  return f"{name}_instructed_test"


def _instructed_task_name(task: str) -> str:
  return task.replace(".", ".instructed_", 1)


HeldoutTasks = Callable[[], Sequence[HeldoutTask]]
Instruct = Callable[[Any, str], str]  # (rule, x) -> the input with the rule said outright


def _heldout_reader(heldout_tasks: HeldoutTasks, index: int, instruct: Instruct | None = None):
  def read(split, shuffle, seed, shard):
    task = heldout_tasks()[index]
    context = format_context(task.shots)
    examples = task.train_examples if split == "train" else task.queries
    records = [records_lib.make_record(
        task.name, instruct(task.rule, e.input) if instruct else e.input, e.output,
        answer_choices=e.choices, label=e.label, context=context)
               for e in shard.slice(examples)]
    if split == "train":  # fine-tuning data; evaluation order is fixed
      return records_lib.records_dataset(records, shuffle, seed)
    return records_lib.records_dataset(records)
  return read


def register(name: str, train_source: seqio.DataSource, heldout_names: Sequence[str],
             heldout_tasks: HeldoutTasks, *, train_preprocessors: Sequence[Callable] = (),
             instruct: Instruct | None = None) -> None:
  """Registers a generated benchmark's tasks and mixtures (the module docstring's names).

  heldout_names: known without generating the benchmark; heldout_tasks() generates it,
  when a held-out task's data is first read, and gives its tasks in that order.
  train_preprocessors: e.g. drawing contexts within a training task.
  instruct: the instructed tasks' input; None: no instructed tasks.
  Every task is scored by rank classification over its examples' two choices.
  """
  vocabulary = vocab.embedded_vocabulary()
  forms.add_task(train_task_name(name), train_source, vocabulary,
                 context_preprocessors=train_preprocessors, **scoring.RANK_ACCURACY)
  for index, task in enumerate(heldout_names):
    forms.add_task(task, sources.ReaderSource(_heldout_reader(heldout_tasks, index),
                                              ("train", "test"), f"embedded held-out task {task}"),
                   vocabulary, **scoring.RANK_ACCURACY)
  if instruct is not None:
    for index, task in enumerate(heldout_names):
      forms.add_task(_instructed_task_name(task), sources.ReaderSource(
          _heldout_reader(heldout_tasks, index, instruct), ("train", "test"),
          f"embedded held-out task {task}, instructed"), vocabulary, forms=("xonly",),
                     **scoring.RANK_ACCURACY)
    forms.add_mixture(instructed_mixture_name(name),
                      [_instructed_task_name(task) for task in heldout_names], forms=("xonly",),
                      benchmark=BENCHMARK)
  forms.add_mixture(train_mixture_name(name), [train_task_name(name)])
  forms.add_mixture(test_mixture_name(name), heldout_names, benchmark=BENCHMARK)
