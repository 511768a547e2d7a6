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
import logging
import os
import shutil
import tempfile

import flax
import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from hypert5.errors import CheckpointError, DamagedCheckpoint
from hypert5.formats import hf
from hypert5.model import t5
from hypert5.model.t5_config import T5Config, config_path
from hypert5.text.vocab import find_vocabulary

PARAMS_DIR = "params"
log = logging.getLogger("hypert5.checkpoints")


@contextlib.contextmanager
def atomic_directory(destination: str, *, overwrite: bool = False,
                     error: type[Exception] = CheckpointError):
  """Yields a temporary directory that becomes `destination` only on success. An
  existing `destination` is `error` unless `overwrite`; then it is replaced whole,
  after the new one is complete."""
  destination = os.path.abspath(destination)
  if os.path.exists(destination) and not overwrite:
    raise error(f"{destination}: already exists; refusing to overwrite it (choose another "
                "folder, or remove it)")
  if os.path.exists(destination) and not os.path.isdir(destination):
    raise error(f"{destination}: exists and is not a folder")
  parent = os.path.dirname(destination)
  os.makedirs(parent, exist_ok=True)
  staging = tempfile.mkdtemp(prefix=f".{os.path.basename(destination)}.partial-", dir=parent)
  try:
    yield staging
    if os.path.exists(destination):
      old = tempfile.mkdtemp(prefix=f".{os.path.basename(destination)}.old-", dir=parent)
      os.rename(destination, os.path.join(old, "replaced"))
      os.rename(staging, destination)
      shutil.rmtree(old, ignore_errors=True)
    else:
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
    raise CheckpointError(f"{directory}: no such checkpoint directory")
  if is_native_checkpoint(directory):
    cfg = T5Config.load(config_path(directory))
    params = restore_params(os.path.join(directory, PARAMS_DIR), abstract_params)
    check_params_fit(params, cfg, os.path.join(directory, PARAMS_DIR))
  elif hf.is_hf_checkpoint(directory):
    cfg, params = hf.load_hf_checkpoint(directory)
    if abstract_params is not None:
      params = jax.tree.map(lambda x, a: jax.device_put(x, a.sharding), params, abstract_params)
  else:
    raise CheckpointError(
        f"{directory}: neither a HyperT5 checkpoint (t5_config.json + params/) nor a "
        "HuggingFace T5 directory (config.json + model.safetensors)")
  return cfg, params, find_vocabulary(directory)


def check_params_fit(params, cfg: T5Config, source: str) -> None:
  """Raises naming the first parameter whose path or shape does not fit `cfg`."""

  want = flax.traverse_util.flatten_dict(t5.param_shapes(cfg), sep="/")
  got = flax.traverse_util.flatten_dict(params, sep="/")
  for key in sorted(set(want) | set(got)):
    if key not in got:
      raise CheckpointError(f"{source}: missing parameter {key!r} for this config")
    if key not in want:
      raise CheckpointError(f"{source}: unexpected parameter {key!r} for this config")
    if tuple(np.shape(got[key])) != tuple(want[key].shape):
      raise CheckpointError(f"{source}: parameter {key!r} has shape {list(np.shape(got[key]))}"
                            f", the config needs {list(want[key].shape)}")


# ---------------------------------------------------------------------------
# Training checkpoints: Orbax CheckpointManager (the V0 API t5x and MaxText use:
# per-item handlers, async saves, max_to_keep, atomic finalize by rename).

META_ITEM = "meta"
OPT_ITEM = "opt_state"


class TrainCheckpointer:
  """workdir/checkpoints/<step>/{<part>, opt_state, meta}: each trainable part of the
  parameters is an item of its own, so a later stage can restore one part alone."""

  def __init__(self, directory: str, keep: int, async_save: bool = True):
    self.directory = os.path.abspath(directory)
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                             enable_async_checkpointing=async_save))

  def all_steps(self) -> list[int]:
    return sorted(self.manager.all_steps())

  def save(self, step: int, params: dict, opt_state, meta: dict) -> None:
    items = {part: ocp.args.StandardSave(tree) for part, tree in params.items()}
    items[OPT_ITEM] = ocp.args.StandardSave(opt_state)
    items[META_ITEM] = ocp.args.JsonSave(meta)
    self.manager.save(step, args=ocp.args.Composite(**items), force=True)

  def check_fits(self, step: int, abstract_params: dict) -> None:
    """Raises naming the first parameter whose shape differs from the checkpoint's."""
    for part, abstract in abstract_params.items():
      path = os.path.join(self.directory, str(step), part)
      if not os.path.isdir(path):
        raise CheckpointError(f"{path}: missing; this checkpoint was written by another "
                              f"experiment (no '{part}' parameters)")
      _compare_shapes(item_tree_metadata(path), abstract, path)

  def restore(self, step: int, abstract_params: dict, abstract_opt_state) -> tuple:
    items = {part: ocp.args.StandardRestore(tree) for part, tree in abstract_params.items()}
    items[OPT_ITEM] = ocp.args.StandardRestore(abstract_opt_state)
    items[META_ITEM] = ocp.args.JsonRestore()
    restored = self.manager.restore(step, args=ocp.args.Composite(**items))
    params = {part: restored[part] for part in abstract_params}
    return params, restored[OPT_ITEM], restored[META_ITEM]

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.close()


def item_tree_metadata(path: str):
  """The saved tree of one item folder (shapes and dtypes), without reading arrays."""
  try:
    saved = ocp.PyTreeCheckpointHandler().metadata(epath.Path(path))
  except Exception as e:
    raise DamagedCheckpoint(f"{path}: unreadable metadata ({e})") from e
  tree = getattr(saved, "tree", saved)
  if not tree:
    raise DamagedCheckpoint(f"{path}: no metadata; the checkpoint is incomplete")
  return tree


def _compare_shapes(saved, abstract, where: str) -> None:
  saved_flat = flax.traverse_util.flatten_dict(_as_dict(saved), sep="/")
  want_flat = flax.traverse_util.flatten_dict(_as_dict(abstract), sep="/")
  for key in sorted(set(saved_flat) | set(want_flat)):
    if key not in saved_flat:
      raise CheckpointError(f"{where}: has no parameter {key!r}; the checkpoint belongs to a "
                            "model of another shape")
    if key not in want_flat:
      raise CheckpointError(f"{where}: holds parameter {key!r}, which this config's model "
                            "does not have")
    saved_shape = tuple(getattr(saved_flat[key], "shape", ()))
    want_shape = tuple(want_flat[key].shape)
    if saved_shape != want_shape:
      raise CheckpointError(f"{where}: parameter {key!r} has shape {list(saved_shape)} in the "
                            f"checkpoint but {list(want_shape)} in this config's model")


def _as_dict(tree):
  if isinstance(tree, dict):
    return {k: _as_dict(v) for k, v in tree.items()}
  if hasattr(tree, "items") and not hasattr(tree, "shape"):
    return {k: _as_dict(v) for k, v in tree.items()}
  return tree


def find_checkpoint_dir(path: str) -> str:
  """A workdir, its checkpoints/ folder, or one step folder -> the checkpoints folder."""
  for candidate in (os.path.join(path, "checkpoints"), path):
    if os.path.isdir(candidate) and any(n.isdigit() for n in os.listdir(candidate)):
      return candidate
  raise CheckpointError(f"{path}: no training checkpoints (expected checkpoints/<step>/)")


def restore_part(path: str, part: str, abstract, step: int | None = None):
  """One parameter part (hyper, shared, downstream) of another run's checkpoint.

  `path` is a workdir, its checkpoints/ folder, or a step folder (then `step` is
  implied). From a workdir the latest step is read, or, when it is damaged (a run
  killed outside Orbax's atomic save), the newest older one that is whole, with a
  warning naming both, as training resumes.
  """
  path = os.path.abspath(path)
  if os.path.basename(path).isdigit() and os.path.isdir(os.path.join(path, part)):
    return _restore_item(os.path.join(path, part), part, abstract)
  directory = find_checkpoint_dir(path)
  steps = sorted(int(n) for n in os.listdir(directory) if n.isdigit())
  if step is not None:
    return _restore_item(os.path.join(directory, str(step), part), part, abstract)
  damaged = []
  for candidate in reversed(steps):
    try:
      params = _restore_item(os.path.join(directory, str(candidate), part), part, abstract)
    except DamagedCheckpoint as e:
      damaged.append(f"{candidate} ({e})")
      continue
    if damaged:
      log.warning("%s: step %s is damaged; read step %d instead", directory,
                  ", ".join(d.split(" ", 1)[0] for d in damaged), candidate)
    return params
  raise DamagedCheckpoint(f"{directory}: no step can be read: {'; '.join(damaged)}")


def _restore_item(item_dir: str, part: str, abstract):
  if not os.path.isdir(item_dir):
    raise CheckpointError(f"{item_dir}: missing; that run has no '{part}' parameters")
  hint = "; pass the run's workdir to read its newest whole step instead"
  try:
    _compare_shapes(item_tree_metadata(item_dir), abstract, item_dir)
  except DamagedCheckpoint as e:
    raise DamagedCheckpoint(f"{e}{hint}") from None
  try:
    return restore_params(item_dir, abstract)
  except Exception as e:  # noqa: BLE001  (TensorStore's errors for missing or torn files)
    raise DamagedCheckpoint(f"{item_dir}: its arrays cannot be read "
                            f"({type(e).__name__}: {str(e).splitlines()[0][:160]}){hint}"
                            ) from None
