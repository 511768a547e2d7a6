"""The input pipeline: import anywhere, determinism, sharding, resumption, forms."""

import os
import subprocess
import sys

import numpy as np
import pytest
import seqio

import hypert5_tasks

LENGTHS = {"hyper_inputs": 256, "inputs": 32, "targets": 4}
MIXTURES = [
    "embedded_caclm", "embedded_fewshot_train", "embedded_fewshot_test",
    "p3_t0_train", "p3_heldout_score_eval", "sni_def_train", "sni_def_test",
    "sni_def_pos2_train", "sni_def_pos2_test",
    *(f"metaicl_{s}_{part}" for s in ("hr_to_lr", "non_nli_to_nli", "non_class_to_class")
      for part in ("train", "test")),
]


def test_import_from_any_directory_without_any_data(tmp_path):
  env = dict(os.environ)
  for var in ("HYPERT5_P3_DIR", "HYPERT5_METAICL_DIR", "HYPERT5_SNI_DIR", "TFDS_DATA_DIR"):
    env[var] = str(tmp_path / "nowhere")
  env["HYPERT5_VOCAB"] = str(tmp_path / "nowhere" / "spm.model")  # never opened at import
  out = subprocess.run(
      [sys.executable, "-c",
       "import hypert5_tasks, seqio; print(len(seqio.MixtureRegistry.names()))"],
      cwd=tmp_path, env=env, capture_output=True, text=True, check=True, timeout=120)
  assert int(out.stdout.split()[-1]) >= len(MIXTURES)


def test_every_mixture_is_registered_in_every_form():
  names = set(seqio.MixtureRegistry.names())
  for mixture in MIXTURES:
    forms = [""] if mixture == "embedded_caclm" else ["", "_concat", "_xonly"]
    for suffix in forms:
      assert mixture + suffix in names
  assert {"caclm_c4", "embedded_lm"} <= set(seqio.TaskRegistry.names())


def _dataset(**kwargs):
  return hypert5_tasks.get_dataset("embedded_fewshot_train", LENGTHS, batch_size=4,
                                   keep_features=("task_name",), **kwargs)


def _batches(n, **kwargs):
  return list(_dataset(**kwargs).take(n).as_numpy_iterator())


def _same(a, b):
  return len(a) == len(b) and all(np.array_equal(x[k], y[k]) for x, y in zip(a, b) for k in x)


@pytest.fixture(scope="module")
def uninterrupted():
  return _batches(5, seed=7)


def test_same_seed_same_stream_so_skipping_resumes(uninterrupted):
  assert _same(uninterrupted[3:], list(_dataset(seed=7).skip(3).take(2).as_numpy_iterator()))
  assert not _same(uninterrupted[:1], _batches(1, seed=8))


def test_shards_hold_different_tasks():
  names = [{n for b in _batches(5, shard_index=i, num_shards=2) for n in b["task_name"]}
           for i in range(2)]
  assert names[0] and names[1] and not names[0] & names[1]


@pytest.mark.parametrize("form,length", [("concat", 1024), ("xonly", 128)])
def test_downstream_forms_pack(form, length):
  batch = next(hypert5_tasks.get_dataset(
      "embedded_fewshot.heldout_00_m0", {"inputs": length, "targets": 16}, split="test",
      form=form, pack=True, batch_size=2, num_epochs=1).as_numpy_iterator())
  assert "hyper_encoder_input_tokens" not in batch
  assert batch["encoder_segment_ids"].max() > 1  # several examples share a row
  assert batch["encoder_input_tokens"].shape == (2, length)


def test_packing_a_hyper_mixture_is_refused():
  with pytest.raises(ValueError, match="cannot pack"):
    hypert5_tasks.get_dataset("embedded_fewshot_train", LENGTHS, pack=True)


def test_lm_task_packs_for_downstream_pretraining():
  batch = next(hypert5_tasks.get_dataset("embedded_lm", {"inputs": 128, "targets": 128},
                                         pack=True, batch_size=2, seed=0).as_numpy_iterator())
  assert set(batch) >= {"encoder_input_tokens", "encoder_segment_ids", "decoder_positions"}
  assert batch["decoder_loss_weights"].dtype == np.float32


def test_every_few_shot_task_declares_how_it_is_scored():
  from hypert5_tasks import scoring
  mixtures = [m for m in MIXTURES if m != "embedded_caclm"] + [
      "embedded_icl_train", "embedded_icl_test", "embedded_constant_test"]
  for mixture in mixtures:
    for suffix in ("", "_concat", "_xonly"):
      tasks = seqio.get_mixture_or_task(mixture + suffix).tasks
      undeclared = [t.name for t in tasks if not t.metric_fns]
      assert not undeclared, (mixture + suffix, undeclared[:3])
      if mixture.endswith(("_test", "_eval")):  # and how its results add up
        assert scoring.benchmark_of(mixture + suffix).name == mixture.split("_")[0]
  # Rank classification (score metrics) where the tasks have answer choices.
  assert seqio.get_mixture_or_task("p3_heldout_score_eval").tasks[0].score_metric_fns
  assert seqio.get_mixture_or_task("sni_def_test").tasks[0].predict_metric_fns
