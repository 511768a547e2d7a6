"""The embedded few-shot benchmark: generated tasks that only their examples reveal.

Each task is a rule from embedded_rules.py (e.g. "the line contains 'love' or
'death'") and a verbalizer: two label words drawn from a pool of common words,
shown as options after the line, e.g.

  input:  "What light through yonder window breaks? Options: tiger, candle"
  output: "candle"

Why zero-shot is at chance by construction: every rule instance yields two
mirrored tasks with the same inputs (and the same options, in the same order)
but opposite label words. A model that does not read the few-shot examples
gives the same answer to a query in both mirrors, so it is right in exactly one
of them: its accuracy over a mirrored pair is exactly 50%, whatever it learned.
The same holds for a shared prefix. Reading the examples is the only way up.

Why held-out tasks test reading rather than memory: the held-out label words,
keywords and start words come from pools disjoint from the training tasks'
(and no held-out label word occurs anywhere in a training task); held-out lines
come from the validation works of the corpus.

Why it is learnable by a tiny model: inputs are short (lines of 4-10 words and
at most 18 tokens, plus the options), classes are balanced, the rules are surface
features, and the options are in the input, so the downstream model can copy
the answer instead of having to produce a word it never saw as a label.

Defaults (`BenchmarkConfig`): 160 training rules -> 320 training tasks of 96
examples (48 per class); 16 held-out rules (two of each family) -> 32 held-out
tasks, each with a fixed set of 16 few-shot examples (8 per class, in a fixed
random order), 64 test queries (32 per class) and a 'train' split of 32 more
examples (16 per class) for fine-tuning on the task itself (paper section 6).
Pools: 98 label words (24 held out), 55 keywords (8 held out), 39 start words
(6 held out). Inputs are 10-28 tokens of the embedded vocabulary (median 18); a
held-out context of 16 examples is about 400 tokens. Everything follows from
the seed. The mirrored pairs, the held-out split of a pool and the SeqIO tasks
are embedded.py's; the benchmark and its control are named in
embedded_benchmarks.py.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
from collections.abc import Sequence

import numpy as np
import sentencepiece as spm

from hypert5_tasks import embedded, embedded_corpus, fewshot, sources
from hypert5_tasks import embedded_rules as rules_lib
from hypert5_tasks import records as records_lib
from hypert5_tasks import vocab as vocab_lib

NAME = "embedded_fewshot"
MAX_LINE_TOKENS = 18


@dataclasses.dataclass(frozen=True)
class BenchmarkConfig:
  name: str = NAME  # prefix of its SeqIO task and mixture names
  families: tuple[str, ...] = rules_lib.FAMILIES  # taken in turn by the rules
  # None: each task draws its two label words (held-out tasks from the held-out
  # pool), so the answer is copied from the options. A pair: every task answers
  # with these two words (the mirrors swap them), and no label word is held out.
  fixed_choices: tuple[str, str] | None = None
  show_options: bool = True  # "{line} Options: {w0}, {w1}"; False: the line alone
  seed: int = 0
  num_train_rules: int = 160
  num_heldout_rules: int = 16  # two of each family
  train_examples_per_class: int = 48
  heldout_shots_per_class: int = 8
  heldout_queries_per_class: int = 32
  heldout_train_per_class: int = 16
  num_heldout_label_words: int = 24
  num_heldout_keywords: int = 8
  num_heldout_start_words: int = 6

  @property
  def num_shots(self) -> int:
    """Examples in a held-out task's few-shot set."""
    return 2 * self.heldout_shots_per_class


@dataclasses.dataclass(frozen=True)
class VerseExample(embedded.Example):
  line: str  # the verse line it was made from


@dataclasses.dataclass(frozen=True)
class TrainTask:
  name: str
  rule: rules_lib.Rule
  choices: tuple[str, str]
  orientation: int  # class c is answered by choices[c ^ orientation]
  examples: tuple[VerseExample, ...]


@dataclasses.dataclass(frozen=True)
class HeldoutTask(embedded.HeldoutTask):
  """A held-out task (class c is answered by choices[c ^ orientation])."""
  choices: tuple[str, str]


@dataclasses.dataclass(frozen=True)
class Benchmark:
  config: BenchmarkConfig
  train_tasks: tuple[TrainTask, ...]
  heldout_tasks: tuple[HeldoutTask, ...]
  heldout_label_words: frozenset[str]
  heldout_keywords: frozenset[str]
  heldout_start_words: frozenset[str]


class _LineIndex:
  """Usable lines of one corpus split, unique by text, with lookups per rule family.

  Lines longer than MAX_LINE_TOKENS pieces of the embedded vocabulary (4 more
  with the speaker's name) are left out, so an input with its options stays
  under 32 tokens.
  """

  def __init__(self, split: str):
    pieces = spm.SentencePieceProcessor(model_file=str(vocab_lib.EMBEDDED_VOCAB_PATH))
    self.lines = []
    self.by_word = collections.defaultdict(set)
    self.by_first = collections.defaultdict(set)
    self._candidates = {}
    seen = set()
    for work in embedded_corpus.works_in(split):
      for line in embedded_corpus.verse_lines(work):
        words = rules_lib.words_of(line.text)
        if line.text in seen or not rules_lib.usable(line, words):
          continue
        with_speaker = f"{line.speaker}: {line.text}" if line.speaker else line.text
        if (len(pieces.encode(line.text)) > MAX_LINE_TOKENS
            or len(pieces.encode(with_speaker)) > MAX_LINE_TOKENS + 4):
          continue
        seen.add(line.text)
        for word in words:
          self.by_word[word].add(len(self.lines))
        self.by_first[rules_lib.first_word(line.text)].add(len(self.lines))
        self.lines.append(line)

  def candidates(self, rule: rules_lib.Rule) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Line ids that can be class 0 / class 1 examples of `rule`, sorted."""
    if rule not in self._candidates:
      self._candidates[rule] = self._find_candidates(rule)
    return self._candidates[rule]

  def _find_candidates(self, rule: rules_lib.Rule) -> tuple[tuple[int, ...], tuple[int, ...]]:
    if rule.family == "keyword":
      a, b = (self.by_word.get(w, set()) for w in rule.params)
      return tuple(sorted(a - b)), tuple(sorted(b - a))
    if rule.family == "starts_with":
      zero = self.by_first.get(rule.params[0], set())
      return tuple(sorted(zero)), tuple(i for i in range(len(self.lines)) if i not in zero)
    by_class = ([], [])
    for i, line in enumerate(self.lines):
      for c in rule.classes(line):
        by_class[c].append(i)
    return tuple(by_class[0]), tuple(by_class[1])

  def has(self, rule: rules_lib.Rule, per_class: int) -> bool:
    zero, one = self.candidates(rule)
    if rule.family in ("speaker", "constant"):  # both classes share one pool
      return len(zero) >= 2 * per_class
    return min(len(zero), len(one)) >= per_class

  def sample(self, rule: rules_lib.Rule, per_class: int,
             rng: np.random.Generator) -> list[tuple[embedded_corpus.VerseLine, int]]:
    """per_class distinct lines of each class, as (line, class), in random order.

    For the constant family the "classes" are two halves of one pool, both of
    label 0 (`_examples` answers them alike); they keep shots and queries split
    as for the other families."""
    zero, one = self.candidates(rule)
    if rule.family in ("speaker", "constant"):
      picked = rng.choice(len(zero), size=2 * per_class, replace=False)
      chosen = [(zero[i], c) for c, half in enumerate((picked[:per_class], picked[per_class:]))
                for i in half]
    else:
      chosen = [(pool[i], c) for c, pool in enumerate((zero, one))
                for i in rng.choice(len(pool), size=per_class, replace=False)]
    order = rng.permutation(len(chosen))
    return [(self.lines[chosen[i][0]], chosen[i][1]) for i in order]


def _render_input(rule, line, label, choices, show_options: bool) -> str:
  if not show_options:
    return rule.render(line, label)
  # Each option follows a space, so it tokenizes exactly as the output word does.
  return f"{rule.render(line, label)} Options: {choices[0]}, {choices[1]}"


def _examples(rule, sampled, choices, orientation, show_options) -> tuple[VerseExample, ...]:
  label = lambda c: (0 if rule.family == "constant" else c) ^ orientation
  return tuple(VerseExample(input=_render_input(rule, line, c, choices, show_options),
                            output=choices[label(c)], choices=choices, label=label(c),
                            line=line.text)
               for line, c in sampled)


def _draw_rule(family: str, keywords: Sequence[str], start_words: Sequence[str],
               index: _LineIndex, per_class: int, rng: np.random.Generator,
               exclude=frozenset()) -> rules_lib.Rule:
  """A rule of `family`, parameters from the given pools, with enough lines, not in `exclude`.

  Non-parametric families are exempt from `exclude` (there is only one such rule).
  """
  for _ in range(1000):
    if family == "keyword":
      rule = rules_lib.Rule(family, tuple(str(w) for w in rng.choice(keywords, 2, replace=False)))
    elif family == "starts_with":
      rule = rules_lib.Rule(family, (str(rng.choice(start_words)),))
    elif family == "length":
      rule = rules_lib.Rule(family, (int(rng.choice(rules_lib.LENGTH_THRESHOLDS)),))
    else:
      rule = rules_lib.Rule(family)
    if (not rule.params or rule not in exclude) and index.has(rule, per_class):
      return rule
  raise ValueError(f"no {family} rule with {per_class} lines per class")


def _train_mirrors(base: str, rule, choices, sampled, show_options) -> tuple[TrainTask, ...]:
  return tuple(TrainTask(name, rule, choices, o, _examples(rule, sampled, choices, o, show_options))
               for o, name in enumerate(embedded.mirror_names(base)))


def _heldout_mirrors(base: str, rule, choices, queries, shots, train,
                     show_options) -> tuple[HeldoutTask, ...]:
  examples = functools.partial(_examples, rule, choices=choices, show_options=show_options)
  return tuple(HeldoutTask(name, rule, shots=examples(shots, orientation=o),
                           queries=examples(queries, orientation=o),
                           train_examples=examples(train, orientation=o), choices=choices)
               for o, name in enumerate(embedded.mirror_names(base)))


def generate(config: BenchmarkConfig = BenchmarkConfig()) -> Benchmark:
  """The benchmark for `config`: the same tasks and examples on every call and machine."""
  return _generate(config)


@functools.cache  # keyed by the config alone, however generate() was called
def _generate(config: BenchmarkConfig) -> Benchmark:
  rules_lib.check_pools()
  train_index, heldout_index = _LineIndex("train"), _LineIndex("validation")
  rng = np.random.default_rng([config.seed, 0])
  heldout_need = (config.heldout_shots_per_class + config.heldout_queries_per_class
                  + config.heldout_train_per_class)

  heldout_labels, train_labels = embedded.hold_out(
      rules_lib.LABEL_WORDS, config.num_heldout_label_words, rng)
  if config.fixed_choices is not None:
    if not set(config.fixed_choices) <= set(rules_lib.LABEL_WORDS):
      raise ValueError(f"fixed_choices {config.fixed_choices}: both must be label words "
                       "(single pieces of the vocabulary, never in an input line)")
    heldout_labels = train_labels = list(config.fixed_choices)

  def draw_choices(pool, task_rng) -> tuple[str, str]:
    if config.fixed_choices is not None:
      return tuple(config.fixed_choices)
    return tuple(str(w) for w in task_rng.choice(pool, size=2, replace=False))
  heldout_keywords, train_keywords = embedded.hold_out(
      rules_lib.KEYWORDS, config.num_heldout_keywords, rng,
      # A keyword needs `heldout_need` lines without the rule's other keyword; a
      # few spare lines make that likely (_draw_rule checks).
      lambda w: len(heldout_index.by_word.get(w, ())) >= heldout_need + 12)
  heldout_starts, train_starts = embedded.hold_out(
      rules_lib.START_WORDS, config.num_heldout_start_words, rng,
      lambda w: len(heldout_index.by_first.get(w, ())) >= 2 * heldout_need)

  train_tasks = []
  for i in range(config.num_train_rules):
    task_rng = np.random.default_rng([config.seed, 1, i])
    family = config.families[i % len(config.families)]
    rule = _draw_rule(family, train_keywords, train_starts, train_index,
                      config.train_examples_per_class, task_rng)
    choices = draw_choices(train_labels, task_rng)
    sampled = train_index.sample(rule, config.train_examples_per_class, task_rng)
    train_tasks += _train_mirrors(f"{config.name}.train_{i:03d}", rule, choices, sampled,
                                  config.show_options)

  heldout_tasks, heldout_rules = [], set()
  for j in range(config.num_heldout_rules):
    task_rng = np.random.default_rng([config.seed, 2, j])
    family = config.families[j % len(config.families)]
    rule = _draw_rule(family, heldout_keywords, heldout_starts, heldout_index, heldout_need,
                      task_rng, exclude=heldout_rules)
    heldout_rules.add(rule)
    choices = draw_choices(heldout_labels, task_rng)
    sampled = heldout_index.sample(rule, heldout_need, task_rng)
    # Shots, queries and training examples are disjoint lines, each part balanced.
    shots, queries, train, taken = [], [], [], collections.Counter()
    query_end = config.heldout_shots_per_class + config.heldout_queries_per_class
    for line, c in sampled:
      taken[c] += 1
      part = (shots if taken[c] <= config.heldout_shots_per_class
              else queries if taken[c] <= query_end else train)
      part.append((line, c))
    heldout_tasks += _heldout_mirrors(f"{config.name}.heldout_{j:02d}", rule, choices, queries,
                                      shots, train, config.show_options)

  return Benchmark(config=config, train_tasks=tuple(train_tasks),
                   heldout_tasks=tuple(heldout_tasks),
                   heldout_label_words=frozenset(
                       () if config.fixed_choices is not None else heldout_labels),
                   heldout_keywords=frozenset(heldout_keywords),
                   heldout_start_words=frozenset(heldout_starts))


def heldout_families(config: BenchmarkConfig) -> dict[str, str]:
  """The held-out tasks' names and families, in order, known without generating them."""
  return {name: config.families[j % len(config.families)]
          for j in range(config.num_heldout_rules)
          for name in embedded.mirror_names(f"{config.name}.heldout_{j:02d}")}


# ---------------------------------------------------------------------------
# SeqIO tasks: `{name}.train` holds all training tasks, whose contexts are drawn
# within each task (grouped by task_name); each held-out task is its own SeqIO task.


def _train_reader(config: BenchmarkConfig):
  def read(split, shuffle, seed, shard):
    del split  # the only split
    tasks = shard.slice(generate(config).train_tasks)  # whole tasks per host
    records = [records_lib.make_record(t.name, e.input, e.output, answer_choices=t.choices,
                                       label=e.label)
               for t in tasks for e in t.examples]
    return records_lib.records_dataset(records, shuffle, seed)
  return read


def register(config: BenchmarkConfig) -> None:
  """Registers the training task, the held-out tasks and the mixtures; generates nothing."""
  embedded.register(
      config.name,
      sources.ReaderSource(_train_reader(config), ("train",), "embedded few-shot training tasks"),
      list(heldout_families(config)), lambda: generate(config).heldout_tasks,
      train_preprocessors=[functools.partial(fewshot.draw_within_task,
                                             num_shots=fewshot.NUM_SHOTS)])
