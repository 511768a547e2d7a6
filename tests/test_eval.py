"""`hypert5.eval`: rank classification, cached phi, benchmark aggregation, bad input."""

import json
import os
import subprocess
import sys

import fixtures_tasks as fx
import jax
import numpy as np
import pytest
import seqio
from conftest import REPO, TINY_CONFIG

import hypert5_tasks  # noqa: F401  (registers the tasks)
from hypert5 import cli, experiment, score
from hypert5.inference import api
from hypert5.inference import evaluate as eval_lib
from hypert5.model import t5
from hypert5.model.t5_config import get_size
from hypert5.text.vocab import Vocabulary
from hypert5_tasks import metaicl, p3, scoring, sni
from hypert5_tasks import vocab as task_vocab


def tiny_config(**changes):
  config = cli.load_config(TINY_CONFIG)
  config.data.source = "synthetic"
  config.eval.batch_size = 4
  for key, value in changes.items():
    target = config
    *path, last = key.split(".")
    for p in path:
      target = target[p]
    target[last] = value
  return config


def test_rank_classification_is_the_argmax_of_score_log_likelihoods(spm_path):
  cfg = get_size("tiny", vocab_size=131)
  params = t5.init_params(cfg, jax.random.PRNGKey(0))
  models = experiment.Models("t5_mtf", t5.T5(cfg), None, None)
  vocabulary = Vocabulary(spm_path)
  rs = np.random.RandomState(0)
  examples = [{"inputs": list(rs.randint(3, 60, rs.randint(3, 9))) + [1],
               "answer_choices": ["the king", "a queen", "river", "night and day"][:2 + i % 3],
               "label": 0, "references": ["x"]} for i in range(7)]
  evaluator = eval_lib.Evaluator(models, {"downstream": params}, vocabulary,
                                 {"inputs": 16, "targets": 8}, batch_size=4,
                                 max_decode_length=4)
  ranked = evaluator.rank(examples)
  pairs = [(e["inputs"], vocabulary.encode(c) + [1]) for e in examples for c in e["answer_choices"]]
  scored = [r["log_likelihood"] for r in score.score_examples(t5.T5(cfg), params, pairs, 5)]
  start = 0
  for e, r in zip(examples, ranked):
    want = scored[start:start + len(e["answer_choices"])]
    start += len(e["answer_choices"])
    np.testing.assert_allclose(r["scores"], want, atol=1e-4)
    assert r["prediction_index"] == int(np.argmax(want))
  assert len({r["prediction_index"] for r in ranked}) > 1  # not a constant answer


@pytest.fixture(scope="module")
def two_heldout_tasks():
  names = [t.name for t in seqio.get_mixture_or_task("embedded_fewshot_test").tasks][:2]
  if "embedded_fewshot_test_two" not in seqio.MixtureRegistry.names():
    seqio.MixtureRegistry.add("embedded_fewshot_test_two", names, default_rate=1.0)
  return "embedded_fewshot_test_two"


def test_cached_phi_equals_regenerating_phi_per_query(tiny_hyper_run, two_heldout_tasks):
  config = tiny_config(**{"eval.mixture": two_heldout_tasks, "eval.max_examples": 6})
  models = experiment.build_models(config)
  params = api.load_params(config, tiny_hyper_run, models)
  tasks = eval_lib.mixture_tasks(two_heldout_tasks, "hyper")
  lengths = {"hyper_inputs": config.data.hyper_inputs_length,
             "inputs": config.data.inputs_length, "targets": config.data.targets_length}
  examples = eval_lib.read_task(tasks[0], "test", lengths, 6)
  assert len({tuple(e["hyper_inputs"]) for e in examples}) == 1  # one few-shot set per task
  vocabulary = tasks[0].output_features["targets"].vocabulary
  make = lambda per_query: eval_lib.Evaluator(models, params, vocabulary, lengths, 4, 4,
                                              per_query_phi=per_query)
  cached, fresh = make(False), make(True)
  for a, b in zip(cached.rank(examples), fresh.rank(examples)):
    np.testing.assert_allclose(a["scores"], b["scores"], atol=1e-5)
    assert a["prediction"] == b["prediction"]
  assert len(cached.phi_cache) == 1 and not fresh.phi_cache
  generated = [cached.generate(examples), fresh.generate(examples)]
  assert [g["prediction"] for g in generated[0]] == [g["prediction"] for g in generated[1]]
  # The whole evaluation: cached phi and per-query phi give the same results.
  results = [eval_lib.evaluate(config, tiny_hyper_run, per_query_phi=q, progress=False)[0]
             for q in (False, True)]
  assert results[0]["tasks"] == results[1]["tasks"]
  assert results[0]["average"] == 50.0  # mirrored tasks: an untrained model is at chance


def test_p3_results_average_anli_rounds_then_datasets(tmp_path):
  root = tmp_path / "p3"
  subsets = ["anli_GPT_3_style_r1_score_eval", "anli_GPT_3_style_r2_score_eval",
             "anli_GPT_3_style_r3_score_eval", "anli_can_we_infer_r1_score_eval",
             "super_glue_cb_GPT_3_style_score_eval", "super_glue_rte_GPT_3_style_score_eval"]
  for i, subset in enumerate(subsets):
    fx.write_p3_parquet(root, subset, "validation",
                        fx.p3_score_eval_rows(6 + i, prefix=f"p{i}"))
    fx.write_p3_parquet(root, subset, "train", fx.p3_score_eval_rows(20, prefix=f"t{i}"))
  p3.register(str(root), task_vocab.embedded_vocabulary(), train_subsets=[],
              eval_subsets=subsets, prefix="p3fx", train_mixture="p3fx_train",
              eval_mixture="p3_fx_eval")
  config = tiny_config(**{"experiment": "t5_mtf", "eval.mixture": "p3_fx_eval",
                          "data.inputs_length": 64})
  model_dir = tmp_path / "model"
  from hypert5.formats import checkpoints
  cfg = experiment.t5_config(config)
  checkpoints.save_model(str(model_dir), t5.init_params(cfg, jax.random.PRNGKey(1)), cfg)
  results, predictions = eval_lib.evaluate(config, str(model_dir), progress=False)
  accuracy = {eval_lib.base_task_name(name).split(".", 1)[1]: v["accuracy"]
              for name, v in results["tasks"].items()}
  rounds = [np.mean([accuracy[s] for s in subsets if f"_r{r}_" in s]) for r in (1, 2, 3)]
  assert results["groups"]["ANLI"] == pytest.approx(np.mean(rounds))
  assert list(results["groups"]) == ["ANLI", "CB", "RTE"]
  assert results["average"] == pytest.approx(np.mean(list(results["groups"].values())))
  assert len(predictions) == sum(6 + i for i in range(len(subsets)))
  table = eval_lib.format_table("p3", {"T5": results})
  assert table.splitlines()[0] == "| Model | ANLI | CB | RTE | Avg |"


def test_metaicl_averages_seeds_then_tasks_and_uses_macro_f1():
  per_task = {}
  for task in ("glue-rte", "ai2_arc"):
    for seed in metaicl.TEST_SEEDS:
      name = f"metaicl.{task.replace('-', '_')}.seed{seed}"
      targets = ["positive", "negative", "positive", "negative", "positive"]
      preds = ["positive"] * 5 if seed == 13 else targets
      # Scored as the registered task declares (its metric_fns and postprocess_fn).
      per_task[name] = eval_lib.score_task(
          seqio.get_mixture_or_task(name),
          [{"targets_pretokenized": t, "references": [t]} for t in targets],
          {"generate": [{"prediction": p} for p in preds]})
  # glue-rte is a classification task: Macro-F1 (never-predicted class: precision 1, F1 0).
  assert per_task["metaicl.glue_rte.seed13"] == {"macro_f1": pytest.approx(37.5)}
  assert per_task["metaicl.ai2_arc.seed13"] == {"accuracy": 60.0}
  benchmark = scoring.benchmark_of("metaicl_hr_to_lr_test")
  assert benchmark.name == "metaicl"
  assert scoring.benchmark_of("metaicl_hr_to_lr_test_xonly") == benchmark
  summary = eval_lib.aggregate(benchmark, per_task)
  assert summary["groups"]["glue-rte"] == pytest.approx((4 * 100 + 37.5) / 5)
  assert summary["groups"]["ai2_arc"] == pytest.approx((4 * 100 + 60) / 5)
  assert summary["average"] == pytest.approx((summary["groups"]["glue-rte"]
                                              + summary["groups"]["ai2_arc"]) / 2)


def run_eval(*args, env=None):
  return subprocess.run([sys.executable, "-m", "hypert5.eval", *args], capture_output=True,
                        text=True, cwd=REPO, env=env, timeout=600)


def test_unknown_mixture_and_mismatched_checkpoint_are_clear_errors(tmp_path, tiny_hyper_run):
  out = tmp_path / "out"
  result = run_eval(f"--config={TINY_CONFIG}", f"--checkpoint={tiny_hyper_run}",
                    f"--output={out}", "--config.eval.mixture=embedded_fewshot_tset")
  assert result.returncode == 1
  assert "unknown mixture 'embedded_fewshot_tset'" in result.stderr
  assert len(result.stderr.strip().splitlines()) == 1  # one line: no traceback, no TF noise
  assert "embedded_fewshot_test" in result.stderr and not out.exists()
  result = run_eval(f"--config={TINY_CONFIG}", f"--checkpoint={tiny_hyper_run}",
                    f"--output={out}", "--config.model.d_ff=96")
  assert result.returncode == 1
  assert "has shape [2, 64, 128] in the checkpoint but [2, 64, 96]" in result.stderr
  assert not out.exists()


def test_empty_test_split_is_an_error(tmp_path):
  import tensorflow as tf
  name = "embedded_fewshot_empty.task"
  if name not in seqio.TaskRegistry.names():
    features = seqio.get_mixture_or_task("embedded_fewshot_test").tasks[0].output_features
    seqio.TaskRegistry.add(
        name, source=seqio.FunctionDataSource(
            lambda split, shuffle_files: tf.data.Dataset.from_tensor_slices(
                {"inputs": tf.zeros([0, 3], tf.int32)}), splits=["test"]),
        output_features={"inputs": features["inputs"]})
  task = seqio.get_mixture_or_task(name)
  with pytest.raises(eval_lib.EvalError, match=r"task 'embedded_fewshot_empty.task': the "
                                               r"'test' split is empty"):
    eval_lib.read_task(task, "test", {"inputs": 8}, 0)


def test_results_are_written_together(tmp_path):
  results = {"name": "m", "benchmark": "embedded", "mixture": "x", "groups": {"a": 50.0},
             "average": 50.0}
  eval_lib.write_results(str(tmp_path / "out"), results, [{"task": "a", "prediction": "p"}])
  assert sorted(os.listdir(tmp_path / "out")) == ["predictions.jsonl", "results.json",
                                                  "results.md"]
  assert json.loads((tmp_path / "out" / "results.json").read_text())["average"] == 50.0
  assert not (tmp_path / "out.partial").exists()


def test_sni_generation_keeps_100_instances_and_all_references(tmp_path):
  root = tmp_path / "sni"
  tasks = {"task001_fx_a": fx.sni_task(num_instances=120, references=2),
           "task002_fx_b": fx.sni_task(num_instances=30)}
  split_dir = fx.write_sni(root, tasks, train=[], test=list(tasks))
  sni.register(str(root), task_vocab.embedded_vocabulary(), split_dir=split_dir,
               prefix="sni_fx", settings=("def",))
  config = tiny_config(**{"experiment": "t5_mtf", "eval.mixture": "sni_fx_def_test",
                          "eval.max_decode_length": 4, "eval.batch_size": 16})
  from hypert5.formats import checkpoints
  cfg = experiment.t5_config(config)
  checkpoints.save_model(str(tmp_path / "model"), t5.init_params(cfg, jax.random.PRNGKey(1)),
                         cfg)
  results, predictions = eval_lib.evaluate(config, str(tmp_path / "model"), progress=False)
  counts = {t: sum(p["task"] == t for p in predictions) for t in results["tasks"]}
  assert sorted(counts.values()) == [30, 100]
  assert all(len(p["references"]) == 2 for p in predictions if "fx_a" in p["task"])
  assert set(next(iter(results["tasks"].values()))) == {"rouge_l", "exact_match"}
  assert results["average"] == pytest.approx(np.mean([v["rouge_l"]
                                                      for v in results["tasks"].values()]))
