"""PEFT adapters on disk: HyperT5's own format and HuggingFace PEFT's LoRA format.

Native (any PEFT kind):
  hypert5_adapter.json   {"peft": PeftConfig, "base": the downstream T5's shape}
  phi.safetensors        phi for one task, keys like "prefix" or "lora/encoder/q/a"
HuggingFace PEFT (LoRA):
  adapter_config.json + adapter_model.safetensors, loadable with
  `peft.PeftModel.from_pretrained` on transformers' T5ForConditionalGeneration.
"""

from __future__ import annotations

import json
import math
import os
import re

import jax
import numpy as np

from hypert5.errors import AdapterError
from hypert5.formats import checkpoints, hf
from hypert5.model.peft import LORA_GROUPS, PeftConfig, check_phi, phi_shapes
from hypert5.model.t5_config import T5Config

NATIVE_CONFIG = "hypert5_adapter.json"
NATIVE_WEIGHTS = "phi.safetensors"
HF_CONFIG = "adapter_config.json"
HF_WEIGHTS = "adapter_model.safetensors"
_BASE_FIELDS = ("vocab_size", "d_model", "d_kv", "num_heads", "num_encoder_layers",
                "num_decoder_layers")
# PEFT module path of each LoRA group: (stack, layer index inside the block, attention).
_HF_GROUPS = {"encoder": ("encoder", 0, "SelfAttention"),
              "decoder_self": ("decoder", 0, "SelfAttention"),
              "decoder_cross": ("decoder", 1, "EncDecAttention")}
_HF_KEY = re.compile(r"^base_model\.model\.(encoder|decoder)\.block\.(\d+)\.layer\.(\d)\."
                     r"(SelfAttention|EncDecAttention)\.([qkvo])\.lora_([AB])\.weight$")


def _single(phi):
  """Drops a batch axis of 1: phi for one task."""
  leaves = jax.tree.leaves(phi)
  if leaves and leaves[0].shape[0] != 1:
    raise AdapterError(f"an adapter holds one task's phi; got a batch of {leaves[0].shape[0]}")
  return jax.tree.map(lambda x: np.asarray(x, np.float32)[0], phi)


def _flatten(tree, prefix=""):
  if not isinstance(tree, dict):
    return {prefix[:-1]: tree}
  out = {}
  for k, v in tree.items():
    out.update(_flatten(v, f"{prefix}{k}/"))
  return out


def _unflatten(flat):
  tree: dict = {}
  for key, value in flat.items():
    node = tree
    parts = key.split("/")
    for part in parts[:-1]:
      node = node.setdefault(part, {})
    node[parts[-1]] = value
  return tree


# Beside an adapter's weights: how its few-shot examples fit the hypermodel's input
# (Run.context_fit). Neither format's loader reads it.
CONTEXT_FILE = "hypert5_context.json"


def _write_context_fit(directory: str, context_fit: dict | None) -> None:
  if context_fit is not None:
    with open(os.path.join(directory, CONTEXT_FILE), "w") as f:
      json.dump(context_fit, f, indent=2)


def check_finite(phi, where: str) -> None:
  """A NaN or infinite phi is an AdapterError naming its first such leaf: an adapter
  written with one would score NaN everywhere it is loaded."""
  for path, leaf in jax.tree_util.tree_flatten_with_path(phi)[0]:
    if not np.all(np.isfinite(np.asarray(leaf, np.float32))):
      raise AdapterError(f"{where}: phi{jax.tree_util.keystr(path)} is not finite (NaN or "
                         "infinity); the hypermodel's output is broken, nothing was written")


def save_native(directory: str, phi, peft: PeftConfig, cfg: T5Config, *,
                overwrite: bool = False, context_fit: dict | None = None) -> None:
  """Writes phi (batch axis 1) in HyperT5's adapter format, atomically; an existing
  `directory` is an AdapterError unless `overwrite`."""
  check_phi(phi, peft, cfg)
  check_finite(phi, directory)
  single = _single(phi)
  with checkpoints.atomic_directory(directory, overwrite=overwrite,
                                    error=AdapterError) as staging:
    with open(os.path.join(staging, NATIVE_CONFIG), "w") as f:
      json.dump({"peft": peft.to_dict(), "base": {k: getattr(cfg, k) for k in _BASE_FIELDS}},
                f, indent=2)
    hf.write_safetensors(os.path.join(staging, NATIVE_WEIGHTS), _flatten(single),
                         metadata={"format": "hypert5"})
    _write_context_fit(staging, context_fit)


def save_hf_peft(directory: str, phi, peft: PeftConfig, cfg: T5Config,
                 base_model_name_or_path: str = "", *, overwrite: bool = False,
                 context_fit: dict | None = None) -> None:
  """Writes a LoRA phi (batch axis 1) as a HuggingFace PEFT adapter, atomically; an
  existing `directory` is an AdapterError unless `overwrite`."""
  if peft.kind != "lora":
    raise AdapterError(f"only LoRA exports to HuggingFace PEFT; this phi is {peft.kind}")
  check_phi(phi, peft, cfg)
  check_finite(phi, directory)
  single = _single(phi)
  tensors = {}
  for group, (stack, sub, attention) in _HF_GROUPS.items():
    for target, ab in single[group].items():
      for i in range(ab["a"].shape[0]):
        name = f"base_model.model.{stack}.block.{i}.layer.{sub}.{attention}.{target}"
        tensors[f"{name}.lora_A.weight"] = np.ascontiguousarray(ab["a"][i].T)  # [r, d_in]
        tensors[f"{name}.lora_B.weight"] = np.ascontiguousarray(ab["b"][i].T)  # [d_out, r]
  config = {
      "peft_type": "LORA", "task_type": "SEQ_2_SEQ_LM", "r": peft.lora_rank,
      "lora_alpha": peft.lora_alpha, "target_modules": list(peft.lora_targets),
      "lora_dropout": 0.0, "bias": "none", "fan_in_fan_out": False, "use_rslora": False,
      "use_dora": False, "init_lora_weights": True, "inference_mode": True,
      "base_model_name_or_path": base_model_name_or_path, "rank_pattern": {},
      "alpha_pattern": {}, "modules_to_save": None, "layers_to_transform": None,
  }
  with checkpoints.atomic_directory(directory, overwrite=overwrite,
                                    error=AdapterError) as staging:
    with open(os.path.join(staging, HF_CONFIG), "w") as f:
      json.dump(config, f, indent=2)
    hf.write_safetensors(os.path.join(staging, HF_WEIGHTS), tensors, metadata={"format": "pt"})
    _write_context_fit(staging, context_fit)


def load_adapter(directory: str, cfg: T5Config) -> tuple[PeftConfig, dict]:
  """Either format -> (PeftConfig, phi with a batch axis of 1) for a model `cfg`."""
  if os.path.isfile(os.path.join(directory, NATIVE_CONFIG)):
    return _load_native(directory, cfg)
  if os.path.isfile(os.path.join(directory, HF_CONFIG)):
    return _load_hf_peft(directory, cfg)
  raise AdapterError(f"{directory}: no {NATIVE_CONFIG} (HyperT5 adapter) or {HF_CONFIG} "
                     "(HuggingFace PEFT adapter)")


def _read_json(path: str) -> dict:
  try:
    with open(path) as f:
      return json.load(f)
  except json.JSONDecodeError as e:
    raise AdapterError(f"{path}: invalid JSON ({e.msg})") from e


def _check_base(saved: dict, cfg: T5Config, path: str) -> None:
  for key in _BASE_FIELDS:
    if key in saved and saved[key] != getattr(cfg, key):
      raise AdapterError(f"{path}: the adapter's base model has {key}={saved[key]}, this "
                         f"checkpoint has {key}={getattr(cfg, key)}")


def _load_native(directory: str, cfg: T5Config) -> tuple[PeftConfig, dict]:
  path = os.path.join(directory, NATIVE_CONFIG)
  meta = _read_json(path)
  try:
    peft = PeftConfig.from_dict(meta["peft"], source=path)
  except (KeyError, TypeError, ValueError) as e:
    raise AdapterError(f"{path}: bad 'peft' entry ({e})") from e
  _check_base(meta.get("base", {}), cfg, path)
  flat = hf.read_safetensors(os.path.join(directory, NATIVE_WEIGHTS))
  phi = jax.tree.map(lambda x: np.asarray(x, np.float32)[None], _unflatten(flat))
  try:
    check_phi(phi, peft, cfg)
  except ValueError as e:
    raise AdapterError(f"{directory}/{NATIVE_WEIGHTS}: {e}") from e
  return peft, phi


def _load_hf_peft(directory: str, cfg: T5Config) -> tuple[PeftConfig, dict]:
  path = os.path.join(directory, HF_CONFIG)
  meta = _read_json(path)
  if meta.get("peft_type") != "LORA":
    raise AdapterError(f"{path}: peft_type {meta.get('peft_type')!r}; only LORA is supported")
  for key in ("use_dora", "modules_to_save", "layers_to_transform", "rank_pattern",
              "alpha_pattern"):
    if meta.get(key):
      raise AdapterError(f"{path}: {key}={meta[key]!r} is not supported")
  if meta.get("bias", "none") != "none":
    raise AdapterError(f"{path}: bias={meta['bias']!r} is not supported (LoRA without biases)")
  targets = meta.get("target_modules")
  if isinstance(targets, str):
    targets = [targets]
  if not targets or any(t not in ("q", "k", "v", "o") for t in targets):
    raise AdapterError(f"{path}: target_modules {meta.get('target_modules')!r} must name T5 "
                       "attention projections among q, k, v, o")
  rank = int(meta["r"])
  peft = PeftConfig(kind="lora", lora_rank=rank, lora_alpha=float(meta.get("lora_alpha", rank)),
                    lora_targets=tuple(t for t in "qkvo" if t in targets))
  # rsLoRA scales by alpha/sqrt(r); fold the difference into b.
  b_scale = math.sqrt(rank) if meta.get("use_rslora") else 1.0
  weights_path = os.path.join(directory, HF_WEIGHTS)
  if not os.path.isfile(weights_path):
    if os.path.isfile(os.path.join(directory, "adapter_model.bin")):
      raise AdapterError(f"{directory}: only adapter_model.bin (a pickle) found; pickles are "
                         "refused. Re-save the adapter with safe_serialization=True")
    raise AdapterError(f"{weights_path}: missing")
  tensors = hf.read_safetensors(weights_path)
  shapes = phi_shapes(peft, cfg)
  groups = {(stack, sub, attention): group for group, (stack, sub, attention) in _HF_GROUPS.items()}
  phi = {g: {t: {"a": np.zeros(shapes[g][t]["a"], np.float32),
                 "b": np.zeros(shapes[g][t]["b"], np.float32)} for t in peft.lora_targets}
         for g in LORA_GROUPS}
  seen = set()
  for name, value in tensors.items():
    match = _HF_KEY.match(name)
    if not match:
      raise AdapterError(f"{weights_path}: unexpected key {name!r}")
    stack, block, sub, attention, target, which = match.groups()
    group = groups.get((stack, int(sub), attention))
    layers = cfg.num_encoder_layers if stack == "encoder" else cfg.num_decoder_layers
    if group is None or int(block) >= layers:
      raise AdapterError(f"{weights_path}: key {name!r} does not exist in this base model "
                         f"({cfg.num_encoder_layers}+{cfg.num_decoder_layers} layers)")
    if target not in peft.lora_targets:
      raise AdapterError(f"{weights_path}: key {name!r} targets {target!r}, which "
                         f"{HF_CONFIG} does not list in target_modules")
    want = shapes[group][target]["a" if which == "A" else "b"][1:]
    got = value.T.shape  # PEFT stores A as [r, d_in] and B as [d_out, r]
    if got != want:
      rank_axis = 1 if which == "A" else 0
      if got[rank_axis] != want[rank_axis]:
        raise AdapterError(f"{weights_path}: {name!r} has rank {got[rank_axis]}, but "
                           f"{HF_CONFIG} says r={rank}")
      raise AdapterError(f"{weights_path}: {name!r} has shape {list(value.shape)}; the base "
                         f"model needs {list(want[::-1])} (d_model={cfg.d_model}, "
                         f"heads x d_kv={cfg.joined_kv})")
    array = np.asarray(value, np.float32).T
    if which == "B":
      array = array * b_scale
    phi[group][target]["a" if which == "A" else "b"][int(block)] = array
    seen.add(name)
  expected = {f"base_model.model.{s}.block.{i}.layer.{sub}.{att}.{t}.lora_{w}.weight"
              for g, (s, sub, att) in _HF_GROUPS.items()
              for i in range(cfg.num_encoder_layers if s == "encoder" else cfg.num_decoder_layers)
              for t in peft.lora_targets for w in "AB"}
  missing = sorted(expected - seen)
  if missing:
    raise AdapterError(f"{weights_path}: missing {missing[0]!r} ({len(missing)} missing); the "
                       "adapter must cover every attention layer of the base model")
  return peft, jax.tree.map(lambda x: x[None], phi)
