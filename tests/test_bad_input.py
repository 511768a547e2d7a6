"""Bad input and faults, across the commands and the Python API: each ends in one clear
error (exit status 1, or 2 for flags that do not parse; no traceback) naming the file,
key or setting, and what existed before is intact. The table in
docs/bad_input.md lists what each kind of input gets.

Most checks need no training; those that read a run share configs/tiny.py's 4-step
run (conftest.tiny_hyper_run), each on a copy it may damage.
"""

import json
import logging
import os
import pathlib
import re
import shutil
import stat
import subprocess
import sys

import jax
import numpy as np
import pytest
import safetensors.numpy
from conftest import REPO, TINY_CONFIG

import hypert5
from hypert5 import errors, experiment
from hypert5.formats import adapters
from hypert5.inference import api, evaluate

EXAMPLES = [{"input": "To be, or not to be: that is the question.", "output": "deer"},
            {"input": "Now is the winter of our discontent.", "output": "hill"}]


def command(module, *args, env=None, cwd=REPO, timeout=600):
  """`python -m hypert5.<module> ARGS` in a subprocess."""
  return subprocess.run([sys.executable, "-m", f"hypert5.{module}", *args], capture_output=True,
                        text=True, cwd=cwd, env=env, timeout=timeout)


def assert_one_error(result, pattern, status=1):
  """Exit `status`, one `error:` line matching `pattern`, no traceback."""
  assert result.returncode == status, result.stderr[-3000:]
  lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
  assert len(lines) == 1, result.stderr[-3000:]
  assert re.search(pattern, lines[0]), lines[0]
  assert "Traceback" not in result.stderr


def snapshot(folder):
  """{relative path: bytes} of every file under `folder`."""
  out = {}
  for root, _, names in os.walk(folder):
    for name in names:
      path = os.path.join(root, name)
      with open(path, "rb") as f:
        out[os.path.relpath(path, folder)] = f.read()
  return out


def write_jsonl(path, rows, raw: bytes = b""):
  with open(path, "wb") as f:
    for row in rows:
      f.write((json.dumps(row) + "\n").encode())
    f.write(raw)
  return str(path)


@pytest.fixture()
def run_copy(tmp_path, tiny_hyper_run):
  """A copy of the tiny run, free to damage."""
  target = tmp_path / "run"
  shutil.copytree(tiny_hyper_run, target)
  return target


@pytest.fixture()
def read_only(tmp_path):
  """A folder this process cannot write into: a read-only one, or, for root (who
  writes anywhere), /proc/self."""
  folder = tmp_path / "read_only"
  folder.mkdir()
  folder.chmod(stat.S_IRUSR | stat.S_IXUSR)
  try:
    (folder / "probe").write_text("")
  except OSError:
    yield folder
  else:
    yield pathlib.Path("/proc/self")
  folder.chmod(0o755)


# -- hypert5.train: settings checked before any work ---------------------------------

TRAIN_SETTINGS = [
    ("--config.keep_checkpoints=0", r"keep_checkpoints=0: must be a positive integer "
                                    r"\(keeping none would delete"),
    ("--config.batch_size=0", r"config.batch_size=0: must be a positive integer"),
    ("--config.checkpoint_every=0", r"config.checkpoint_every=0: must be a positive integer"),
    ("--config.total_steps=-5", r"config.total_steps=-5: must be a positive integer"),
    ("--config.log_every=0", r"config.log_every=0: must be a positive integer"),
    ("--config.data.inputs_length=-5", r"config.data.inputs_length=-5"),
    ("--config.eval_every=-1", r"config.eval_every=-1: must be a number of 0 or more"),
    ("--config.optimizer.name=sgd", r"optimizer.name='sgd': expected one of adafactor, adamw"),
    ("--config.optimizer.schedule=step", r"optimizer.schedule='step': expected one of"),
    ("--config.data.source=csv", r"data.source='csv': expected one of seqio, seqio_tfdata"),
    ("--config.experiment=nope", r"experiment='nope': expected one of"),
    ("--config.optimizer.grad_accum_steps=3", r"batch_size=8 must divide into"),
]


@pytest.mark.parametrize("flag,message", TRAIN_SETTINGS)
def test_train_refuses_a_setting_that_cannot_run_and_keeps_the_run(run_copy, flag, message):
  before = snapshot(run_copy)
  result = command("train", f"--config={TINY_CONFIG}", f"--workdir={run_copy}",
                   "--config.total_steps=6", flag)
  assert_one_error(result, message)
  assert snapshot(run_copy) == before


@pytest.mark.parametrize("args,message", [
    (["--config.optimizr.name=adamw"], r"unknown config key 'optimizr'.*optimizer"),
    (["--config.batch_size=eight"], r"batch_size"),
    (["--no_such_flag=1"], r"no_such_flag"),
])
def test_flags_that_do_not_parse_are_one_line_with_status_2(tmp_path, args, message):
  result = command("train", f"--config={TINY_CONFIG}", f"--workdir={tmp_path / 'wd'}", *args)
  assert_one_error(result, message, status=2)
  assert not (tmp_path / "wd").exists()


def test_a_missing_config_file_is_one_line(tmp_path):
  result = command("train", "--config=configs/nope.py", f"--workdir={tmp_path / 'wd'}")
  assert_one_error(result, r"configs/nope.py", status=2)


def test_train_without_a_workdir_is_one_line():
  assert_one_error(command("train", f"--config={TINY_CONFIG}"), r"--workdir is required")


def test_a_workdir_that_is_a_file_is_refused(tmp_path):
  target = tmp_path / "file"
  target.write_text("mine")
  result = command("train", f"--config={TINY_CONFIG}", f"--workdir={target}")
  assert_one_error(result, rf"--workdir {target}: {target} is not a directory")
  assert target.read_text() == "mine"


def test_a_read_only_workdir_is_refused_before_any_work(read_only):
  result = command("train", f"--config={TINY_CONFIG}", f"--workdir={read_only / 'wd'}")
  assert_one_error(result, rf"{read_only} is not writable")


def test_resuming_with_another_optimizer_is_refused_and_nothing_is_overwritten(run_copy):
  before = snapshot(run_copy)
  result = command("train", f"--config={TINY_CONFIG}", f"--workdir={run_copy}",
                   "--config.total_steps=8", "--config.optimizer.name=adafactor")
  assert_one_error(result, r"cannot be restored with this config; .*config.json differs "
                           r"from this config in optimizer.name: 'adamw' -> 'adafactor'")
  assert snapshot(run_copy) == before  # metrics.jsonl and config.json untouched


def test_a_workdir_holding_another_runs_start_is_refused(run_copy):
  shutil.rmtree(run_copy / "checkpoints")  # a run that died before its first save
  before = snapshot(run_copy)
  result = command("train", f"--config={TINY_CONFIG}", f"--workdir={run_copy}",
                   "--config.peft.prefix_length=8")
  assert_one_error(result, r"holds the start of another run .*peft.prefix_length: 4 -> 8")
  assert snapshot(run_copy) == before


def test_no_restorable_checkpoint_is_refused_not_restarted(run_copy):
  for step in ("2", "4"):
    for root, _, names in os.walk(run_copy / "checkpoints" / step / "hyper"):
      for name in names:
        os.remove(os.path.join(root, name))
  metrics = (run_copy / "metrics.jsonl").read_text()
  result = command("train", f"--config={TINY_CONFIG}", f"--workdir={run_copy}",
                   "--config.total_steps=4")
  assert_one_error(result, r"no checkpoint in .*checkpoints can be restored: 4 .*; 2 .*"
                           r"Nothing was changed")
  assert (run_copy / "metrics.jsonl").read_text() == metrics
  assert sorted(os.listdir(run_copy / "checkpoints")) == ["2", "4"]


def test_a_torn_last_metrics_line_is_recovered(run_copy):
  metrics = run_copy / "metrics.jsonl"
  whole = metrics.read_text()
  with open(metrics, "a") as f:
    f.write('{"step": 5, "lo')  # a crash while the line was written
  result = command("train", f"--config={TINY_CONFIG}", f"--workdir={run_copy}",
                   "--config.total_steps=4")
  assert result.returncode == 0, result.stderr[-3000:]
  assert "dropped its last line" in result.stderr
  assert metrics.read_text() == whole


def test_a_broken_metrics_line_before_the_last_is_named(run_copy):
  metrics = run_copy / "metrics.jsonl"
  lines = metrics.read_text().splitlines(keepends=True)
  broken = "".join(lines[:1] + ["not json\n"] + lines[1:])
  metrics.write_text(broken)
  result = command("train", f"--config={TINY_CONFIG}", f"--workdir={run_copy}",
                   "--config.total_steps=4")
  assert_one_error(result, rf"{metrics}:2: not a metrics line")
  assert metrics.read_text() == broken


@pytest.mark.parametrize("entry,message", [
    ("no_such_tasks_module", r"HYPERT5_TASK_MODULES names module 'no_such_tasks_module'"),
    ("missing_tasks.py", r"HYPERT5_TASK_MODULES names 'missing_tasks.py', but there is no "
                         r"file"),
])
def test_a_task_module_that_is_not_there_is_one_line(tmp_path, entry, message):
  env = dict(os.environ, HYPERT5_TASK_MODULES=entry)
  result = command("eval", f"--config={TINY_CONFIG}", f"--checkpoint={tmp_path}", env=env,
                   cwd=tmp_path)
  assert_one_error(result, message)


# -- hypert5.eval -------------------------------------------------------------------


def eval_args(run, *more):
  return [f"--config={TINY_CONFIG}", f"--checkpoint={run}", "--config.eval.max_tasks=2",
          "--config.eval.max_examples=2", *more]


def test_eval_of_a_missing_checkpoint_is_one_line(tmp_path):
  result = command("eval", *eval_args(tmp_path / "nowhere"))
  assert_one_error(result, r"nowhere")


def test_eval_into_a_read_only_folder_says_so_before_the_work(run_copy, read_only):
  result = command("eval", *eval_args(run_copy, f"--output={read_only / 'out'}"))
  assert_one_error(result, rf"--output {read_only / 'out'}: {read_only} is not writable")
  assert "eval embedded" not in result.stderr  # no task was evaluated


def test_eval_into_a_file_is_refused(run_copy, tmp_path):
  target = tmp_path / "out"
  target.write_text("mine")
  result = command("eval", *eval_args(run_copy, f"--output={target / 'x'}"))
  assert_one_error(result, r"is not a directory")
  assert target.read_text() == "mine"


def test_eval_with_a_bad_setting_is_refused(run_copy):
  result = command("eval", *eval_args(run_copy, "--config.eval.batch_size=0"))
  assert_one_error(result, r"config.eval.batch_size=0: must be a positive integer")


def test_save_phi_into_a_folder_holding_phi_is_refused_before_the_work(run_copy, tmp_path):
  saved = tmp_path / "phi"
  first = command("eval", *eval_args(run_copy, f"--save_phi={saved}",
                                     f"--output={tmp_path / 'a'}"))
  assert first.returncode == 0, first.stderr[-3000:]
  before = snapshot(saved)
  again = command("eval", *eval_args(run_copy, f"--save_phi={saved}",
                                     f"--output={tmp_path / 'b'}"))
  assert_one_error(again, rf"--save_phi={saved} already holds 2 of this mixture's tasks' phi")
  assert snapshot(saved) == before and not (tmp_path / "b").exists()
  # The phi saved load back as they were written.
  loaded = command("eval", *eval_args(run_copy, f"--load_phi={saved}",
                                      f"--output={tmp_path / 'c'}"))
  assert loaded.returncode == 0, loaded.stderr[-3000:]
  results = [json.loads((tmp_path / o / "results.json").read_text()) for o in ("a", "c")]
  assert results[0]["tasks"] == results[1]["tasks"]


def test_load_phi_of_another_peft_kind_is_refused(run_copy, tmp_path):
  run = hypert5.load(str(run_copy))
  task = evaluate.mixture_tasks("embedded_fewshot_test", "hyper")[0].name
  lora = adapters.PeftConfig(kind="lora", lora_rank=2, lora_alpha=2.0)
  phi = jax.tree.map(lambda shape: np.zeros((1, *shape), np.float32),
                     adapters.phi_shapes(lora, run.downstream_config),
                     is_leaf=lambda x: isinstance(x, tuple))
  adapters.save_native(str(tmp_path / "phi" / task), phi, lora, run.downstream_config)
  result = command("eval", *eval_args(run_copy, f"--load_phi={tmp_path / 'phi'}",
                                      "--config.eval.max_tasks=1",
                                      f"--output={tmp_path / 'out'}"))
  assert_one_error(result, rf"{task}: phi for .*lora.* but this run's model reads .*prefix")
  assert not (tmp_path / "out").exists()


def test_load_phi_from_a_missing_folder_is_one_line(run_copy, tmp_path):
  result = command("eval", *eval_args(run_copy, f"--load_phi={tmp_path / 'none'}"))
  assert_one_error(result, r"no adapter_config.json|no hypert5_adapter.json|none")


def damage_latest(run):
  for root, _, names in os.walk(run / "checkpoints" / "4" / "hyper"):
    for name in names:
      os.remove(os.path.join(root, name))


def test_eval_of_a_run_whose_latest_step_is_damaged_reads_the_older_one(run_copy, tmp_path):
  damage_latest(run_copy)
  result = command("eval", *eval_args(run_copy, f"--output={tmp_path / 'out'}"))
  assert result.returncode == 0, result.stderr[-3000:]
  assert "step 4 is damaged; read step 2 instead" in result.stderr
  assert "Traceback" not in result.stderr


# -- hypert5.adapt ------------------------------------------------------------------


def adapt(run, examples, out, *more):
  return command("adapt", f"--checkpoint={run}", f"--examples={examples}", f"--out={out}",
                 *more)


@pytest.mark.parametrize("value", ["-1", "0"])
def test_adapt_max_examples_below_one_is_refused(run_copy, tmp_path, value):
  examples = write_jsonl(tmp_path / "shots.jsonl", EXAMPLES)
  result = adapt(run_copy, examples, tmp_path / "out", f"--max_examples={value}")
  assert_one_error(result, rf"max_examples={value}: must be a positive integer")
  assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("raw,message", [
    (b"", r"shots.jsonl: no examples"),
    (b'{"input": "a"}\n', r"shots.jsonl:1: missing key 'output'"),
    (b'{"input": "a", "output": \n', r"shots.jsonl:1: invalid JSON"),
    (b'{"input": "caf\xe9", "output": "b"}\n', r"shots.jsonl:1: not UTF-8 text"),
    (b'["input", "output"]\n', r"shots.jsonl:1: expected an object"),
    (b'{"input": 3, "output": "b"}\n', r"shots.jsonl:1: 'input' must be a string"),
])
def test_adapt_examples_that_cannot_be_read_name_file_and_line(run_copy, tmp_path, raw,
                                                                message):
  examples = write_jsonl(tmp_path / "shots.jsonl", [], raw)
  result = adapt(run_copy, examples, tmp_path / "out")
  assert_one_error(result, message)
  assert not (tmp_path / "out").exists()


def test_adapt_onto_an_existing_adapter_is_refused_unless_overwrite(run_copy, tmp_path):
  examples = write_jsonl(tmp_path / "shots.jsonl", EXAMPLES)
  out = tmp_path / "out"
  assert adapt(run_copy, examples, out).returncode == 0
  before = snapshot(out)
  assert_one_error(adapt(run_copy, examples, out), rf"{out}: already exists")
  assert snapshot(out) == before
  replaced = adapt(run_copy, examples, out, "--overwrite")
  assert replaced.returncode == 0, replaced.stderr[-3000:]


def test_adapt_of_a_folder_that_is_no_run_is_one_line(tmp_path):
  examples = write_jsonl(tmp_path / "shots.jsonl", EXAMPLES)
  result = adapt(tmp_path, examples, tmp_path / "out")
  assert_one_error(result, r"not a training run")


def test_an_example_longer_than_the_input_is_said_and_recorded(run_copy, tmp_path):
  huge = [{"input": "word " * 200_000, "output": "yes"}] + EXAMPLES  # about 1 MB
  examples = write_jsonl(tmp_path / "shots.jsonl", huge)
  result = adapt(run_copy, examples, tmp_path / "out")
  assert result.returncode == 0, result.stderr[-3000:]
  assert "the first example alone is longer than the hypermodel's 256 input tokens" in (
      result.stderr)
  assert "0 of 3 examples fit" in result.stdout
  fit = json.loads((tmp_path / "out" / adapters.CONTEXT_FILE).read_text())
  assert fit == {"examples_given": 3, "examples_kept": 0, "first_example_cut": True,
                 "definition_cut": False}


def test_a_definition_crowding_out_the_examples_is_said(run_copy, tmp_path, caplog):
  run = hypert5.load(str(run_copy))
  with caplog.at_level(logging.WARNING, logger="hypert5.api"):
    fit = run.context_fit(EXAMPLES, definition="Answer. " * 300)
  assert fit["examples_kept"] == 0 and fit["definition_cut"]
  assert "the definition overflows the hypermodel's 256 input tokens: none of the 2" in (
      caplog.text)


# -- hypert5.score ------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, tiny_hyper_run):
  """The tiny run's downstream T5 as a native model folder (hypert5.score reads those)."""
  from hypert5.formats import checkpoints
  run = hypert5.load(tiny_hyper_run)
  target = tmp_path_factory.mktemp("score") / "t5"
  checkpoints.save_model(str(target), run.downstream_params, run.downstream_config,
                         vocab_path=run.vocabulary.path)
  return target


def score(model, data, *more):
  return command("score", f"--checkpoint={model}", f"--data={data}", *more)


@pytest.mark.parametrize("raw,message", [
    (b"", r"data.jsonl: no examples"),
    (b'{"inputs": "a b", "targets": []}\n', r"data.jsonl:1: 'targets' is empty"),
    (b'{"inputs": [], "targets": "a"}\n', r"data.jsonl:1: 'inputs' is empty"),
    (b'{"inputs": "a", "targets": [99999]}\n', r"data.jsonl:1: 'targets': token id 99999"),
    (b'{"inputs": "\xff", "targets": "a"}\n', r"data.jsonl:1: not UTF-8 text"),
    (b'{"inputs": "a"}\n', r"data.jsonl:1: missing key 'targets'"),
])
def test_score_input_that_cannot_be_scored_names_file_and_line(model_dir, tmp_path, raw,
                                                                message):
  data = write_jsonl(tmp_path / "data.jsonl", [], raw)
  result = score(model_dir, data, f"--output={tmp_path / 'out.jsonl'}")
  assert_one_error(result, message)
  assert not (tmp_path / "out.jsonl").exists()


def test_score_batch_size_zero_is_refused(model_dir, tmp_path):
  data = write_jsonl(tmp_path / "data.jsonl", [{"inputs": "a", "targets": "b"}])
  assert_one_error(score(model_dir, data, "--batch_size=0"), r"--batch_size=0")


def test_score_under_a_nan_adapter_writes_nothing(model_dir, tmp_path):
  cfg = json.loads((model_dir / "t5_config.json").read_text())
  prefix = np.full((cfg["num_encoder_layers"], 2, 2, 4, cfg["num_heads"] * cfg["d_kv"]),
                   np.nan, np.float32)
  folder = tmp_path / "nan_adapter"
  folder.mkdir()
  (folder / adapters.NATIVE_CONFIG).write_text(json.dumps(
      {"peft": {"kind": "prefix", "prefix_length": 4}, "base": {}}))
  safetensors.numpy.save_file({"prefix": prefix}, str(folder / adapters.NATIVE_WEIGHTS))
  data = write_jsonl(tmp_path / "data.jsonl", [{"inputs": "a b", "targets": "c"}])
  result = score(model_dir, data, f"--adapter={folder}", f"--output={tmp_path / 'out.jsonl'}")
  assert result.returncode == 1, result.stderr[-3000:]
  assert "Traceback" not in result.stderr and not (tmp_path / "out.jsonl").exists()
  assert re.search(r"nan|not finite|NaN", result.stderr)


def test_score_output_into_a_read_only_folder_says_so_first(model_dir, tmp_path, read_only):
  data = write_jsonl(tmp_path / "data.jsonl", [{"inputs": "a", "targets": "b"}])
  result = score(model_dir, data, f"--output={read_only / 'out.jsonl'}")
  assert_one_error(result, rf"{read_only} is not writable")


def test_score_of_a_missing_checkpoint_is_one_line(tmp_path):
  data = write_jsonl(tmp_path / "data.jsonl", [{"inputs": "a", "targets": "b"}])
  assert_one_error(score(tmp_path / "none", data), r"none")


# -- hypert5.convert ----------------------------------------------------------------


def test_convert_onto_an_existing_folder_keeps_it(model_dir, tmp_path):
  target = tmp_path / "dst"
  target.mkdir()
  (target / "mine.txt").write_text("mine")
  result = command("convert", "--from=native", "--to=hf", f"--src={model_dir}",
                   f"--dst={target}")
  assert_one_error(result, rf"{target}: already exists")
  assert (target / "mine.txt").read_text() == "mine"


def test_convert_from_a_missing_folder_is_one_line(tmp_path):
  result = command("convert", "--from=hf", f"--src={tmp_path / 'none'}",
                   f"--dst={tmp_path / 'dst'}")
  assert result.returncode == 1 and "Traceback" not in result.stderr
  assert not (tmp_path / "dst").exists()


def test_a_safetensors_weight_of_the_wrong_shape_is_named(model_dir, tmp_path):
  hf_dir = tmp_path / "hf"
  converted = command("convert", "--from=native", "--to=hf", f"--src={model_dir}",
                      f"--dst={hf_dir}")
  assert converted.returncode == 0, converted.stderr[-3000:]
  weights = safetensors.numpy.load_file(str(hf_dir / "model.safetensors"))
  name = "encoder.block.0.layer.0.SelfAttention.q.weight"
  weights[name] = weights[name][:, :-1].copy()
  safetensors.numpy.save_file(weights, str(hf_dir / "model.safetensors"))
  result = command("convert", "--from=hf", f"--src={hf_dir}", f"--dst={tmp_path / 'back'}")
  assert_one_error(result, rf"key '{re.escape(name)}' has shape \[\d+, \d+\], which does "
                           "not fit config.json")
  assert not (tmp_path / "back").exists()


# -- hypert5.plan, hypert5.bench, hypert5.input_bench ---------------------------------


def test_plan_with_a_bad_setting_is_one_line():
  result = command("plan", f"--config={TINY_CONFIG}", "--mesh_shape=4,2",
                   "--devices=8", "--config.batch_size=0")
  assert_one_error(result, r"config.batch_size=0: must be a positive integer")


def test_bench_with_a_bad_setting_is_one_line():
  result = command("bench", f"--config={TINY_CONFIG}", "--config.batch_size=0")
  assert_one_error(result, r"config.batch_size=0: must be a positive integer")
  result = command("bench", "--preset=nope")
  assert_one_error(result, r"--preset=nope: no such preset; pass one of tiny")


def test_input_bench_with_batch_size_zero_is_one_line(tmp_path):
  result = command("input_bench", "--mixture=sni_def", f"--replica_dir={tmp_path}",
                   "--batch_size=0")
  assert_one_error(result, r"--batch_size=0")


# -- The Python API -----------------------------------------------------------------


def test_api_edge_cases(run_copy):
  run = hypert5.load(str(run_copy))
  phi = run.phi(EXAMPLES)
  assert run.generate([], phi) == []
  with pytest.raises(ValueError, match="choices: a non-empty list"):
    run.score("a query", [], phi)
  with pytest.raises(errors.ExamplesError, match="no examples"):
    run.phi([])
  with pytest.raises(TypeError, match="a query is a string"):
    run.generate([3], phi)


def test_api_refuses_to_write_a_nan_phi(run_copy, tmp_path):
  run = hypert5.load(str(run_copy))
  phi = run.phi(EXAMPLES)
  broken = {"prefix": np.asarray(phi["prefix"]).copy()}
  broken["prefix"][(0,) * broken["prefix"].ndim] = np.nan
  with pytest.raises(errors.AdapterError, match=r"phi\['prefix'\] is not finite"):
    run.save_adapter(broken, str(tmp_path / "adapter"))
  assert not (tmp_path / "adapter").exists()


def test_api_reads_the_newest_whole_step_of_a_damaged_run(run_copy, caplog):
  damage_latest(run_copy)
  with caplog.at_level(logging.WARNING, logger="hypert5.checkpoints"):
    run = hypert5.load(str(run_copy))
  assert "step 4 is damaged; read step 2 instead" in caplog.text
  with pytest.raises(errors.DamagedCheckpoint, match=r"checkpoints/4/hyper: .*pass the run's "
                                                     r"workdir"):
    hypert5.load(str(run_copy / "checkpoints" / "4"))
  assert run.phi(EXAMPLES)["prefix"].shape[0] == 1


def test_api_read_examples_needs_a_positive_count(tmp_path):
  path = write_jsonl(tmp_path / "shots.jsonl", EXAMPLES)
  with pytest.raises(errors.ExamplesError, match=r"max_examples=-1: must be a positive"):
    api.read_examples(path, -1)


def test_api_load_adapter_of_another_kind_is_refused(run_copy, tmp_path):
  run = hypert5.load(str(run_copy))
  phi = run.phi(EXAMPLES)
  other = adapters.PeftConfig(kind="prefix", prefix_length=8)
  longer = jax.tree.map(lambda shape: np.zeros((1, *shape), np.float32),
                        adapters.phi_shapes(other, run.downstream_config),
                        is_leaf=lambda x: isinstance(x, tuple))
  assert phi["prefix"].shape != longer["prefix"].shape
  adapters.save_native(str(tmp_path / "longer"), longer, other, run.downstream_config)
  with pytest.raises(errors.AdapterError, match="an adapter for .* but this run writes"):
    run.load_adapter(str(tmp_path / "longer"))


def test_config_validation_names_every_kind_of_bad_value():
  config = experiment.default_config()
  config.keep_checkpoints = 0
  with pytest.raises(errors.ConfigError, match="keep_checkpoints=0"):
    experiment.validate(config)
  config = experiment.default_config()
  config.optimizer.learning_rate = -1.0
  with pytest.raises(errors.ConfigError, match="optimizer.learning_rate=-1.0"):
    experiment.validate(config)
  config = experiment.default_config()
  config.init.peft = "zeros"
  with pytest.raises(errors.ConfigError, match="init.peft='zeros': expected one of random"):
    experiment.validate(config)


# -- Registering tasks --------------------------------------------------------------


def test_a_user_task_file_with_non_utf8_bytes_names_file_and_line(tmp_path):
  import hypert5_tasks
  from hypert5_tasks import vocab
  folder = tmp_path / "data" / "t"
  folder.mkdir(parents=True)
  write_jsonl(folder / "train.jsonl", [{"input": "a", "output": "b"}],
              b'{"input": "\xff", "output": "b"}\n')
  with pytest.raises(errors.DataError, match=r"train.jsonl:2: not UTF-8 text"):
    hypert5_tasks.register_jsonl_benchmark("bad_utf8", str(tmp_path / "data"),
                                           vocabulary=str(vocab.EMBEDDED_VOCAB_PATH))


def test_an_unreadable_vocabulary_is_one_error_saying_what_to_do(monkeypatch, tmp_path):
  from hypert5_tasks import vocab
  missing = tmp_path / "none.model"
  vocabulary = vocab._vocabulary(str(missing))
  with pytest.raises(errors.MissingDataError, match=r"cannot read the SentencePiece vocabulary "
                                                    r".*none.model.*HYPERT5_VOCAB"):
    vocabulary.encode("hello")


def test_an_sni_task_file_with_non_utf8_bytes_is_a_data_error(tmp_path):
  from hypert5_tasks import sni
  path = tmp_path / "task001_x.json"
  path.write_bytes(b'{"Definition": ["caf\xe9"]}')
  with pytest.raises((errors.DataError, UnicodeDecodeError)) as caught:
    sni.load_task(str(path), "train")
  assert isinstance(caught.value, errors.DataError), caught.value
  assert str(path) in str(caught.value)


def test_a_metaicl_line_that_is_not_json_names_file_and_line(tmp_path):
  from hypert5_tasks import metaicl
  path = tmp_path / "glue-rte_16_100_train.jsonl"
  path.write_bytes(b'{"task": "glue-rte"\n')
  with pytest.raises(errors.DataError, match=rf"{path}:1: malformed JSON"):
    metaicl.read_jsonl(str(path), "glue-rte")
