"""Model checkpoints: the project's own (Orbax) format and loading of any supported one.

A native model checkpoint is a directory:
  t5_config.json     the architecture (hypert5.t5_config.T5Config)
  params/            an Orbax checkpoint of the parameter tree
  spiece.model       the SentencePiece vocabulary, when known
Writes are atomic: everything goes to a temporary sibling that is renamed into
place at the end, so a failed conversion leaves nothing at the destination.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile

import jax
import numpy as np
import orbax.checkpoint as ocp

from hypert5 import hf
from hypert5.t5_config import T5Config, config_path
from hypert5.vocab import find_vocabulary  # noqa: F401 (re-exported)

PARAMS_DIR = "params"


@contextlib.contextmanager
def atomic_directory(destination: str):
  """Yields a temporary directory that becomes `destination` only on success."""
  destination = os.path.abspath(destination)
  if os.path.exists(destination):
    raise FileExistsError(f"{destination}: already exists; refusing to overwrite")
  parent = os.path.dirname(destination)
  os.makedirs(parent, exist_ok=True)
  staging = tempfile.mkdtemp(prefix=f".{os.path.basename(destination)}.partial-", dir=parent)
  try:
    yield staging
    os.rename(staging, destination)
  except BaseException:
    shutil.rmtree(staging, ignore_errors=True)
    raise


def save_params(path: str, params) -> None:
  """Writes a parameter tree as an Orbax checkpoint at `path` (must not exist)."""
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(os.path.abspath(path), params)
  checkpointer.wait_until_finished()


def restore_params(path: str, abstract_params=None):
  """Reads an Orbax parameter checkpoint; with `abstract_params` (a tree of
  jax.ShapeDtypeStruct carrying shardings) each array lands where it says."""
  checkpointer = ocp.StandardCheckpointer()
  path = os.path.abspath(path)
  if abstract_params is None:
    return checkpointer.restore(path)
  return checkpointer.restore(path, abstract_params)


def save_model(directory: str, params, cfg: T5Config, vocab_path: str | None = None) -> None:
  """Writes a native model checkpoint atomically."""
  with atomic_directory(directory) as staging:
    cfg.save(config_path(staging))
    save_params(os.path.join(staging, PARAMS_DIR), params)
    if vocab_path:
      shutil.copyfile(vocab_path, os.path.join(staging, "spiece.model"))


def is_native_checkpoint(directory: str) -> bool:
  return os.path.isfile(config_path(directory)) and os.path.isdir(
      os.path.join(directory, PARAMS_DIR))


def load_model(directory: str, abstract_params=None) -> tuple[T5Config, dict, str | None]:
  """A native or HuggingFace T5 checkpoint -> (config, params, vocabulary path or None)."""
  if not os.path.isdir(directory):
    raise hf.CheckpointError(f"{directory}: no such checkpoint directory")
  if is_native_checkpoint(directory):
    cfg = T5Config.load(config_path(directory))
    params = restore_params(os.path.join(directory, PARAMS_DIR), abstract_params)
    check_params_fit(params, cfg, os.path.join(directory, PARAMS_DIR))
  elif hf.is_hf_checkpoint(directory):
    cfg, params = hf.load_hf_checkpoint(directory)
    if abstract_params is not None:
      params = jax.tree.map(lambda x, a: jax.device_put(x, a.sharding), params, abstract_params)
  else:
    raise hf.CheckpointError(
        f"{directory}: neither a HyperT5 checkpoint (t5_config.json + params/) nor a "
        "HuggingFace T5 directory (config.json + model.safetensors)")
  return cfg, params, find_vocabulary(directory)


def check_params_fit(params, cfg: T5Config, source: str) -> None:
  """Raises naming the first parameter whose path or shape does not fit `cfg`."""
  from hypert5 import t5  # local import: t5 pulls in flax modules
  import flax
  want = flax.traverse_util.flatten_dict(t5.param_shapes(cfg), sep="/")
  got = flax.traverse_util.flatten_dict(params, sep="/")
  for key in sorted(set(want) | set(got)):
    if key not in got:
      raise hf.CheckpointError(f"{source}: missing parameter {key!r} for this config")
    if key not in want:
      raise hf.CheckpointError(f"{source}: unexpected parameter {key!r} for this config")
    if tuple(np.shape(got[key])) != tuple(want[key].shape):
      raise hf.CheckpointError(f"{source}: parameter {key!r} has shape {list(np.shape(got[key]))}"
                               f", the config needs {list(want[key].shape)}")
