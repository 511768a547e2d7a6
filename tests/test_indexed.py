"""The training stream: every batch from its position, from the example cache.

Semantics checked against SeqIO's TensorFlow path (forms, truncation, EOS, CACLM
spans), the index arithmetic (bijections, rates, positions used once), host-count
independence, constant-time positions, contexts, and bad input.
"""

import functools
import json
import os

import fixtures_tasks
import numpy as np
import pytest
import seqio

import hypert5_tasks
from hypert5.errors import ConfigError, DataError
from hypert5.text import prompts
from hypert5_tasks import example_cache, fewshot, forms, indexed, records, sampling, sni, sources
from hypert5_tasks import vocab as task_vocab
from hypert5_tasks.feature_converter import HyperFeatureConverter

VOCAB = task_vocab.embedded_vocabulary()
WORDS = ("king queen river night light stone horse wind fire water gold bread wine song "
         "friend father mother lord lady soldier crown sword ship sea").split()


@pytest.fixture
def cache(tmp_path):
  return str(tmp_path / "cache")


def _lines(count, seed, prefix=""):
  rng = np.random.default_rng(seed)
  return [(f"{prefix}{i} " + " ".join(rng.choice(WORDS, size=int(rng.integers(3, 9)))),
           str(rng.choice(WORDS))) for i in range(count)]


def register_custom(name, subtasks, *, copies=0, num_shots=fewshot.NUM_SHOTS, attached=None,
                    leading=(), calls=None):
  """A task as README's "Registering a mixture" builds one: a ReaderSource of records
  over several task_names (`subtasks`: name -> count), `copies` of the first record."""
  rows = [records.make_record(sub, x, y, context=attached)
          for sub, count in subtasks.items() for x, y in _lines(count, len(sub), sub)]
  rows += [dict(rows[0]) for _ in range(copies)]

  def read(split, shuffle, seed, shard):
    if calls is not None:
      calls.append(split)
    return records.records_dataset(shard.slice(rows), shuffle, seed)

  preprocessors = [functools.partial(fewshot.draw_within_task, num_shots=num_shots,
                                     leading=tuple(leading))] if attached is None else []
  forms.add_task(name, sources.ReaderSource(read, ("train",), f"test rows {name}"), VOCAB,
                 context_preprocessors=preprocessors)
  return rows


def stream(name, cache, lengths=None, seed=0, **kwargs):
  lengths = lengths or {"hyper_inputs": 256, "inputs": 32, "targets": 8}
  return indexed.IndexedMixture(name, split="train", lengths=lengths, seed=seed,
                                cache_dir=cache, **kwargs)


# -- Index arithmetic ------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 3, 5, 17, 100, 1000, 4097, 70_000])
def test_permutation_is_a_bijection_and_inverse_undoes_it(n):
  for seed in (0, 7):
    order = sampling.Permutation(n, seed)
    images = order(np.arange(n))
    assert sorted(images.tolist()) == list(range(n))
    np.testing.assert_array_equal(order.inverse(images), np.arange(n))
    table = sampling.permutation(n, seed)  # a table for small n: another bijection
    assert sorted(table(np.arange(n)).tolist()) == list(range(n))
    np.testing.assert_array_equal(table.inverse(table(np.arange(n))), np.arange(n))
  if n > 16:
    assert not np.array_equal(images, np.arange(n))  # it shuffles
    assert not np.array_equal(images, sampling.Permutation(n, 1)(np.arange(n)))


def test_mixing_gives_every_task_its_rate_and_each_position_once():
  rates = np.array([1.0, 3.0, 0.0, 12.0, 0.05, 0.05])
  mixing = sampling.Mixing(rates, seed=5, rows_per_block=997)
  rows = mixing.block_start(200)  # 200 whole blocks
  tasks, positions = mixing.locate(np.arange(rows))
  counts = np.bincount(tasks, minlength=len(rates))
  assert counts[2] == 0  # rate 0: never
  # Quotas per block: within one row of its share after every block.
  np.testing.assert_allclose(counts, rows * rates / rates.sum(), atol=1)
  for t in range(len(rates)):  # each task's positions 0, 1, 2, ..., in row order
    np.testing.assert_array_equal(positions[tasks == t], np.arange(counts[t]))
  # Rows in any order, one at a time or far away: the same answer.
  some = np.array([rows - 1, 3, 150_000, 997, 996])
  got = mixing.locate(some)
  np.testing.assert_array_equal(got[0], tasks[some])
  np.testing.assert_array_equal(got[1], positions[some])


def test_a_small_task_shows_each_example_once_per_epoch_in_stream_order(cache):
  register_custom("idx_epochs", {"e": 30})
  s = stream("idx_epochs", cache)
  inputs = [tuple(s.batch(b, batch_size=10)["encoder_input_tokens"][i]) for b in range(9)
            for i in range(10)]
  for epoch in range(3):  # 30 rows, 30 distinct examples, then the next epoch
    assert len(set(inputs[30 * epoch:30 * (epoch + 1)])) == 30
  assert inputs[:30] != inputs[30:60]


def test_epochs_visit_every_example_once_in_a_new_order():
  first = sampling.epoch_examples(np.arange(50), 50, seed=0, task="t")
  second = sampling.epoch_examples(np.arange(50, 100), 50, seed=0, task="t")
  assert sorted(first) == sorted(second) == list(range(50))
  assert list(first) != list(second)


# -- The stream ------------------------------------------------------------------


def test_batch_far_away_reads_only_its_own_examples(cache):
  register_custom("idx_far", {"a": 40, "b": 25})
  s = stream("idx_far", cache)
  s.batch(0, batch_size=8)
  before = sum(t.reads for t in s.streams)
  far = s.batch(10**7, batch_size=8)
  assert sum(t.reads for t in s.streams) - before == 8  # no replay of the 10**7 before
  again = stream("idx_far", cache).batch(10**7, batch_size=8)
  for key in far:
    np.testing.assert_array_equal(far[key], again[key])


def test_global_batch_is_the_same_for_1_2_and_4_hosts(cache):
  register_custom("idx_hosts_a", {"a": 30})
  register_custom("idx_hosts_b", {"b": 50})
  forms.add_mixture("idx_hosts", ["idx_hosts_a", "idx_hosts_b"], rate=lambda n: 1.0)
  s = stream("idx_hosts", cache)
  for position in (0, 5, 12_345):
    whole = s.batch(position, batch_size=16)
    for hosts in (2, 4):
      parts = [s.batch(position, batch_size=16, shard_index=h, num_shards=hosts)
               for h in range(hosts)]
      for key in whole:
        np.testing.assert_array_equal(np.concatenate([p[key] for p in parts]), whole[key])
  with pytest.raises(ConfigError, match="does not divide over 3 shards"):
    s.batch(0, batch_size=16, num_shards=3)


def test_rates_hold_over_many_batches_and_rate_zero_never_appears(cache):
  for name, count in (("idx_rate_a", 30), ("idx_rate_b", 30), ("idx_rate_c", 30)):
    register_custom(name, {name[-1]: count})
  rates = {"idx_rate_a": 1.0, "idx_rate_b": 3.0, "idx_rate_c": 0.0}
  seqio.MixtureRegistry.remove("idx_rates")
  seqio.MixtureRegistry.add("idx_rates", list(rates.items()))
  s = stream("idx_rates", cache)
  assert [t.name for t in s.streams] == ["idx_rate_a", "idx_rate_b"]
  tasks, _ = s.mixing.locate(np.arange(4000))
  share = np.mean(tasks == 1)
  assert abs(share - 0.75) < 3 * np.sqrt(0.75 * 0.25 / 4000)
  assert s.composition["tasks"] == [["idx_rate_a", 1.0, 30], ["idx_rate_b", 3.0, 30]]


def test_context_is_other_records_of_its_task_name_never_itself_nor_a_copy(cache):
  rows = register_custom("idx_ctx", {"alpha": 40, "beta": 9, "gamma": 2}, copies=3)
  s = stream("idx_ctx", cache)
  (task,) = s.streams
  piece = task.cache.piece(0)
  bounds = piece["subtask_offsets"]
  keys = piece["pair_key"]
  assert list(np.diff(bounds)) == [43, 9, 2]  # alpha holds its 3 copies
  seen = {}
  for epoch in (0, 1):
    for record in range(task.size):
      context = task._context_records(piece.columns, record, epoch)
      sub = np.searchsorted(bounds, record, side="right") - 1
      assert all(bounds[sub] <= c < bounds[sub + 1] for c in context)  # same task_name
      assert record not in context and not (keys[context] == keys[record]).any()
      size = bounds[sub + 1] - bounds[sub]
      copies = int((keys[bounds[sub]:bounds[sub + 1]] == keys[record]).sum()) - 1
      assert len(context) == min(16, size - 1 - copies) or (size - 1 - copies > 16
                                                           and len(context) >= 16 - copies)
      seen.setdefault(record, []).append(tuple(context))
  assert sum(a != b for a, b in seen.values()) > task.size // 2  # re-drawn every epoch
  del rows


def test_a_task_name_of_one_distinct_example_is_an_error(cache):
  register_custom("idx_single", {"alone": 1}, copies=2)
  with pytest.raises(DataError, match="idx_single: a task_name of it has a single distinct"):
    stream("idx_single", cache)


def _tf_features(record, form, lengths, vocabulary=VOCAB):
  """The TensorFlow path's model features of one record (forms.render, EOS, converter)."""
  dataset = records.records_dataset([record])
  features = forms.output_features(form, vocabulary)
  dataset = forms.render(dataset, features, lengths, form=form)
  dataset = seqio.preprocessors.append_eos_after_trim(dataset, features, lengths)
  converter = HyperFeatureConverter(hyper_inputs=form == "hyper")
  task_lengths = {k: v for k, v in lengths.items() if form == "hyper" or k != "hyper_inputs"}
  return next(converter(dataset, task_lengths).as_numpy_iterator())


@pytest.mark.parametrize("form", forms.FORMS)
def test_features_equal_the_tensorflow_forms_truncation_and_eos(cache, form):
  # Tight lengths: contexts are cut to whole examples, queries and targets trimmed.
  lengths = {"hyper_inputs": 60, "inputs": 20, "targets": 3}
  definition = "Definition: Give the word after the number."
  rows = register_custom("idx_forms", {"only": 30}, leading=[definition])
  name = forms.name_for("idx_forms", form)
  s = stream(name, cache, lengths)
  (task,) = s.streams
  tasks, positions = s.mixing.locate(np.arange(60))
  piece = task.cache.piece(0)
  for row, position in enumerate(positions[:12]):
    epoch, offset = divmod(int(position), task.size)
    record = sampling.permutation(task.size, sampling.key(0, "epoch", name, epoch)).at(offset)
    record_ = dict(rows[record])
    if form != "xonly":  # the xonly form reads no context
      record_["context"] = [definition] + [
          prompts.format_pair(rows[c]["input"], rows[c]["target"])
          for c in task._context_records(piece.columns, record, epoch)]
    expected = _tf_features(record_, form, lengths)
    got = s.batch(row, batch_size=1)
    assert set(got) == set(expected) - {"task_name"}
    for key in got:
      np.testing.assert_array_equal(got[key][0], expected[key], err_msg=f"{key} row {row}")


def test_attached_contexts_equal_the_sni_tensorflow_pipeline(tmp_path, cache):
  tasks = {f"task{i:03d}_test": fixtures_tasks.sni_task(definition=f"Do thing {i} well.",
                                                        num_instances=30 + i)
           for i in range(3)}
  root = tmp_path / "sni"
  fixtures_tasks.write_sni(root, tasks, train=list(tasks))
  sni.register(str(root), VOCAB, prefix="idxsni")
  lengths = {"hyper_inputs": 24, "inputs": 6, "targets": 4}
  s = stream("idxsni_def_pos2_train", cache, lengths)
  for task in s.streams:
    expected = list(seqio.get_mixture_or_task(task.name).get_dataset(
        lengths, split="train", shuffle=False).as_numpy_iterator())
    piece = task.cache.piece(0)
    assert task.size == len(expected)
    for record, want in enumerate(expected):
      got = task._record(piece.columns, record, 0)
      for key in ("hyper_inputs", "inputs", "targets"):
        np.testing.assert_array_equal(got[key], want[key])


def test_caclm_spans_equal_the_tensorflow_pipeline(cache):
  lengths = {"hyper_inputs": 160, "inputs": 40, "targets": 40}
  task = seqio.get_mixture_or_task("embedded_caclm.shakespeare")
  planned = indexed.plan(task.name, "validation", cache)
  indexed.build_caches(planned.missing, planned.root, progress=False)
  cached = example_cache.CachedTask(planned.specs[task.name].folder(planned.root))
  (s,) = [indexed.TaskStream(task, planned.recipes[task.name], cached, lengths, 0)]
  expected = list(task.get_dataset(lengths, split="validation", shuffle=False)
                  .as_numpy_iterator())
  assert cached.size == len(expected) > 100
  piece = cached.piece(0)
  for row in range(0, len(expected), 37):
    got = s._tokens(piece.columns, row, row)
    for key in ("hyper_inputs", "inputs", "targets"):
      np.testing.assert_array_equal(got[key], expected[row][key])


def test_lm_steps_cut_and_drop_as_their_tensorflow_versions(cache):
  lengths = {"inputs": 128, "targets": 128}
  s = stream("embedded_lm_mix", cache, lengths)
  by_name = {t.name: t for t in s.streams}
  cuts, kept = [], []
  for position in range(200):
    example = by_name["embedded_lm"].example(position)
    cuts.append(len(example["inputs"]) - 1)
    assert len(example["inputs"]) + len(example["targets"]) - 2 == 128  # the span, EOS each
    noisy = by_name["embedded_denoise"].example(position)
    assert len(noisy["targets"]) == 33  # 32 tokens and EOS
    kept.append((len(noisy["inputs"]) - 1) / 32)
  assert 16 <= min(cuts) and max(cuts) <= 112 and len(set(cuts)) > 30
  assert abs(np.mean(kept) - 0.85) < 0.03


def test_packing_fills_rows_in_stream_order_and_continues_where_it_stopped(cache):
  register_custom("idx_pack", {"p": 50})
  lengths = {"inputs": 48, "targets": 12}
  s = stream("idx_pack_xonly", cache, lengths)
  first, next_row = s.packed_batch(0, batch_size=4)
  second, _ = s.packed_batch(next_row, batch_size=4)
  examples = s.examples(np.arange(next_row))
  segments = first["encoder_segment_ids"]
  assert segments.max(axis=1).sum() == next_row  # every example of rows 0..next_row-1, once
  flat = [e["inputs"] for e in examples]
  got = [first["encoder_input_tokens"][r][segments[r] == k] for r in range(4)
         for k in range(1, segments[r].max() + 1)]
  for a, b in zip(got, flat):
    np.testing.assert_array_equal(a, b)
  dec = first["decoder_input_tokens"]
  starts = first["decoder_positions"] == 0
  assert (dec[starts] == 0).all()
  np.testing.assert_array_equal(dec[:, 1:][~starts[:, 1:]],
                                first["decoder_target_tokens"][:, :-1][~starts[:, 1:]])
  assert not np.array_equal(second["encoder_input_tokens"], first["encoder_input_tokens"])
  with pytest.raises(ConfigError, match="packing is for the downstream-only forms"):
    stream("idx_pack", cache, {"hyper_inputs": 64, **lengths}).packed_batch(0, batch_size=4)


# -- The cache -------------------------------------------------------------------


def test_cache_is_built_once_and_rebuilt_when_its_data_files_change(tmp_path, cache):
  folder = tmp_path / "data"
  for name in ("one", "two"):
    os.makedirs(folder / name)
    (folder / name / "train.jsonl").write_text(
        "".join(json.dumps({"input": x, "output": y}) + "\n" for x, y in _lines(20, 1)))
  hypert5_tasks.register_jsonl_benchmark("idxfiles", str(folder), replace=True,
                                         vocabulary=str(task_vocab.EMBEDDED_VOCAB_PATH))
  s = stream("idxfiles_train", cache)
  assert [t.size for t in s.streams] == [20, 20]
  planned = indexed.plan("idxfiles_train", "train", cache)
  assert not planned.missing  # built: the next run reads it
  with open(folder / "one" / "train.jsonl", "a") as f:
    f.write(json.dumps({"input": "one more line", "output": "word"}) + "\n")
  hypert5_tasks.register_jsonl_benchmark("idxfiles", str(folder), vocabulary=str(
      task_vocab.EMBEDDED_VOCAB_PATH), replace=True)
  planned = indexed.plan("idxfiles_train", "train", cache)
  assert [m.base for m in planned.missing] == ["idxfiles.one"]
  assert [t.size for t in stream("idxfiles_train", cache).streams] == [21, 20]


def test_missing_cache_on_several_hosts_names_the_command(cache):
  register_custom("idx_hint", {"h": 20})
  with pytest.raises(DataError, match=r"1 of its 1 tasks are not preprocessed under .*"
                     r"Run once: python -m hypert5.preprocess --config=X"):
    stream("idx_hint", cache, build_missing=False,
           preprocess_hint="python -m hypert5.preprocess --config=X")


def test_an_empty_task_is_an_error_naming_it(cache):
  def read(split, shuffle, seed, shard):
    return records.records_dataset([])
  forms.add_task("idx_empty", sources.ReaderSource(read, ("train",), "nothing"), VOCAB)
  with pytest.raises(DataError, match=r"task idx_empty_xonly \(split 'train'.*nothing.*no "
                     "examples"):
    stream("idx_empty_xonly", cache)


def test_missing_data_and_a_file_broken_mid_way_name_the_task_and_file(tmp_path, cache):
  from hypert5_tasks import metaicl
  root = tmp_path / "metaicl"
  configs = {"split": {"train": ["glue-rte"], "test": []}}
  metaicl.register(str(tmp_path / "absent"), VOCAB, configs=configs, prefix="idxmi",
                   mixture_prefix="idxmi")
  with pytest.raises(DataError, match=r"idxmi.glue_rte.*MetaICL data not found"):
    stream("idxmi_split_train", cache)
  lines = fixtures_tasks.metaicl_lines("glue-rte", 30, options=("entailment", "not_entailment"))
  path = fixtures_tasks.write_metaicl(root, "glue-rte", 16384, 100, "train", lines)
  text = open(path).read().splitlines()
  text[17] = text[17][:25]  # a line cut mid-way
  with open(path, "w") as f:
    f.write("\n".join(text) + "\n")
  metaicl.register(str(root), VOCAB, configs=configs, prefix="idxmi", mixture_prefix="idxmi")
  with pytest.raises(DataError, match=rf"idxmi.glue_rte.*{path}:18: malformed JSON"):
    stream("idxmi_split_train", cache)
  written = [f for _, _, files in os.walk(cache) for f in files]
  assert not [f for f in written if f.endswith((".safetensors", "manifest.json"))]  # nothing
