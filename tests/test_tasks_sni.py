"""Super-NaturalInstructions: real sample files, Def / Def+2Pos contents, the 100-instance cut,
and bad task files."""

import json
import os

import fixtures_tasks as fx
import pytest
import seqio

import hypert5_tasks  # noqa: F401  (registers the tasks)
from hypert5_tasks import sni, vocab

LENGTHS = {"hyper_inputs": 2048, "inputs": 512, "targets": 64}
SHARED_SNI = fx.SHARED_DATA / "sni"
needs_shared = fx.needs_shared("sni")


def _examples(name, split):
  task = seqio.get_mixture_or_task(name)
  return list(task.get_dataset(LENGTHS, split=split, shuffle=False).as_numpy_iterator())


def test_registered_mixtures_follow_the_default_split():
  assert len(sni.packaged_split("train")) == 756 and len(sni.packaged_split("test")) == 119
  for setting in sni.SETTINGS:
    assert len(seqio.get_mixture_or_task(f"sni_{setting}_train").tasks) == 756
    assert len(seqio.get_mixture_or_task(f"sni_{setting}_test").tasks) == 119
  assert seqio.get_mixture_or_task("sni_def_pos2.task1159_bard_analogical_reasoning_containers")


@needs_shared
def test_packaged_split_lists_are_the_shared_copies():
  for split in ("train", "test"):
    assert ((SHARED_SNI / "splits" / f"{split}_tasks.txt").read_bytes()
            == (sni.DATA / f"sni_{split}_tasks.txt").read_bytes())


@pytest.fixture(scope="module")
def real_sni(tmp_path_factory):
  """The shared sample task files under the real layout, with split lists of just them
  (tests using it carry @needs_shared, which skips them when the samples are absent)."""
  root = tmp_path_factory.mktemp("sni")
  os.symlink(SHARED_SNI / "tasks", root / "tasks")
  names = {p.stem for p in (SHARED_SNI / "tasks").glob("*.json")}
  split_dir = root / "splits" / "default"
  split_dir.mkdir(parents=True)
  for split in ("train", "test"):
    listed = [line.strip() for line in (SHARED_SNI / "splits" / f"{split}_tasks.txt").open()]
    (split_dir / f"{split}_tasks.txt").write_text("".join(f"{n}\n" for n in listed if n in names))
  sni.register(str(root), vocab.embedded_vocabulary(), split_dir=str(split_dir), prefix="realsni")
  return root


def _task_json(name):
  with open(SHARED_SNI / "tasks" / f"{name}.json") as f:
    return json.load(f)


@needs_shared
def test_real_def_and_def_pos2_contexts(real_sni):
  del real_sni
  name = "task1159_bard_analogical_reasoning_containers"
  data = _task_json(name)
  definition, positives = data["Definition"][0], data["Positive Examples"]
  (def_context,) = {e["hyper_inputs_pretokenized"].decode()
                    for e in _examples(f"realsni_def.{name}", "test")}
  assert def_context == f"Definition: {definition}"
  (pos2_context,) = {e["hyper_inputs_pretokenized"].decode()
                     for e in _examples(f"realsni_def_pos2.{name}", "test")}
  assert pos2_context == (
      f"Definition: {definition} "
      f"Positive Example 1: Input: {positives[0]['input']} Output: {positives[0]['output']} "
      f"Positive Example 2: Input: {positives[1]['input']} Output: {positives[1]['output']}")
  assert positives[2]["input"] not in pos2_context  # only the first two


@needs_shared
def test_real_test_tasks_keep_first_100_instances_and_all_references(real_sni):
  del real_sni
  name = "task1153_bard_analogical_reasoning_affordance"
  instances = _task_json(name)["Instances"][:100]
  examples = _examples(f"realsni_def.{name}", "test")
  assert len(examples) == 100
  for example, instance in zip(examples, instances):
    assert example["inputs_pretokenized"].decode() == instance["input"]
    assert [r.decode() for r in example["references"]] == instance["output"]
    assert example["targets_pretokenized"].decode() == instance["output"][0]
  assert any(len(e["references"]) > 1 for e in examples)  # several references are kept
  mixture = seqio.get_mixture_or_task("realsni_def_test")
  assert len(mixture.tasks) == 6 and all(mixture.get_rate(t) == 1.0 for t in mixture.tasks)


@needs_shared
def test_real_train_tasks_quirks(real_sni):
  del real_sni
  # 77 instances in all, inputs starting with a space; a bare NaN in another file.
  assert len(_examples("realsni_def.task1449_disease_entity_extraction_bc5cdr_dataset",
                       "train")) == 77
  assert len(_examples("realsni_def_pos2.task1188_count_max_freq_char", "train")) == 100
  mixture = seqio.get_mixture_or_task("realsni_def_pos2_train")
  assert len(mixture.tasks) == 12


def test_instance_cut_and_train_sample(tmp_path):
  split_dir = fx.write_sni(tmp_path, {"task1_big": fx.sni_task(num_instances=150, references=3)},
                           train=["task1_big"], test=["task1_big"])
  sni.register(str(tmp_path), vocab.embedded_vocabulary(), split_dir=split_dir, prefix="snicut")
  test = _examples("snicut_def.task1_big", "test")
  assert [e["inputs_pretokenized"].decode() for e in test] == [
      f"instance input {i}" for i in range(100)]
  assert [r.decode() for r in test[7]["references"]] == [f"answer 7 v{r}" for r in range(3)]
  train = [e["inputs_pretokenized"] for e in _examples("snicut_def.task1_big", "train")]
  assert len(train) == len(set(train)) == 100
  assert train == [e["inputs_pretokenized"] for e in _examples("snicut_def.task1_big", "train")]
  assert set(train) != {e["inputs_pretokenized"] for e in test}  # a sample, not the first 100


def test_concat_form_is_definition_examples_then_input(tmp_path):
  split_dir = fx.write_sni(tmp_path, {"task2_c": fx.sni_task(num_instances=3)}, test=["task2_c"])
  sni.register(str(tmp_path), vocab.embedded_vocabulary(), split_dir=split_dir, prefix="sniform")
  (example, *_) = _examples("sniform_def_pos2.task2_c_concat", "test")
  text = example["inputs_pretokenized"].decode()
  assert text.startswith("Definition: Answer the question. Positive Example 1: Input: positive")
  assert text.endswith("Input: instance input 0 Output:")
  assert "hyper_inputs" not in example


def test_malformed_json_names_file_line_and_column(tmp_path):
  broken = '{\n  "Definition": ["x"],\n  "Instances": [,]\n}'
  split_dir = fx.write_sni(tmp_path, {"task3_bad": broken}, train=["task3_bad"])
  sni.register(str(tmp_path), vocab.embedded_vocabulary(), split_dir=split_dir, prefix="snibad")
  with pytest.raises(ValueError, match=r"task3_bad\.json:3:\d+: malformed JSON"):
    _examples("snibad_def.task3_bad", "train")


def test_empty_definition(tmp_path):
  split_dir = fx.write_sni(tmp_path, {"task4_empty": fx.sni_task(definition="  ")},
                           train=["task4_empty"])
  sni.register(str(tmp_path), vocab.embedded_vocabulary(), split_dir=split_dir, prefix="sniempty")
  with pytest.raises(ValueError, match=r"task4_empty\.json: empty Definition"):
    _examples("sniempty_def.task4_empty", "train")


def test_def_pos2_needs_two_positive_examples(tmp_path):
  split_dir = fx.write_sni(tmp_path, {"task5_one": fx.sni_task(num_positives=1)},
                           train=["task5_one"])
  sni.register(str(tmp_path), vocab.embedded_vocabulary(), split_dir=split_dir, prefix="snione")
  assert len(_examples("snione_def.task5_one", "train")) == 100
  with pytest.raises(ValueError, match=r"task5_one\.json: setting def_pos2 needs 2 positive"):
    _examples("snione_def_pos2.task5_one", "train")


def test_split_file_naming_a_missing_task(tmp_path):
  split_dir = fx.write_sni(tmp_path, {"task6_ok": fx.sni_task()}, train=["task6_ok"],
                           extra_train_names=["task7_missing"])
  sni.register(str(tmp_path), vocab.embedded_vocabulary(), split_dir=split_dir, prefix="snimiss")
  with pytest.raises(FileNotFoundError,
                     match=r"train_tasks\.txt:2: names task 'task7_missing', but there is no"):
    _examples("snimiss_def.task7_missing", "train")


def test_non_english_tasks_are_skipped_by_the_mixture(tmp_path):
  split_dir = fx.write_sni(tmp_path, {"task8_en": fx.sni_task(),
                                      "task9_fr": fx.sni_task(language="French")},
                           train=["task8_en", "task9_fr"])
  sni.register(str(tmp_path), vocab.embedded_vocabulary(), split_dir=split_dir, prefix="snilang")
  mixture = seqio.get_mixture_or_task("snilang_def_train")
  assert {t.name: mixture.get_rate(t) for t in mixture.tasks} == {
      "snilang_def.task8_en": 1.0, "snilang_def.task9_fr": 0.0}


def test_registration_reads_the_clones_split_lists_when_it_has_them(tmp_path):
  clone = tmp_path / "clone"
  fx.write_sni(clone, {"task9_a": fx.sni_task(), "task9_b": fx.sni_task()},
               train=["task9_a"], test=["task9_b"])
  sni.register(str(clone), vocab.embedded_vocabulary(), prefix="snisplit")
  assert [t.name for t in seqio.get_mixture_or_task("snisplit_def_train").tasks] == [
      "snisplit_def.task9_a"]
  assert [t.name for t in seqio.get_mixture_or_task("snisplit_def_test").tasks] == [
      "snisplit_def.task9_b"]
  # A clone without split lists (or no clone at all) gets the packaged default split.
  (tmp_path / "bare" / "tasks").mkdir(parents=True)
  sni.register(str(tmp_path / "bare"), vocab.embedded_vocabulary(), prefix="snibare")
  assert len(seqio.get_mixture_or_task("snibare_def_train").tasks) == 756
  assert sni.split_folder(str(tmp_path / "bare")) is None
  assert sni.split_folder(str(clone)) == str(clone / "splits" / "default")
