"""MetaICL: the real task splits, meta-training and k=16 target tasks, bad jsonl files."""

import json

import fixtures_tasks as fx
import pytest
import seqio

import hypert5_tasks  # noqa: F401  (registers the tasks)
from hypert5 import errors
from hypert5.text import prompts
from hypert5_tasks import metaicl, vocab

LENGTHS = {"hyper_inputs": 1024, "inputs": 64, "targets": 8}
SHARED_METAICL = fx.SHARED_DATA / "metaicl" / "config"


def test_split_sizes_and_registered_mixtures():
  sizes = {s: (len(metaicl.split_config(s)["train"]), len(metaicl.split_config(s)["test"]))
           for s in metaicl.SPLITS}
  assert sizes == {"hr_to_lr": (61, 26), "non_nli_to_nli": (55, 8),
                   "non_class_to_class": (37, 20)}
  for split, (num_train, num_test) in sizes.items():
    assert len(seqio.get_mixture_or_task(f"metaicl_{split}_train").tasks) == num_train
    test = seqio.get_mixture_or_task(f"metaicl_{split}_test_concat").tasks
    assert len(test) == num_test * len(metaicl.TEST_SEEDS)
  assert seqio.get_mixture_or_task("metaicl.glue_rte.seed13") is not None
  assert metaicl.has_choices("glue-rte") and not metaicl.has_choices("gigaword")


@fx.needs_shared("metaicl/config")
def test_packaged_configs_are_the_shared_copies():
  for split in metaicl.SPLITS:
    assert ((SHARED_METAICL / f"{split}.json").read_bytes()
            == (metaicl.DATA / f"metaicl_{split}.json").read_bytes())
  for path in (SHARED_METAICL / "tasks").glob("*.json"):
    assert metaicl.task_configs()[path.stem] == json.loads(path.read_text())
  named = {t for s in metaicl.SPLITS for part in ("train", "test")
           for t in metaicl.split_config(s)[part]}
  assert named <= set(metaicl.task_configs())


def _write_tiny(root):
  fx.write_metaicl(root, "glue-sst2", metaicl.TRAIN_K, metaicl.TRAIN_SEED, "train",
                   fx.metaicl_lines("glue-sst2", 40))
  for seed in metaicl.TEST_SEEDS:
    fx.write_metaicl(root, "glue-rte", 16, seed, "train",
                     fx.metaicl_lines("glue-rte", 16, ("entailment", "not_entailment"),
                                      tag=f"shot{seed}"))
    fx.write_metaicl(root, "glue-rte", 16, seed, "test",
                     fx.metaicl_lines("glue-rte", 10, ("entailment", "not_entailment"),
                                      tag="query"))


def _register(root, name):
  metaicl.register(str(root), vocab.embedded_vocabulary(),
                   configs={"tiny": {"train": ["glue-sst2"], "test": ["glue-rte"]}},
                   prefix=name, mixture_prefix=name)


def _examples(task_name, split):
  task = seqio.get_mixture_or_task(task_name)
  return list(task.get_dataset(LENGTHS, split=split, shuffle=False).as_numpy_iterator())


def test_target_tasks_use_the_seed_file_as_few_shot_set(tmp_path):
  _write_tiny(tmp_path)
  _register(tmp_path, "micl_a")
  contexts = {}
  for seed in metaicl.TEST_SEEDS:
    examples = _examples(f"micl_a.glue_rte.seed{seed}", "test")
    assert len(examples) == 10
    (context,) = {e["hyper_inputs_pretokenized"].decode() for e in examples}
    assert context.count("Input: ") == 16 and context.count(f"shot{seed}") == 16
    contexts[seed] = context
    for i, example in enumerate(examples):
      assert example["inputs_pretokenized"].decode() == f"glue-rte query sentence {i}"
      assert list(example["answer_choices"]) == [b"entailment", b"not_entailment"]
      assert example["label"] == i % 2
      assert "query" not in context
  assert len(set(contexts.values())) == 5
  mixture = seqio.get_mixture_or_task("micl_a_tiny_test")
  assert len(mixture.tasks) == 5


def test_training_task_draws_from_its_own_lines(tmp_path):
  _write_tiny(tmp_path)
  _register(tmp_path, "micl_b")
  examples = _examples("micl_b.glue_sst2", "train")
  assert len(examples) == 40
  for example in examples:
    own = prompts.format_pair(example["inputs_pretokenized"].decode(),
                              example["targets_pretokenized"].decode())
    context = example["hyper_inputs_pretokenized"].decode()
    assert own not in context and context.count("Input: glue-sst2 x sentence") >= 1
  mixture = seqio.get_mixture_or_task("micl_b_tiny_train")
  assert mixture.get_rate(mixture.tasks[0]) == 40.0


def test_line_missing_a_key_names_file_and_line(tmp_path):
  _write_tiny(tmp_path)
  lines = fx.metaicl_lines("glue-rte", 10, ("entailment", "not_entailment"))
  del lines[2]["output"]
  fx.write_metaicl(tmp_path, "glue-rte", 16, 13, "test", lines)
  _register(tmp_path, "micl_c")
  with pytest.raises(ValueError,
                     match=r"glue-rte_16_13_test\.jsonl:3: missing key\(s\) \['output'\]"):
    _examples("micl_c.glue_rte.seed13", "test")


def test_malformed_line_names_file_and_line(tmp_path):
  _write_tiny(tmp_path)
  lines = fx.metaicl_lines("glue-rte", 10, ("entailment", "not_entailment"))
  lines[1] = '{"task": "glue-rte", "input": "unterminated'
  fx.write_metaicl(tmp_path, "glue-rte", 16, 21, "test", lines)
  _register(tmp_path, "micl_d")
  with pytest.raises(ValueError, match=r"glue-rte_16_21_test\.jsonl:2: malformed JSON"):
    _examples("micl_d.glue_rte.seed21", "test")


def test_few_shot_file_with_fewer_than_k_examples(tmp_path):
  _write_tiny(tmp_path)
  fx.write_metaicl(tmp_path, "glue-rte", 16, 42, "train",
                   fx.metaicl_lines("glue-rte", 10, ("entailment", "not_entailment")))
  _register(tmp_path, "micl_e")
  with pytest.raises(ValueError, match=r"glue-rte_16_42_train\.jsonl: a 16-shot file with only 10"):
    _examples("micl_e.glue_rte.seed42", "test")


def test_output_outside_the_options_of_a_classification_task(tmp_path):
  _write_tiny(tmp_path)
  lines = fx.metaicl_lines("glue-rte", 10, ("entailment", "not_entailment"))
  lines[4]["output"] = "maybe"
  fx.write_metaicl(tmp_path, "glue-rte", 16, 87, "test", lines)
  _register(tmp_path, "micl_f")
  with pytest.raises(ValueError, match=r"_16_87_test\.jsonl:5: output 'maybe' is not one of"):
    _examples("micl_f.glue_rte.seed87", "test")


def test_missing_directory_says_what_to_build(tmp_path):
  _register(tmp_path / "nowhere", "micl_g")
  with pytest.raises(errors.MissingDataError, match="HYPERT5_METAICL_DIR=.*MetaICL"):
    _examples("micl_g.glue_rte.seed100", "test")
