"""`hypert5.adapt`: examples in, phi out, in our format and as a HuggingFace PEFT adapter."""

import json
import logging
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from conftest import REPO, run_train

from hypert5 import errors
from hypert5.formats import adapters, hf
from hypert5.inference import api
from hypert5.model import decoding, t5
from hypert5.model.t5_config import get_size

EXAMPLES = [("To be, or not to be: that is the question. Options: tiger, candle", "candle"),
            ("Now is the winter of our discontent. Options: tiger, candle", "tiger"),
            ("A horse! a horse! my kingdom for a horse! Options: tiger, candle", "tiger")]


def write_jsonl(path, records):
  with open(path, "w") as f:
    for record in records:
      f.write((record if isinstance(record, str) else json.dumps(record)) + "\n")
  return str(path)


def examples_file(path, examples=EXAMPLES):
  return write_jsonl(path, [{"input": x, "output": y} for x, y in examples])


def run_adapt(*args):
  return subprocess.run([sys.executable, "-m", "hypert5.adapt", *args], capture_output=True,
                        text=True, cwd=REPO, timeout=300)


@pytest.mark.parametrize("lines, message", [
    ([], "no examples"),
    (['{"input": "a", "output": "b"}', '{"input": "a"}'], r"x\.jsonl:2: missing key 'output'"),
    (['{"input": "a", "output": "b"}', "", "{not json"], r"x\.jsonl:3: invalid JSON"),
    (['{"input": "a", "output": 3}'], r"x\.jsonl:1: 'output' must be a string"),
    (['["a", "b"]'], r"x\.jsonl:1: expected an object"),
])
def test_bad_examples_file_names_file_and_line(tmp_path, lines, message):
  path = write_jsonl(tmp_path / "x.jsonl", lines)
  with pytest.raises(errors.ExamplesError, match=message):
    api.read_examples(path)


def test_more_than_sixteen_examples_keeps_the_first_and_says_so(tmp_path, caplog):
  path = examples_file(tmp_path / "x.jsonl", [(f"line {i}", str(i)) for i in range(20)])
  with caplog.at_level(logging.WARNING, logger="hypert5.adapt"):
    examples = api.read_examples(path)
  assert examples == [(f"line {i}", str(i)) for i in range(16)]
  assert "has 20 examples; using the first 16" in caplog.text


def test_cli_writes_the_phi_of_one_forward_pass(tmp_path, tiny_hyper_run):
  path = examples_file(tmp_path / "shots.jsonl")
  result = run_adapt(f"--checkpoint={tiny_hyper_run}", f"--examples={path}",
                     f"--out={tmp_path / 'adapter'}", "--definition=Pick the odd one.")
  assert result.returncode == 0, result.stderr[-3000:]
  hyper = api.Run(tiny_hyper_run)
  peft, phi = adapters.load_adapter(str(tmp_path / "adapter"), hyper.downstream_config)
  assert peft == hyper.peft_config
  expected = hyper.phi(EXAMPLES, "Pick the odd one.")
  np.testing.assert_allclose(phi["prefix"], expected["prefix"], atol=1e-6)
  # The definition is read: without it phi differs.
  assert np.abs(np.asarray(hyper.phi(EXAMPLES)["prefix"]) - phi["prefix"]).max() > 1e-6
  # A prefix has no PEFT export; the folder is not created.
  result = run_adapt(f"--checkpoint={tiny_hyper_run}", f"--examples={path}",
                     f"--out={tmp_path / 'peft'}", "--format=peft")
  assert result.returncode == 1 and "only LoRA exports" in result.stderr
  assert not (tmp_path / "peft").exists()
  # An existing output folder is never overwritten.
  result = run_adapt(f"--checkpoint={tiny_hyper_run}", f"--examples={path}",
                     f"--out={tmp_path / 'adapter'}")
  assert result.returncode == 1 and "adapter" in result.stderr


def test_a_run_without_a_hypermodel_is_a_config_error(tmp_path, tiny_hyper_run):
  with pytest.raises(errors.CheckpointError, match="not a training run"):
    api.Run(str(tmp_path))
  run = tmp_path / "baseline"
  (run / "checkpoints").mkdir(parents=True)
  config = json.load(open(os.path.join(tiny_hyper_run, "config.json")))
  config["experiment"] = "shared_peft"
  (run / "config.json").write_text(json.dumps(config))
  with pytest.raises(errors.ConfigError, match=r"baseline: experiment 'shared_peft' has no "
                                               "hypermodel"):
    api.Run(str(run))
  result = run_adapt(f"--checkpoint={run}", f"--examples={examples_file(tmp_path / 'x.jsonl')}",
                     f"--out={tmp_path / 'adapter'}")
  assert result.returncode == 1 and "has no hypermodel" in result.stderr
  assert "Traceback" not in result.stderr and not (tmp_path / "adapter").exists()


def test_examples_that_do_not_fit_are_dropped_whole(tiny_hyper_run, caplog):
  hyper = api.Run(tiny_hyper_run)
  long_examples = [(" ".join(["word"] * 60), "yes")] * 16
  with caplog.at_level(logging.WARNING, logger="hypert5.adapt"):
    ids, kept = hyper.encode(long_examples)
  assert 0 < kept < 16 and f"only the first {kept} of 16 examples fit" in caplog.text
  assert ids.shape == (1, hyper.lengths["hyper_inputs"])
  assert hyper.vocabulary.eos_id in ids[0].tolist()


def test_lora_run_exports_a_peft_adapter_that_reproduces_our_scores(tmp_path):
  """Train a HyperT5-LoRA for a few steps on a HuggingFace downstream checkpoint,
  adapt, and load the result with `peft` on the same HuggingFace T5."""
  import torch
  from peft import PeftModel
  from transformers import T5ForConditionalGeneration
  cfg = get_size("tiny", vocab_size=2112)
  hf_dir = str(tmp_path / "hf_t5")
  hf.save_hf_checkpoint(hf_dir, t5.init_params(cfg, jax.random.PRNGKey(3)), cfg)
  run = tmp_path / "run"
  result = run_train(run, "--config.peft.kind=lora", "--config.total_steps=3",
                     "--config.checkpoint_every=3", "--config.optimizer.learning_rate=0.01",
                     f"--config.init.downstream_checkpoint={hf_dir}")
  assert result.returncode == 0, result.stderr[-3000:]
  path = examples_file(tmp_path / "shots.jsonl")
  result = run_adapt(f"--checkpoint={run}", f"--examples={path}",
                     f"--out={tmp_path / 'peft'}", "--format=peft")
  assert result.returncode == 0, result.stderr[-3000:]

  hyper = api.Run(str(run))
  phi = hyper.phi(EXAMPLES)
  _, params = hf.load_hf_checkpoint(hf_dir)
  inputs, targets = np.array([[12, 13, 14, 15, 1]]), np.array([[20, 21, 1]])
  ours = decoding.log_likelihood(t5.T5(cfg, hyper.peft_config), params, inputs, targets,
                                 np.ones_like(targets, np.float32), phi)
  reference = PeftModel.from_pretrained(T5ForConditionalGeneration.from_pretrained(hf_dir),
                                        str(tmp_path / "peft")).eval()
  with torch.no_grad():
    logits = reference(input_ids=torch.tensor(inputs), labels=torch.tensor(targets)).logits[0]
  theirs = torch.log_softmax(logits, -1)[torch.arange(3), torch.tensor(targets[0])].sum()
  np.testing.assert_allclose(float(ours[0]), float(theirs), atol=1e-4)
  config = json.load(open(os.path.join(tmp_path, "peft", "adapter_config.json")))
  assert config["base_model_name_or_path"] == hf_dir and config["r"] == hyper.peft_config.lora_rank
