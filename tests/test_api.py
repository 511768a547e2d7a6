"""The Python API (`import hypert5`): the README's example run as written, phi equal
to hypert5.eval's for the same examples, and bad runs named by their path."""

import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest
from conftest import REPO, TINY_CONFIG
from test_user_tasks import code_blocks, readme_section

import hypert5
from hypert5 import cli, errors
from hypert5.formats import adapters
from hypert5.inference import evaluate as eval_lib
from hypert5.inference import infer
from hypert5.training import trainer_setup


def test_import_hypert5_imports_neither_jax_nor_tensorflow():
  code = ("import sys, hypert5\n"
          "before = {m for m in ('jax', 'tensorflow', 'seqio') if m in sys.modules}\n"
          "hypert5.load\n"
          "after = {m for m in ('jax', 'tensorflow', 'seqio') if m in sys.modules}\n"
          "print(sorted(before), sorted(after))\n")
  result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=REPO, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  # The API needs JAX once used, never TensorFlow or SeqIO.
  assert result.stdout.split("\n")[0] == "[] ['jax']"
  assert set(hypert5.__all__) <= set(dir(hypert5))
  with pytest.raises(AttributeError, match="no attribute 'nothing'"):
    hypert5.nothing  # noqa: B018  (the attribute lookup is what is tested)


def test_readme_python_api_runs_as_written(tmp_path, monkeypatch, capsys, tiny_hyper_run):
  (code,) = code_blocks(readme_section("Python API"), "python")
  (tmp_path / "runs").mkdir()
  os.symlink(tiny_hyper_run, tmp_path / "runs" / "tiny")
  monkeypatch.chdir(tmp_path)
  namespace = {}
  exec(compile(code, "README.md (Python API)", "exec"), namespace)  # noqa: S102  (the README)
  scores_line, answer_line = capsys.readouterr().out.splitlines()[-2:]
  scores = json.loads(scores_line)
  assert len(scores) == 2 and all(np.isfinite(scores)) and scores[0] != scores[1]
  run, phi = namespace["run"], namespace["phi"]
  assert answer_line == run.generate(namespace["query"], phi)
  # What the example saved is its phi, in HyperT5's format.
  saved = run.load_adapter(str(tmp_path / "my_adapter"))
  np.testing.assert_array_equal(saved["prefix"], np.asarray(phi["prefix"]))
  np.testing.assert_allclose(run.score(namespace["query"], ["hill", "deer"], saved), scores,
                             atol=1e-6)
  # Examples as dicts are the same examples; a definition comes first and changes phi.
  as_dicts = [{"input": x, "output": y} for x, y in namespace["examples"]]
  np.testing.assert_array_equal(run.phi(as_dicts)["prefix"], phi["prefix"])
  defined, _ = run.encode(as_dicts, definition="Answer hill or deer.")
  text = run.vocabulary.decode(defined[0])
  assert text.startswith("Definition: Answer hill or deer. Input: To be, or not to be")
  # A prefix run has no HuggingFace PEFT export.
  with pytest.raises(adapters.AdapterError, match="only LoRA exports"):
    run.save_adapter(phi, str(tmp_path / "peft"), format="peft")


def test_phi_scores_and_answers_equal_hypert5_eval(tmp_path, tiny_hyper_run):
  """The same few-shot examples through the API and through hypert5.eval (which
  reads them from the SeqIO task): the same ids, the same phi, the same scores."""
  from hypert5_tasks import embedded_fewshot
  config = cli.load_config(TINY_CONFIG)
  config.eval.mixture = "embedded_fewshot_test"
  config.eval.max_tasks, config.eval.max_examples, config.eval.batch_size = 2, 4, 4
  saved = tmp_path / "phi"
  eval_lib.evaluate(config, tiny_hyper_run, save_phi=str(saved), progress=False)
  run = hypert5.load(tiny_hyper_run)
  heldout = embedded_fewshot.generate().heldout_tasks[:2]
  for task in heldout:
    pairs = [(e.input, e.output) for e in task.shots]
    phi = run.phi(pairs)
    _, eval_phi = adapters.load_adapter(str(saved / task.name), run.downstream_config)
    np.testing.assert_array_equal(np.asarray(phi["prefix"]), eval_phi["prefix"])
  assert heldout[0].shots != heldout[1].shots  # two tasks, two phi
  # The ids the evaluator reads for the first task, and its scores and greedy answers.
  task = eval_lib.mixture_tasks("embedded_fewshot_test", "hyper")[0]
  assert task.name == heldout[0].name
  examples = eval_lib.read_task(task, "test", run.lengths, 4)
  pairs = [(e.input, e.output) for e in heldout[0].shots]
  ids, _ = run.encode(pairs)
  want, _ = infer.pad_rows([examples[0]["hyper_inputs"]], run.lengths["hyper_inputs"], 1)
  np.testing.assert_array_equal(ids, want)
  evaluator = eval_lib.Evaluator(run.models, {"hyper": run.hyper_params,
                                              "downstream": run.downstream_params},
                                 task.output_features["targets"].vocabulary, run.lengths,
                                 batch_size=4, max_decode_length=run.max_decode_length)
  phi = run.phi(pairs)
  for e, ranked in zip(examples, evaluator.rank(examples)):
    np.testing.assert_allclose(run.score(e["inputs_pretokenized"], e["answer_choices"], phi),
                               ranked["scores"], atol=1e-5)
  answers = run.generate([e["inputs_pretokenized"] for e in examples], phi)
  assert answers == [g["prediction"] for g in evaluator.generate(examples)]


def test_bad_runs_and_examples_are_clear_errors(tmp_path, tiny_hyper_run):
  missing = tmp_path / "nowhere"
  with pytest.raises(errors.CheckpointError, match=f"{missing}: no such directory"):
    hypert5.load(str(missing))
  with pytest.raises(errors.CheckpointError, match=f"{tmp_path}: not a training run"):
    hypert5.load(str(tmp_path))
  run = tmp_path / "run"
  run.mkdir()
  shutil.copyfile(os.path.join(tiny_hyper_run, "config.json"), run / "config.json")
  with pytest.raises(errors.CheckpointError,
                     match=f"{run}: config.json but no checkpoints/"):
    hypert5.load(str(run))
  (run / "checkpoints").mkdir()
  with pytest.raises(errors.CheckpointError,
                     match=f"{run}: no training checkpoints"):
    hypert5.load(str(run))
  config = json.loads((run / "config.json").read_text())
  (run / "config.json").write_text(json.dumps(dict(config, experiment="shared_peft")))
  with pytest.raises(errors.ConfigError,
                     match=f"{run}: experiment 'shared_peft' has no hypermodel"):
    hypert5.load(str(run))
  (run / "config.json").write_text("{not json")
  with pytest.raises(errors.CheckpointError, match=f"{run}/config.json: invalid JSON"):
    hypert5.load(str(run))

  trained = hypert5.load(tiny_hyper_run)
  for examples, message in [
      ([], r"no examples \(and no definition\)"),
      ([("a", "b"), ("c", 3)], r"examples\[1\]: 'output' must be a string"),
      ([{"input": "a"}], r"examples\[0\]: missing key 'output'"),
      (["a b"], r"examples\[0\]: expected an \(input, output\) pair"),
  ]:
    with pytest.raises(errors.ExamplesError, match=message):
      trained.phi(examples)
  with pytest.raises(errors.ExamplesError, match="the definition is empty"):
    trained.phi([("a", "b")], definition="  ")
  with pytest.raises(errors.ExamplesError, match="example_format='numbered'"):
    trained.phi([("a", "b")], example_format="numbered")
  # A definition alone (S-NI's Def setting) is a context.
  assert trained.phi([], definition="Say yes.")["prefix"].shape[0] == 1
  with pytest.raises(ValueError, match="choices: a non-empty list"):
    trained.score("a query", "yes", None)


def test_hyper_init_of_peft_finetuning_is_the_api_phi(tmp_path, tiny_hyper_run):
  """`init.peft=hyper` (paper section 6) starts PEFT training from the phi the API
  makes for the examples file."""
  import jax

  from hypert5 import experiment
  from hypert5.model import partitioning
  examples = [("Now is the winter of our discontent. Options: hill, deer", "hill"),
              ("To be, or not to be: that is the question. Options: hill, deer", "deer")]
  path = tmp_path / "shots.jsonl"
  path.write_text("".join(json.dumps({"input": x, "output": y}) + "\n" for x, y in examples))
  config = cli.load_config(TINY_CONFIG)
  config.experiment = "peft_finetune"
  config.init.peft, config.init.peft_checkpoint = "hyper", tiny_hyper_run
  config.init.peft_examples = str(path)
  models = experiment.build_models(config)
  mesh = partitioning.make_mesh(config.mesh_shape, config.mesh_axes)
  shardings = experiment.param_shardings(models, "shared", mesh, config.logical_axis_rules)
  shared = trainer_setup.initial_shared_peft(config, models, None, None, shardings, None, None,
                                     jax.random.PRNGKey(0))
  phi = hypert5.load(tiny_hyper_run).phi(examples)
  np.testing.assert_array_equal(np.asarray(shared["prefix"]), np.asarray(phi["prefix"][0]))
  # Named as the shared PEFT module's own parameters.
  assert set(shared) == set(experiment.abstract_params(models, "shared"))


def _often_predicting(params, token: int):
  """Downstream parameters whose decoding steps often pick `token`."""
  kernel = np.asarray(params["logits_dense"]["kernel"]).copy()
  kernel[:, token] = 100.0 * np.abs(kernel).max()
  return {**params, "logits_dense": {"kernel": kernel}}


def test_api_and_eval_write_the_same_answer_for_ids_the_vocabulary_cannot_spell(tiny_hyper_run):
  """The model's output layer (2,112) is larger than its SentencePiece model with
  SeqIO's extra ids (2,100): ids 2,100-2,111 have no piece. Both paths write them as
  the unknown piece, the same string."""
  run = hypert5.load(tiny_hyper_run)
  unspellable = run.vocabulary.vocab_size + 5
  assert unspellable < run.downstream_config.vocab_size
  params = _often_predicting(run.downstream_params, unspellable)
  run.__dict__["downstream_params"] = params  # the cached property, replaced
  phi = run.phi([("a b", "c")])
  queries = ["to be or not to be", "now is the winter"]
  answers = run.generate(queries, phi)
  assert "⁇" in " ".join(answers)  # the unspellable id was decoded
  task = eval_lib.mixture_tasks("embedded_fewshot_test", "hyper")[0]
  examples = [{"inputs": run.inference.tokenize(q, "inputs"),
               "hyper_inputs": list(run.encode([("a b", "c")])[0][0])} for q in queries]
  evaluator = eval_lib.Evaluator(run.models, {"hyper": run.hyper_params, "downstream": params},
                                 task.output_features["targets"].vocabulary, run.lengths,
                                 batch_size=run.batch_size,
                                 max_decode_length=run.max_decode_length)
  assert [g["prediction"] for g in evaluator.generate(examples)] == answers


def test_a_second_call_of_the_same_size_does_not_compile_again(tiny_hyper_run):
  """Scores and answers run at the run's fixed shapes: new texts of other lengths,
  more choices and more queries (up to a batch) reuse the compiled programs."""
  from jax import monitoring
  run = hypert5.load(tiny_hyper_run)
  phi = run.phi([("a b", "c")])
  run.score("to be", ["hill", "deer"], phi)
  run.generate(["to be"], phi)
  compiled = []
  listener = lambda event, duration, **kwargs: compiled.append(event)
  monitoring.register_event_duration_secs_listener(listener)
  try:
    run.phi([("now is the winter of our discontent", "hill"), ("x", "y")])
    run.score("a horse a horse my kingdom", ["a", "longer answer choice", "c"], phi)
    run.generate(["one", "two queries, the second longer"], phi)
    jax.jit(lambda x: x * 3 + 1)(np.ones(3))  # one new program: the listener hears it
  finally:
    monitoring.unregister_event_duration_listener(listener)
  assert len([e for e in compiled if e.endswith("backend_compile_duration")]) == 1, compiled


def test_saving_onto_an_existing_adapter_is_refused_unless_overwrite(tmp_path, tiny_hyper_run):
  run = hypert5.load(tiny_hyper_run)
  first, second = run.phi([("a b", "c")]), run.phi([("d e", "f")])
  target = tmp_path / "adapter"
  run.save_adapter(first, str(target))
  with pytest.raises(errors.AdapterError, match=f"{target}: already exists"):
    run.save_adapter(second, str(target))
  np.testing.assert_array_equal(run.load_adapter(str(target))["prefix"], first["prefix"])
  run.save_adapter(second, str(target), overwrite=True)
  np.testing.assert_array_equal(run.load_adapter(str(target))["prefix"], second["prefix"])
  assert sorted(p.name for p in tmp_path.iterdir()) == ["adapter"]  # nothing left beside it
