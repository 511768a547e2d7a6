"""The embedded in-context benchmark: rules, mirrors, held-out words, skills, SeqIO tasks."""

import collections

import numpy as np
import pytest
import seqio

import hypert5_tasks
from hypert5_tasks import embedded
from hypert5_tasks import embedded_icl as icl

CONFIG = icl.BenchmarkConfig()


@pytest.fixture(scope="module")
def bench():
  return icl.generate(CONFIG)


@pytest.fixture(scope="module", params=["default", "all_families"])
def any_bench(request):
  """The default benchmark, and one with every family (select and match too)."""
  if request.param == "default":
    return icl.generate(CONFIG)
  return icl.generate(icl.BenchmarkConfig(families=icl.ALL_FAMILIES))


@pytest.fixture(scope="module")
def train_records():
  return icl.train_records(CONFIG)


def words_of(record) -> set[str]:
  text = " ".join([record["input"], record["target"], *record.get("context", [])])
  return set(text.replace("Input:", " ").replace("Output:", " ").split())


def test_pools_are_single_pieces_and_disjoint(bench):
  import sentencepiece as spm

  from hypert5_tasks import vocab
  pieces = spm.SentencePieceProcessor(model_file=str(vocab.EMBEDDED_VOCAB_PATH))
  keys, values = icl.word_pools()
  for word in keys + icl.INSTRUCTION_WORDS:
    assert len(pieces.encode(" " + word)) == 1, word
  # A value is a noun's piece and its mark's piece; the mark alone shows its class.
  marks = [pieces.encode("x" + m)[-1] for m in icl.VALUE_MARKS]
  for value in values:
    noun, mark = pieces.encode(" " + value)
    assert mark == marks[icl.value_class(value)], value
  assert {icl.value_class(v) for v in values} == {0, 1}
  assert not set(keys) & set(values) and not set(keys + values) & set(icl.INSTRUCTION_WORDS)
  train, heldout = bench.train_pools, bench.heldout_pools
  assert not set(train.keys) & set(heldout.keys) and not set(train.values) & set(heldout.values)
  assert (len(heldout.keys), len(heldout.values)) == (CONFIG.num_heldout_keys,
                                                      CONFIG.num_heldout_values)
  # A key's attributes are values of its own split, the left one of the first mark,
  # the right one of the second: which attribute a word is shows in its form.
  for pools in (train, heldout):
    for _, (left, right) in pools.facts:
      assert {left, right} <= set(pools.values)
      assert (icl.value_class(left), icl.value_class(right)) == (0, 1)


def test_heldout_tasks_sizes_names_and_balance(bench):
  names = [t.name for t in bench.heldout_tasks]
  families = icl.heldout_families(CONFIG)
  assert names == list(families)
  assert len(names) == len(icl.FAMILIES) * CONFIG.rules_per_family * 2
  assert collections.Counter(map(families.get, names)) == {
      f: 2 * CONFIG.rules_per_family for f in icl.FAMILIES}
  assert all(families[t.name] == t.family for t in bench.heldout_tasks)
  for task in bench.heldout_tasks:
    assert len(task.shots) == CONFIG.num_shots
    assert len(task.queries) == CONFIG.heldout_queries
    assert len(task.train_examples) == CONFIG.heldout_train
    if task.family == "lookup":  # every key of the mapping is shown, twice
      assert collections.Counter(e.input for e in task.shots) == {
          k: 2 for k, _ in task.rule.params}
    if task.family == "classify":  # both groups are shown
      assert {icl.key_group(e.input) for e in task.shots} == {0, 1}


def test_examples_follow_their_rule_and_mirrors_swap_every_answer(any_bench):
  bench = any_bench
  by_name = {t.name: t for t in bench.heldout_tasks}
  for task in bench.heldout_tasks:
    for e in task.shots + task.queries + task.train_examples:
      assert e.output == task.rule.answer(tuple(e.input.split()))
      assert e.choices[e.label] == e.output and len(set(e.choices)) == 2
    mirror = by_name[task.name[:-1] + str(1 - int(task.name[-1]))]
    assert mirror.rule == task.rule.mirror() and mirror.rule.mirror() == task.rule
    for a, b in zip(task.queries, mirror.queries):
      assert (a.input, a.choices) == (b.input, b.choices) and a.output != b.output


def test_every_example_blind_predictor_scores_exactly_half(any_bench):
  """Zero-shot, a shared prefix or LoRA, T5-MTF: whatever they learned, they rank a
  query's choices from the query alone, so they are right in exactly one mirror."""
  rng = np.random.default_rng(0)
  table = collections.defaultdict(lambda: int(rng.integers(2)))  # any fixed function
  blind_predictors = [
      lambda x, choices: 0,
      lambda x, choices: 1,
      lambda x, choices: len(x) % 2,
      lambda x, choices: int(choices[0] in x),
      lambda x, choices: table[(x, choices)],
  ]
  for predict in blind_predictors:
    for family in any_bench.config.families:
      correct = [predict(e.input, e.choices) == e.label for t in any_bench.heldout_tasks
                 if t.family == family for e in t.queries]
      assert np.mean(correct) == 0.5, family


def test_heldout_words_never_occur_in_training_tasks(bench, train_records):
  heldout = set(bench.heldout_pools.keys) | set(bench.heldout_pools.values)
  seen = set()
  for record in train_records:
    seen |= words_of(record)
  assert not heldout & seen
  assert seen - {"Input", "Output"} <= set(bench.train_pools.keys) | set(bench.train_pools.values)
  for task in bench.heldout_tasks:
    for e in task.shots + task.queries:
      assert set(e.input.split()) | {e.output} <= heldout
  # The downstream model's pretraining (not a training task) covers every word.
  skill_words = set()
  for record in icl.skill_records(CONFIG)[:20_000]:
    skill_words |= set(record["input"].split()) | {record["target"]}
  assert heldout <= skill_words


def test_training_records_are_fresh_tasks_answered_by_their_context(train_records):
  assert len(train_records) == CONFIG.num_train_tasks
  assert len({r["task_name"] for r in train_records}) == len(train_records)
  families = collections.Counter()
  for i in range(2000):
    rule, examples = icl.sample_task(CONFIG, icl.generate(CONFIG).train_pools,
                                     np.random.default_rng([CONFIG.seed, 2, 0, i]),
                                     CONFIG.num_shots + 1)
    families[rule.family] += 1
    record = train_records[i]
    *shots, query = examples
    assert record["context"] == embedded.format_context(shots)
    assert (record["input"], record["target"]) == (query.input, query.output)
    for e in examples:
      assert e.output == rule.answer(tuple(e.input.split()))
    if rule.family == "lookup":
      assert query.input in {e.input for e in shots}
  assert set(families) == set(icl.FAMILIES) and min(families.values()) > 300


def split_instructed(text: str) -> tuple[str, str, bool]:
  """(instruction, x, instruction first) of a skills input "A : : B"."""
  words = text.split()
  first_colon = words.index(":")
  last_colon = len(words) - 1 - words[::-1].index(":")
  assert set(words[first_colon:last_colon + 1]) == {":"} and 1 <= last_colon - first_colon + 1 <= 3
  a, b = " ".join(words[:first_colon]), " ".join(words[last_colon + 1:])
  keys = set(icl.word_pools()[0])
  # x is one key or a key and a value; an instruction is longer or starts with a tag.
  a_is_x = a.split()[0] not in icl.INSTRUCTION_WORDS and len(a.split()) <= 2 and (
      a.split()[0] in keys or len(a.split()) == 2)
  return (b, a, False) if a_is_x else (a, b, True)


def test_skills_say_the_rule_outright_before_or_after_x():
  records = icl.skill_records(CONFIG)[:2000]
  placements, tags = collections.Counter(), collections.Counter()
  for record in records:
    instruction, x, first = split_instructed(record["input"])
    placements[first] += 1
    tags[instruction.split()[0] if instruction.split()[0] in icl.INSTRUCTION_WORDS
         else "lookup"] += 1
    assert record["target"] in record["answer_choices"]
    if instruction.startswith("say "):
      assert record["target"] == instruction.split()[1]
    if instruction.startswith("take "):
      assert record["target"] in x.split()
    if tags["lookup"] and len(instruction.split()) == 2 * icl.LOOKUP_KEYS:
      pairs = dict(zip(instruction.split()[::2], instruction.split()[1::2]))
      assert pairs[x] == record["target"]
  assert min(placements.values()) > 800  # either side of x, about equally
  assert set(tags) == {"say", "take", "left", "right", "up", "lookup"}
  # The held-out tasks' instructed form (the oracle) is the plain "instruction : x".
  assert seqio.get_mixture_or_task("embedded_icl_instructed_test_xonly")


def test_registered_mixtures_and_features():
  names = sorted(t.name for t in seqio.get_mixture_or_task("embedded_icl_test").tasks)
  assert names == sorted(icl.heldout_families(CONFIG))
  batch = next(iter(hypert5_tasks.get_dataset(
      "embedded_icl_train", {"hyper_inputs": 96, "inputs": 8, "targets": 4}, batch_size=4,
      form="hyper").as_numpy_iterator()))
  assert batch["hyper_encoder_input_tokens"].shape == (4, 96)
  # 8 shots fit whole: the context ends in EOS before the padding.
  lengths = (batch["hyper_encoder_input_tokens"] > 0).sum(1)
  assert (lengths < 96).all() and (lengths > 8 * 8).all()
  # one word (a key: one piece; a value: two) and EOS
  assert set(batch["decoder_loss_weights"].sum(1).tolist()) <= {2.0, 3.0}
  skills = next(iter(hypert5_tasks.get_dataset(
      "embedded_icl_skills", {"inputs": 24, "targets": 4}, batch_size=4,
      form="xonly").as_numpy_iterator()))
  assert skills["encoder_input_tokens"].shape == (4, 24)


def test_bad_configs_are_errors():
  with pytest.raises(ValueError, match="unknown family 'reverse'"):
    icl.BenchmarkConfig(families=("constant", "reverse"))
  with pytest.raises(ValueError, match="num_keys=200: must be .* at most 128"):
    icl.BenchmarkConfig(num_keys=200)
