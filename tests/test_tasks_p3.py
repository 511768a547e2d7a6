"""P3: subset lists, both file layouts, the length filter, held-out rank classification."""

import collections
import itertools
import os

import fixtures_tasks as fx
import numpy as np
import pytest
import seqio

import hypert5_tasks  # noqa: F401  (registers the tasks)
from hypert5 import errors
from hypert5.text import prompts
from hypert5_tasks import p3, sources, vocab

LENGTHS = {"hyper_inputs": 512, "inputs": 64, "targets": 8}
SHARED_P3 = fx.SHARED_DATA / "p3"


def test_t0_training_and_heldout_subsets():
  train = p3.t0_train_subsets()
  assert len(train) == 313 and not any(s.endswith("_score_eval") for s in train)
  assert {p3.dataset_of(s)[0] for s in train} >= {"ag_news", "imdb", "glue", "xsum"}
  heldout = p3.heldout_eval_subsets()
  assert len(heldout) == 111 and all(s.endswith("_score_eval") for s in heldout)
  assert {p3.dataset_of(s) for s in heldout} == set(p3.HELDOUT_DATASETS)
  assert not any(s.startswith(("story_cloze", "winogrande_winogrande_debiased")) for s in heldout)
  assert {f"anli_GPT_3_style_r{r}_score_eval" for r in (1, 2, 3)} <= set(heldout)
  assert p3.dataset_of("super_glue_wsc.fixed_GPT_3_Style_score_eval") == ("super_glue",
                                                                         "wsc.fixed")
  assert len(seqio.get_mixture_or_task("p3_t0_train").tasks) == 313
  assert len(seqio.get_mixture_or_task("p3_heldout_score_eval_xonly").tasks) == 111


@fx.needs_shared("p3")
def test_packaged_metadata_are_the_shared_copies():
  for shared, packaged in (("datasets.csv", "p3_datasets.csv"), ("subsets.txt", "p3_subsets.txt")):
    assert (SHARED_P3 / shared).read_bytes() == (p3.DATA / packaged).read_bytes()
  hint = {line.strip() for line in (SHARED_P3 / "hint_all_t0_tasks.txt").read_text().splitlines()}
  # HINT's T0 list holds exactly our training subsets plus held-out evaluation ones.
  assert set(p3.t0_train_subsets()) <= hint


def _register(root, name, train=(), evals=()):
  p3.register(str(root), vocab.embedded_vocabulary(), train_subsets=list(train),
              eval_subsets=list(evals), prefix=name, train_mixture=f"{name}_train",
              eval_mixture=f"{name}_eval")


def _records(task_name, split="train", shard=sources.Shard(), form="xonly"):
  task = seqio.get_mixture_or_task(f"{task_name}_{form}" if form != "hyper" else task_name)
  return list(task.get_dataset(LENGTHS, split=split, shuffle=False,
                               shard_info=seqio.ShardInfo(shard.index, shard.count))
              .as_numpy_iterator())


def test_parquet_and_tfrecord_layouts_read_the_same(tmp_path):
  rows = fx.p3_train_rows("s", 30)
  fx.write_p3_parquet(tmp_path, "in_parquet", "train", rows, row_group_size=7)
  fx.write_p3_tfrecord(tmp_path, "in_tfrecord", "train", rows)
  _register(tmp_path, "p3layout", train=["in_parquet", "in_tfrecord"])
  from_parquet = _records("p3layout.in_parquet")
  from_tfrecord = _records("p3layout.in_tfrecord")
  assert len(from_parquet) == 30
  for a, b in zip(from_parquet, from_tfrecord):
    for key in ("inputs_pretokenized", "targets_pretokenized", "inputs", "targets", "label"):
      assert np.array_equal(a[key], b[key]), key
    assert list(a["answer_choices"]) == [b"yes", b"no"]
  assert [r["label"] for r in from_parquet[:4]] == [0, 1, 0, 1]


def test_length_filter_excludes_long_subsets(tmp_path):
  fx.write_p3_parquet(tmp_path, "short", "train", fx.p3_train_rows("short", 40, input_words=20))
  fx.write_p3_parquet(tmp_path, "long", "train", fx.p3_train_rows("long", 40, input_words=400))
  fx.write_p3_tfrecord(tmp_path, "long_tf", "train", fx.p3_train_rows("long_tf", 20,
                                                                       input_words=321))
  assert p3.average_input_tokens(str(tmp_path), "short") == 20
  assert p3.average_input_tokens(str(tmp_path), "long_tf") == 321  # from stats.train.json
  _register(tmp_path, "p3len", train=["short", "long", "long_tf"])
  mixture = seqio.get_mixture_or_task("p3len_train")
  rates = {t.name: mixture.get_rate(t) for t in mixture.tasks}
  assert rates == {"p3len.long": 0.0, "p3len.long_tf": 0.0, "p3len.short": 40.0}
  stream = mixture.get_dataset(LENGTHS, split="train", shuffle=True, seed=0, num_epochs=None)
  names = collections.Counter(ex["task_name"] for ex in stream.take(100).as_numpy_iterator())
  assert names == {b"p3len.short": 100}


def test_training_contexts_are_other_examples_of_the_subset(tmp_path):
  fx.write_p3_parquet(tmp_path, "sub", "train", fx.p3_train_rows("sub", 50))
  _register(tmp_path, "p3ctx", train=["sub"])
  examples = _records("p3ctx.sub", form="hyper")
  assert len(examples) == 50
  for example in examples:
    query = example["inputs_pretokenized"].decode()
    pairs = example["hyper_inputs_pretokenized"].decode()
    assert 1 <= pairs.count("Input: ") <= 16
    assert prompts.format_pair(query, example["targets_pretokenized"].decode()) not in pairs
    assert pairs.count("Input: sub question") == pairs.count("Input: ")


def test_shards_partition_the_rows(tmp_path):
  fx.write_p3_parquet(tmp_path, "sub", "train", fx.p3_train_rows("sub", 45), row_group_size=10)
  _register(tmp_path, "p3shard", train=["sub"])
  shards = [{r["inputs_pretokenized"] for r in _records("p3shard.sub", shard=sources.Shard(i, 3))}
            for i in range(3)]
  assert sum(len(s) for s in shards) == 45
  assert all(not a & b for a, b in itertools.combinations(shards, 2))


def test_heldout_rank_classification_with_a_fixed_context(tmp_path):
  subset = "super_glue_cb_GPT_3_style_score_eval"
  fx.write_p3_parquet(tmp_path, subset, "train", fx.p3_score_eval_rows(40, prefix="train premise"))
  fx.write_p3_tfrecord(tmp_path, subset, "validation", fx.p3_score_eval_rows(9))
  _register(tmp_path, "p3eval", evals=[subset])
  examples = _records(f"p3eval.{subset}", split="validation", form="hyper")
  assert len(examples) == 9
  contexts = {e["hyper_inputs_pretokenized"] for e in examples}
  assert len(contexts) == 1  # one few-shot set per subset: one phi
  context = contexts.pop().decode()
  assert context.count("Input: train premise") == 16  # from the train split only
  for i, example in enumerate(examples):
    assert list(example["answer_choices"]) == [b"True", b"False", b"Neither"]
    assert example["label"] == i % 3
    assert example["targets_pretokenized"] == example["answer_choices"][example["label"]]
    assert f"Input: {example['inputs_pretokenized'].decode()} Output:" not in context


def test_missing_data_says_what_to_download(tmp_path):
  _register(tmp_path / "nowhere", "p3missing", train=["sub"])
  with pytest.raises(errors.MissingDataError, match=r"HYPERT5_P3_DIR=.*bigscience/P3"):
    _records("p3missing.sub")
  os.makedirs(tmp_path / "empty")
  _register(tmp_path / "empty", "p3missing2", train=["sub"])
  with pytest.raises(errors.MissingDataError, match=r"subset 'sub' split 'train'"):
    _records("p3missing2.sub")


def test_missing_column_names_the_file(tmp_path):
  rows = [{k: v for k, v in r.items() if k != "inputs_pretokenized"}
          for r in fx.p3_train_rows("s", 5)]
  path = fx.write_p3_parquet(tmp_path, "broken", "train", rows)
  _register(tmp_path, "p3broken", train=["broken"])
  with pytest.raises(Exception, match=f"{path}: missing P3 columns"):
    _records("p3broken.broken")
