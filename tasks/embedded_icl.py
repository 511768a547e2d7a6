"""The embedded in-context benchmark: short symbolic tasks that only their examples define.

The default benchmark of the demo. A task maps an input x (one or two words)
to an output y (one word); its examples are the only place that says how.
Five families, from the label prior up to answers that depend on the query
and the examples together:

  constant(w)          y is always the word w, whatever x is
  pick(t)              x is a key and a value word, in either order; y is the
                       one of type t (key, or value: a marked word): a choice
                       the examples make
  select(p)            x is two keys; y is the one at position p (first or
                       last): a transform the examples choose, read off the
                       examples by matching y with x, whatever the words are
  attribute(a)         x is a key; y is its attribute a (of two, "left" and
                       "right": fixed facts about every key, known to the
                       downstream model; left ones carry the first mark, right
                       ones the second), a transform the examples choose
  classify(w_u, w_d)   x is a key; y is w_u when the key is of the "up" group,
                       w_d when it is "down" (a label mapping over a feature
                       the model knows: every key's group is fixed)
  match(w_t, w_o)      x is two keys; y is w_t when they are the same key
                       ("twice"), w_o when they differ ("once"): a label
                       mapping over a feature the model sees
  lookup(m)            x is one of four keys; y is its value under a mapping m
                       of those keys to four values (a lookup that only the
                       examples define)

Why every example-blind system is at chance by construction: each held-out
task comes as two mirrors (`_m0`, `_m1`; embedded.py) with the same queries
and the same two answer choices per query but opposite answers (the other
answer word, type or attribute, a deranged mapping), so a model that does not
read the examples is right in exactly one of them.

Why values carry a mark: a value is a noun with one of two marks, each its own
piece ("gold" + "ing", "crow" + "ed"), and a key's left attribute always
carries the first, its right one the second. So the choice a pick or
attribute task makes shows in the form of its outputs, and a hypermodel can
read it off the examples of words it has never seen. Without the marks (every
word one piece), HyperT5 read pick and attribute on new tasks over training
words (95 and 76%) but not over held-out ones (50 and 54%): what type a word
is, or which fact, was knowledge of each word that its MTF never showed it
(docs/demo.md, "Reading held-out words").

Why held-out tasks test generalization, not memory: keys and values are split
into training and held-out pools; held-out tasks use held-out words only, so
no held-out answer word, key or mapping ever occurs in a training task (a held-out
key's attributes are held-out values).

Why a frozen downstream model can be steered to do them: its pretraining
(`embedded_icl_skills`) is the same families with the rule said outright,
"left : : x" or "x : left", over every word (held-out ones included): it
gives the model the skills (a key's group and attributes, picking a word by
its type, saying a word, recall of a value from pairs in its input). The
instruction stands before or after x, one to three ":" apart, so the model
finds it by what it says, not where it stands; a prefix or LoRA update, which
have no position, then only have to stand in for the instruction, the way
PEFT on a real LM-adapted T5 elicits skills the model already has. Held-out
tasks also exist in that instructed form (`embedded_icl_instructed_test`): what
the frozen model does when told the rule.

Training tasks are fresh for every record: each record is a new task of a
random family with its own few-shot context (`num_shots` examples of the same
task), so MTF sees as many distinct tasks as examples (task diversity past
the memorization regime).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import re

import numpy as np
import sentencepiece as spm

from hypert5_tasks import embedded, embedded_rules, forms, scoring, sources
from hypert5_tasks import records as records_lib
from hypert5_tasks import vocab as vocab_lib

NAME = "embedded_icl"
# Every family, in the order that seeds their held-out tasks. FAMILIES: the default
# benchmark's. select and match are options (BenchmarkConfig(families=...)): with
# them the demo's HyperT5 read neither and read the others less (docs/demo.md).
ALL_FAMILIES = ("constant", "pick", "attribute", "classify", "lookup", "select", "match")
FAMILIES = ("constant", "pick", "attribute", "classify", "lookup")
LOOKUP_KEYS = 4
TYPE_WORDS = ("word", "thing")  # pick: keys are type 0, values type 1
ATTRIBUTE_WORDS = ("left", "right")
GROUP_WORDS = ("up", "down")
POSITION_WORDS = ("first", "last")  # select
MATCH_WORDS = ("twice", "once")  # match: the same key twice, or two keys once each
INSTRUCTION_WORDS = (("say", "take") + TYPE_WORDS + ATTRIBUTE_WORDS + GROUP_WORDS +
                     POSITION_WORDS + MATCH_WORDS)
MAX_KEYS = 128
# A value is a noun with one of two marks, each its own piece ("bell" + "ing": two
# pieces): what type a word is, and which of a key's attributes it is, shows in
# its form, so reading it off examples does not need to know the word.
VALUE_MARKS = ("ing", "ed")


def _vocabulary_words() -> tuple[str, ...]:
  """Lower-case words of at least 3 letters that are single pieces of the embedded vocabulary."""
  pieces = spm.SentencePieceProcessor(model_file=str(vocab_lib.EMBEDDED_VOCAB_PATH))
  return tuple(p[1:] for p in map(pieces.id_to_piece, range(pieces.get_piece_size()))
               if re.fullmatch("\u2581[a-z]{3,}", p))


@functools.cache
def word_pools() -> tuple[tuple[str, ...], tuple[str, ...]]:
  """(keys, values): disjoint pools of words, in vocabulary order.

  Values are concrete nouns (the old benchmark's label words), each with a
  mark (VALUE_MARKS, alternately); keys are the next most frequent
  single-piece words, never a noun or a format word.
  """
  words = _vocabulary_words()
  nouns = tuple(w for w in words if w in set(embedded_rules.LABEL_WORDS))
  reserved = set(nouns) | set(INSTRUCTION_WORDS) | {"input", "output", "options", "definition"}
  keys = tuple(w for w in words if w not in reserved)[:MAX_KEYS]
  values = tuple(w + VALUE_MARKS[i % 2] for i, w in enumerate(nouns))
  return keys, values


@functools.cache
def value_class(value: str) -> int:
  """0 or 1: the mark a value carries (VALUE_MARKS), every other noun in vocabulary order."""
  return dict(zip(word_pools()[1], itertools.cycle((0, 1))))[value]


@functools.cache
def _value_set() -> frozenset[str]:
  return frozenset(word_pools()[1])


@functools.cache
def _as_dict(pairs: tuple) -> dict:
  return dict(pairs)


@dataclasses.dataclass(frozen=True)
class BenchmarkConfig:
  name: str = NAME  # prefix of its SeqIO task and mixture names
  families: tuple[str, ...] = FAMILIES
  seed: int = 0
  num_shots: int = 8  # examples in a context (training and held-out)
  rules_per_family: int = 4  # held-out rules per family, each as two mirrors
  heldout_queries: int = 64  # test queries per held-out task
  heldout_train: int = 32  # examples of a held-out task for fine-tuning on it (section 6)
  num_keys: int = 128  # key pool size (the first keys of word_pools())
  num_heldout_keys: int = 32
  num_heldout_values: int = 24
  num_train_tasks: int = 32_768  # MTF: one fresh task per record (its context and one query)
  num_skill_examples: int = 65_536  # the downstream model's pretraining (instructed)

  def __post_init__(self):
    unknown = [f for f in self.families if f not in ALL_FAMILIES]
    if unknown:
      raise ValueError(f"unknown family {unknown[0]!r}; families: {', '.join(ALL_FAMILIES)}")
    if not self.num_heldout_keys < self.num_keys <= MAX_KEYS:
      raise ValueError(f"num_keys={self.num_keys}: must be above num_heldout_keys="
                       f"{self.num_heldout_keys} and at most {MAX_KEYS} (word_pools())")


@dataclasses.dataclass(frozen=True)
class Rule:
  """A task: a family and its parameters (words, a position, a mapping)."""
  family: str
  params: tuple

  def answer(self, x: tuple[str, ...]) -> str:
    if self.family == "constant":
      return self.params[0]
    if self.family == "classify":
      return self.params[key_group(x[0])]
    if self.family == "pick":
      return x[0] if (x[0] in _value_set()) == bool(self.params[0]) else x[1]
    if self.family == "select":
      return x[self.params[0]]
    if self.family == "match":
      return self.params[int(x[0] != x[1])]
    if self.family == "attribute":  # params: (a, the mirror's a, the facts)
      return _as_dict(self.params[2])[x[0]][self.params[0]]
    if self.family == "lookup":
      return dict(self.params)[x[0]]
    raise ValueError(f"unknown family {self.family!r}; families: {', '.join(ALL_FAMILIES)}")

  def mirror(self) -> Rule:
    """The rule that answers every query of this one with the other choice."""
    if self.family == "constant":
      return Rule("constant", (self.params[1], self.params[0]))
    if self.family in ("classify", "match"):
      return Rule(self.family, (self.params[1], self.params[0]))
    if self.family in ("pick", "select", "attribute"):
      return Rule(self.family, (self.params[1], self.params[0]) + self.params[2:])
    # Values swapped in pairs: a derangement that is its own inverse, so the
    # mirror's mirror is the rule again and both give a query the same choices.
    keys = [k for k, _ in self.params]
    values = [v for _, v in self.params]
    swapped = [values[i ^ 1] for i in range(len(values))]
    return Rule("lookup", tuple(zip(keys, swapped)))

  def instruction(self) -> str:
    """The rule said outright: what the downstream model reads in pretraining."""
    if self.family == "constant":
      return f"say {self.params[0]}"
    if self.family == "classify":
      return f"{GROUP_WORDS[0]} {self.params[0]} {GROUP_WORDS[1]} {self.params[1]}"
    if self.family == "pick":
      return f"take {TYPE_WORDS[self.params[0]]}"
    if self.family == "select":
      return f"take {POSITION_WORDS[self.params[0]]}"
    if self.family == "match":
      return f"{MATCH_WORDS[0]} {self.params[0]} {MATCH_WORDS[1]} {self.params[1]}"
    if self.family == "attribute":
      return ATTRIBUTE_WORDS[self.params[0]]
    return " ".join(f"{k} {v}" for k, v in self.params)


@functools.cache
def _key_groups() -> dict[str, int]:
  keys, _ = word_pools()
  order = np.random.default_rng(1).permutation(len(keys))
  return {keys[i]: int(rank % 2) for rank, i in enumerate(order)}


def key_group(key: str) -> int:
  """0 ("up") or 1 ("down"): a fixed property of every key, half the keys each."""
  return _key_groups()[key]


@dataclasses.dataclass(frozen=True)
class Pools:
  keys: tuple[str, ...]
  values: tuple[str, ...]
  facts: tuple = ()  # ((key, (left, right)), ...): each key's attributes, values of this pool

  def __add__(self, other: Pools) -> Pools:
    return Pools(self.keys + other.keys, self.values + other.values, self.facts + other.facts)

  def group(self, g: int) -> tuple[str, ...]:
    return _group_of_pool(self.keys, g)


@functools.cache
def _group_of_pool(keys: tuple[str, ...], g: int) -> tuple[str, ...]:
  return tuple(k for k in keys if key_group(k) == g)


def _distinct(pool: tuple, count: int, rng: np.random.Generator) -> list:
  return [pool[i] for i in rng.choice(len(pool), count, replace=False)]


def _draw_rule(family: str, pools: Pools, rng: np.random.Generator) -> Rule:
  """A rule of `family` with parameters from `pools`.

  Parameters come in pairs so that `Rule.mirror` is defined: constant and
  classify carry two answer words, pick two types, attribute two attributes.
  """
  if family in ("constant", "classify", "match"):
    return Rule(family, tuple(_distinct(pools.values, 2, rng)))
  if family in ("pick", "select", "attribute"):
    first = int(rng.integers(2))
    return Rule(family, (first, 1 - first) + ((pools.facts,) if family == "attribute" else ()))
  if family == "lookup":
    keys = _distinct(pools.keys, LOOKUP_KEYS, rng)
    values = _distinct(pools.values, LOOKUP_KEYS, rng)
    return Rule(family, tuple(zip(keys, values)))
  raise ValueError(f"unknown family {family!r}; families: {', '.join(ALL_FAMILIES)}")


def _draw_input(rule: Rule, pools: Pools, rng: np.random.Generator,
                group: int | None = None) -> tuple[str, ...]:
  if rule.family == "lookup":
    return (rule.params[rng.integers(LOOKUP_KEYS)][0],)
  if rule.family == "pick":
    pair = (pools.keys[rng.integers(len(pools.keys))],
            pools.values[rng.integers(len(pools.values))])
    return pair if rng.integers(2) else pair[::-1]
  if rule.family == "select":
    return tuple(_distinct(pools.keys, 2, rng))
  if rule.family == "match":  # group: 0 the same key twice, 1 two keys
    same = rng.integers(2) == 0 if group is None else group == 0
    pair = _distinct(pools.keys, 2, rng)
    return (pair[0], pair[0]) if same else tuple(pair)
  keys = pools.keys if group is None else pools.group(group)
  return (keys[rng.integers(len(keys))],)


def make_example(rule: Rule, x: tuple[str, ...]) -> embedded.Example:
  mirror = rule.mirror()
  choices = (rule.answer(x), mirror.answer(x))
  order = sorted(choices)  # both mirrors list the choices in the same order
  return embedded.Example(input=" ".join(x), output=choices[0], choices=tuple(order),
                          label=order.index(choices[0]))


def _draw_examples(rule: Rule, pools: Pools, count: int, rng: np.random.Generator,
                   balanced: bool = False) -> list[embedded.Example]:
  """count examples; balanced: inputs alternate between the key groups, lookup cycles its keys."""
  xs = []
  for i in range(count):
    if balanced and rule.family == "lookup":
      xs.append((rule.params[i % LOOKUP_KEYS][0],))
    else:
      xs.append(_draw_input(rule, pools, rng, group=i % 2 if balanced else None))
  return [make_example(rule, xs[i]) for i in rng.permutation(count)]


@dataclasses.dataclass(frozen=True)
class Benchmark:
  config: BenchmarkConfig
  train_pools: Pools
  heldout_pools: Pools
  heldout_tasks: tuple[embedded.HeldoutTask, ...]


def heldout_families(config: BenchmarkConfig) -> dict[str, str]:
  """The held-out tasks' names and families, family by family, known without generating them."""
  return {name: family for family in config.families for j in range(config.rules_per_family)
          for name in embedded.mirror_names(f"{config.name}.{family}_{j}")}


@functools.cache
def generate(config: BenchmarkConfig = BenchmarkConfig()) -> Benchmark:
  """The benchmark's pools and held-out tasks: the same on every call and machine."""
  keys, values = word_pools()
  rng = np.random.default_rng([config.seed, 0])
  heldout_keys, train_keys = embedded.hold_out(keys[:config.num_keys], config.num_heldout_keys,
                                               rng)
  heldout_values, train_values = embedded.hold_out(values, config.num_heldout_values, rng)
  def pools(keys, values):
    keys, values = tuple(sorted(keys)), tuple(sorted(values))
    # A key's left attribute is a value of the first mark, its right one of the second.
    by_class = [[v for v in values if value_class(v) == c] for c in (0, 1)]
    facts = tuple((k, tuple(c[rng.integers(len(c))] for c in by_class)) for k in keys)
    return Pools(keys, values, facts)
  heldout = pools(heldout_keys, heldout_values)
  train = pools(train_keys, train_values)
  tasks = []
  for family in config.families:
    for j in range(config.rules_per_family):
      task_rng = np.random.default_rng([config.seed, 1, ALL_FAMILIES.index(family), j])
      rule = _draw_rule(family, heldout, task_rng)
      shots = _draw_examples(rule, heldout, config.num_shots, task_rng, balanced=True)
      queries = _draw_examples(rule, heldout, config.heldout_queries, task_rng, balanced=True)
      train_examples = _draw_examples(rule, heldout, config.heldout_train, task_rng, balanced=True)
      names = embedded.mirror_names(f"{config.name}.{family}_{j}")
      for name, r in zip(names, (rule, rule.mirror())):
        # The mirror answers the same inputs the other way.
        remake = lambda exs, r=r: tuple(make_example(r, tuple(e.input.split())) for e in exs)
        tasks.append(embedded.HeldoutTask(name, r, remake(shots), remake(queries),
                                          remake(train_examples)))
  return Benchmark(config, train, heldout, tuple(tasks))


def sample_task(config: BenchmarkConfig, pools: Pools, rng: np.random.Generator,
                num_examples: int) -> tuple[Rule, list[embedded.Example]]:
  """A fresh task of a random family and `num_examples` of its examples.

  Lookup examples draw their keys so that the last one (the query) occurs
  among the others, as held-out queries occur among their shots."""
  family = config.families[int(rng.integers(len(config.families)))]
  rule = _draw_rule(family, pools, rng)
  examples = _draw_examples(rule, pools, num_examples, rng)
  if family == "lookup" and num_examples > 1:
    seen = {e.input for e in examples[:-1]}
    if examples[-1].input not in seen:
      ordered = sorted(seen)
      examples[-1] = make_example(rule, (ordered[rng.integers(len(ordered))],))
  return rule, examples


def _fresh_tasks(config: BenchmarkConfig, pools: Pools, stream: int, count: int,
                 num_examples: int):
  for i in range(count):
    yield sample_task(config, pools, np.random.default_rng([config.seed, 2, stream, i]),
                      num_examples)


def instructed_input(rule: Rule, x: str, rng: np.random.Generator | None = None) -> str:
  """The rule said outright, then x: "instruction : x".

  With `rng` (pretraining), the instruction goes before or after x, 1 to 3 ":"
  apart, so the model learns to find it by what it says rather than where it
  stands: a prefix, which has no position, can then stand in for it.
  """
  if rng is None:
    return f"{rule.instruction()} : {x}"
  gap = " ".join([":"] * int(rng.integers(1, 4)))
  if rng.integers(2):
    return f"{rule.instruction()} {gap} {x}"
  return f"{x} {gap} {rule.instruction()}"


# ---------------------------------------------------------------------------
# SeqIO tasks. `{name}.train` (MTF): fresh training tasks, each record with its
# own context. `{name}.skills` (the downstream model's pretraining, xonly form
# only): instructed examples over every word. One task per held-out task, with
# its fixed shots as context.


@functools.cache
def train_records(config: BenchmarkConfig) -> tuple[dict, ...]:
  pools = generate(config).train_pools
  records = []
  for i, (_, examples) in enumerate(_fresh_tasks(config, pools, 0, config.num_train_tasks,
                                                 config.num_shots + 1)):
    *shots, query = examples
    records.append(records_lib.make_record(
        f"{config.name}.train_{i:05d}", query.input, query.output, answer_choices=query.choices,
        label=query.label, context=embedded.format_context(shots)))
  return tuple(records)


@functools.cache
def skill_records(config: BenchmarkConfig) -> tuple[dict, ...]:
  bench = generate(config)
  pools = bench.train_pools + bench.heldout_pools
  rng = np.random.default_rng([config.seed, 4])
  return tuple(
      records_lib.make_record(f"{config.name}.skills", instructed_input(rule, e.input, rng),
                              e.output, answer_choices=e.choices, label=e.label)
      for rule, (e,) in _fresh_tasks(config, pools, 1, config.num_skill_examples, 1))


def skills_task_name(config: BenchmarkConfig) -> str:
  return f"{config.name}.skills"


def _records_reader(records_fn):
  def read(split, shuffle, seed, shard):
    del split  # the only split
    return records_lib.records_dataset(shard.slice(records_fn()), shuffle, seed)
  return read


def register(config: BenchmarkConfig) -> None:
  """Registers the skills task and mixture, then the benchmark's training, held-out and
  instructed tasks and mixtures (embedded.register); generates nothing."""
  forms.add_task(skills_task_name(config), sources.ReaderSource(
      _records_reader(functools.partial(skill_records, config)), ("train",),
      "embedded in-context skills (instructed)"), vocab_lib.embedded_vocabulary(),
      forms=("xonly",), **scoring.RANK_ACCURACY)
  forms.add_mixture(f"{config.name}_skills", [skills_task_name(config)], forms=("xonly",))
  embedded.register(
      config.name, sources.ReaderSource(_records_reader(functools.partial(train_records, config)),
                                        ("train",), "embedded in-context training tasks"),
      list(heldout_families(config)), lambda: generate(config).heldout_tasks,
      instruct=instructed_input)
