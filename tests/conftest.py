"""Shared fixtures: a tiny SentencePiece vocabulary and tiny HuggingFace T5 checkpoints."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# Tests measure numerics, not speed: compile as --quick runs do (XLA's backend
# optimizations off, the faster-compiling emitters). Set before JAX starts.
from hypert5 import cli  # imports nothing heavy

cli.fast_compile_for_smoke_runs()
# Many tests (and the train/eval subprocesses they start) compile the same
# programs: share JAX's persistent compilation cache between them.
import tempfile

os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      os.path.join(tempfile.gettempdir(), "hypert5-test-compilation-cache"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
# The example caches the tests' runs build, kept out of ~/.cache (hypert5_tasks.example_cache).
os.environ.setdefault("HYPERT5_DATA_CACHE",
                      os.path.join(tempfile.gettempdir(), "hypert5-test-data-cache"))

import fixtures_tasks
import numpy as np
import pytest

# -- Real data samples: where they are, and how many of their tests ran ------------

_shared_data_tests = {"ran": 0, "skipped": 0}


def pytest_configure(config):
  config.addinivalue_line("markers", "shared_data: reads the real data samples "
                          "(tests/fixtures_tasks.py: SHARED_DATA)")
  named = os.environ.get(fixtures_tasks.SHARED_DATA_VARIABLE)
  if named and not os.path.isdir(named):
    raise pytest.UsageError(f"{fixtures_tasks.SHARED_DATA_VARIABLE}={named}: no such folder "
                            "(unset it to use ../shared/data beside the repository)")


def pytest_runtest_logreport(report):
  """Counts shared-data tests; with pytest-xdist the workers' reports arrive here too."""
  if "shared_data" not in report.keywords:
    return
  if report.when == "call":
    _shared_data_tests["ran"] += 1
  elif report.when == "setup" and report.skipped:
    _shared_data_tests["skipped"] += 1


def pytest_terminal_summary(terminalreporter, config):
  if hasattr(config, "workerinput"):  # a pytest-xdist worker; the controller reports
    return
  ran, skipped = _shared_data_tests["ran"], _shared_data_tests["skipped"]
  if ran or skipped:
    terminalreporter.write_line(f"tests on the real data samples: {ran} ran, {skipped} skipped "
                                f"({fixtures_tasks.SHARED_DATA})")


WORDS = ("the king queen castle river apple sword crown night day light dark stone tree "
         "horse ship sea wind fire water gold silver bread wine song dance war peace "
         "friend enemy father mother brother sister lord lady servant soldier").split()


def write_corpus(path, lines=400, seed=0):
  rng = np.random.RandomState(seed)
  with open(path, "w") as f:
    for _ in range(lines):
      f.write(" ".join(rng.choice(WORDS, size=rng.randint(4, 12))) + ".\n")


@pytest.fixture(scope="session")
def spm_path(tmp_path_factory):
  """A small SentencePiece model with T5's special ids (pad 0, EOS 1, unk 2)."""
  import sentencepiece as spm
  directory = tmp_path_factory.mktemp("spm")
  corpus = directory / "corpus.txt"
  write_corpus(corpus)
  spm.SentencePieceTrainer.train(
      input=str(corpus), model_prefix=str(directory / "spiece"), vocab_size=64,
      hard_vocab_limit=False,
      model_type="unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1, num_threads=1,
      minloglevel=2)
  return str(directory / "spiece.model")


def make_hf_t5(directory, spm_path=None, seed=0, **overrides):
  """Saves a randomly initialized HuggingFace T5 with an untied LM head (unless tied)."""
  import shutil

  import torch
  from transformers import T5Config, T5ForConditionalGeneration
  values = dict(vocab_size=131, d_model=32, d_kv=8, d_ff=48, num_heads=4, num_layers=2,
                num_decoder_layers=3, relative_attention_num_buckets=12,
                relative_attention_max_distance=24, feed_forward_proj="gated-gelu",
                tie_word_embeddings=False, dropout_rate=0.0, decoder_start_token_id=0,
                pad_token_id=0, eos_token_id=1)
  values.update(overrides)
  torch.manual_seed(seed)
  model = T5ForConditionalGeneration(T5Config(**values)).eval()
  with torch.no_grad():  # a non-trivial relative bias and norms
    for name, p in model.named_parameters():
      if "layer_norm" in name:
        p.copy_(1.0 + 0.3 * torch.randn_like(p))
      if "relative_attention_bias" in name:
        p.copy_(torch.randn_like(p))
  if not values["tie_word_embeddings"]:
    # transformers 5 ties the head unless it gets a weight of its own.
    model.lm_head.weight = torch.nn.Parameter(torch.randn(values["vocab_size"], values["d_model"]))
  model.save_pretrained(str(directory))
  if spm_path:
    shutil.copyfile(spm_path, os.path.join(directory, "spiece.model"))
  return model


@pytest.fixture(scope="session")
def hf_t5_dir(tmp_path_factory, spm_path):
  """Tiny T5 v1.1-style checkpoint: odd vocab, 2 encoder / 3 decoder layers, 12 buckets."""
  directory = tmp_path_factory.mktemp("hf_t5")
  make_hf_t5(directory, spm_path)
  return str(directory)


def _forward(model, params, encoder_tokens, decoder_input_tokens, rngs=None, **kwargs):
  return model.apply({"params": params}, encoder_tokens, decoder_input_tokens, rngs=rngs,
                     **kwargs)


# Jitted model call for tests: one compilation instead of slow op-by-op dispatch.
import jax

forward = jax.jit(_forward, static_argnums=0, static_argnames=("deterministic",))


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_CONFIG = os.path.join(REPO, "configs", "tiny.py")


def run_train(workdir, *overrides, config=TINY_CONFIG, env=None, timeout=600):
  """`python -m hypert5.train` in a subprocess."""
  import subprocess
  import sys
  return subprocess.run([sys.executable, "-m", "hypert5.train", f"--config={config}",
                         f"--workdir={workdir}", *overrides], capture_output=True, text=True,
                        cwd=REPO, env=env, timeout=timeout)


@pytest.fixture(scope="session")
def tiny_hyper_run(tmp_path_factory):
  """A 4-step HyperT5-Prefix run of configs/tiny.py (checkpoints at 2 and 4). Copy it
  before changing it."""
  workdir = tmp_path_factory.mktemp("tiny_hyper") / "run"
  result = run_train(workdir, "--config.total_steps=4", "--config.checkpoint_every=2",
                     "--config.log_every=1")
  assert result.returncode == 0, result.stderr[-3000:]
  return str(workdir)
