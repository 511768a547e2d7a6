"""Few-shot formatting, truncation by whole examples, drawing within a task, and the forms."""

import collections

import numpy as np
import pytest
import tensorflow as tf

from hypert5.text import prompts
from hypert5_tasks import fewshot, forms, records, vocab


def test_python_and_tf_pair_formats_agree():
  assert prompts.format_pair("a b", "c") == "Input: a b Output: c"
  tf_pair = fewshot.format_pairs_tf(tf.constant(["a b"]), tf.constant(["c"]))[0].numpy().decode()
  assert tf_pair == prompts.format_pair("a b", "c")
  assert fewshot.format_query("a b") == "Input: a b Output:"


def test_fit_segments_drops_whole_trailing_segments():
  segments = tf.ragged.constant([[1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11, 12]], dtype=tf.int32)
  ids, kept = fewshot.fit_segments(segments, budget=8, keep_first=True)
  assert int(kept) == 2
  np.testing.assert_array_equal(ids, [1, 2, 3, 4, 5, 6, 7])
  ids, kept = fewshot.fit_segments(segments, budget=None, keep_first=True)
  assert int(kept) == 3 and len(ids) == 12
  # Only a first segment that alone is too long is cut, and only when asked to keep it.
  ids, kept = fewshot.fit_segments(segments, budget=2, keep_first=True)
  assert int(kept) == 1
  np.testing.assert_array_equal(ids, [1, 2])
  ids, kept = fewshot.fit_segments(segments, budget=2, keep_first=False)
  assert int(kept) == 0 and len(ids) == 0


def _records_with_context(num_shots=16):
  context = [prompts.format_pair(f"example input number {i}", f"out{i}") for i in range(num_shots)]
  return records.records_dataset([
      records.make_record("task_a", "the query text", "answer", answer_choices=["answer", "no"],
                          label=0, context=context)])


def _render(form, lengths):
  output_features = forms.output_features(form, vocab.embedded_vocabulary())
  ds = forms.render(_records_with_context(), output_features, lengths, form=form)
  import seqio
  ds = seqio.preprocessors.append_eos_after_trim(ds, output_features, lengths)
  return next(ds.as_numpy_iterator())


def test_hyper_form_keeps_whole_examples_within_the_length():
  vocabulary = vocab.embedded_vocabulary()
  example = _render("hyper", {"hyper_inputs": 60, "inputs": 32, "targets": 8})
  assert len(example["hyper_inputs"]) <= 60 and example["hyper_inputs"][-1] == 1  # EOS
  text = example["hyper_inputs_pretokenized"].decode()
  kept = text.count("Input: ")
  assert 0 < kept < 16
  assert text.endswith(f"Output: out{kept - 1}")  # the last kept example is whole
  # The ids are exactly the kept examples, nothing of the next one.
  assert vocabulary.decode(example["hyper_inputs"][:-1].tolist()) == text
  assert example["inputs_pretokenized"] == b"the query text"
  assert example["targets_pretokenized"] == b"answer"
  assert example["label"] == 0 and list(example["answer_choices"]) == [b"answer", b"no"]


def test_hyper_form_without_length_keeps_all_sixteen():
  example = _render("hyper", None)
  assert example["hyper_inputs_pretokenized"].decode().count("Input: ") == 16


def test_concat_form_puts_examples_then_the_query():
  example = _render("concat", {"inputs": 60, "targets": 8})
  assert "hyper_inputs" not in example
  text = example["inputs_pretokenized"].decode()
  assert text.startswith("Input: example input number 0 Output: out0")
  assert text.endswith("Input: the query text Output:")
  assert 0 < text.count("example input") < 16
  assert len(example["inputs"]) <= 60 and example["inputs"][-1] == 1


def test_xonly_form_is_the_query_alone():
  example = _render("xonly", {"inputs": 60, "targets": 8})
  assert "hyper_inputs" not in example
  assert example["inputs_pretokenized"] == b"the query text"


def _task_records():
  out = []
  for task in ("t_a", "t_b", "t_c"):
    out += [records.make_record(task, f"{task} input {i}", f"{task} out {i}") for i in range(40)]
  return out


def test_draw_within_task_uses_other_examples_of_the_same_task():
  ds = fewshot.draw_within_task(records.records_dataset(_task_records(), shuffle=True, seed=3))
  seen = collections.Counter()
  for record in ds.as_numpy_iterator():
    task = record["task_name"].decode()
    own = prompts.format_pair(record["input"].decode(), record["target"].decode())
    context = [c.decode() for c in record["context"]]
    assert 1 <= len(context) <= fewshot.NUM_SHOTS
    assert own not in context  # never the target itself
    assert all(c.startswith(f"Input: {task} input") for c in context)  # same task only
    assert len(set(context)) == len(context)
    seen[task] += 1
  # 40 records per task: groups of 17, 17, 6; nothing dropped.
  assert seen == {"t_a": 40, "t_b": 40, "t_c": 40}


def test_draw_is_deterministic_given_the_seed():
  def contexts(seed):
    ds = fewshot.draw_within_task(records.records_dataset(_task_records(), shuffle=True,
                                                          seed=seed))
    return [(r["input"], tuple(r["context"])) for r in ds.as_numpy_iterator()]
  assert contexts(5) == contexts(5)
  assert contexts(5) != contexts(6)


def test_fixed_few_shot_set_needs_k_examples():
  assert fewshot.choose_fixed(list(range(20)), 16, seed=0, what="x") == fewshot.choose_fixed(
      list(range(20)), 16, seed=0, what="x")
  with pytest.raises(ValueError, match="pool.json: needs 16 few-shot examples but has only 3"):
    fewshot.choose_fixed([1, 2, 3], 16, seed=0, what="pool.json")


def test_copies_of_the_target_are_not_in_its_context():
  # Groups run across epoch boundaries, and data can hold duplicates: compared by content.
  ds = records.records_dataset(_task_records()[:20], shuffle=True, seed=0).repeat(3)
  for record in fewshot.draw_within_task(ds).as_numpy_iterator():
    own = prompts.format_pair(record["input"].decode(), record["target"].decode()).encode()
    assert own not in list(record["context"])
