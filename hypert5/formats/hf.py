"""HuggingFace T5 checkpoints: read and write config.json + safetensors.

Reads the layout published for google/t5-v1_1-* and google/t5-*-lm-adapt (and the
original t5-*): a directory with config.json and model.safetensors, or a sharded
model.safetensors.index.json. Safetensors files go through the `safetensors`
library's numpy API, memory-mapped and one tensor at a time, so bf16 and fp16
shards load without torch (numpy learns "bfloat16" from ml_dtypes). Pickle files
(pytorch_model.bin) are refused: unpickling runs arbitrary code.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from typing import Any

import flax
import ml_dtypes  # noqa: F401  # registers numpy's "bfloat16", which safetensors' numpy API names
import numpy as np
import safetensors
import safetensors.numpy

from hypert5.errors import CheckpointError
from hypert5.model import t5
from hypert5.model.t5_config import T5Config


class SafetensorsFiles:
  """Tensors spread over open .safetensors files, read when asked (memory-mapped).

  Use inside `open_safetensors`; `path(name)` says which file holds a tensor.
  """

  def __init__(self):
    self._handles: dict[str, tuple[Any, str]] = {}  # name -> (open file, its path)

  def add(self, handle, path: str) -> None:
    for name in handle.keys():
      self._handles[name] = (handle, path)

  def names(self) -> set[str]:
    return set(self._handles)

  def path(self, name: str) -> str:
    return self._handles[name][1]

  def shape(self, name: str) -> tuple[int, ...]:
    handle, _ = self._handles[name]
    return tuple(handle.get_slice(name).get_shape())

  def read(self, name: str) -> np.ndarray:
    handle, path = self._handles[name]
    try:
      return handle.get_tensor(name)
    except (TypeError, AttributeError) as e:  # a dtype numpy lacks (e.g. F8_E5M2)
      raise CheckpointError(f"{path}: tensor {name!r} has unsupported dtype "
                            f"{handle.get_slice(name).get_dtype()} ({e})") from e


@contextlib.contextmanager
def open_safetensors(paths: list[str]) -> Iterator[SafetensorsFiles]:
  """Opens .safetensors files for reading; tensors are read from them until the end."""
  files = SafetensorsFiles()
  with contextlib.ExitStack() as stack:
    for path in paths:
      try:
        handle = stack.enter_context(safetensors.safe_open(path, framework="np"))
      except safetensors.SafetensorError as e:
        raise CheckpointError(f"{path}: not a safetensors file ({e})") from e
      files.add(handle, path)
    yield files


def read_safetensors(path: str) -> dict[str, np.ndarray]:
  """A .safetensors file -> {name: array}, in the file's dtypes (bf16 as ml_dtypes.bfloat16)."""
  with open_safetensors([path]) as files:
    return {name: files.read(name) for name in sorted(files.names())}


def write_safetensors(path: str, tensors: dict[str, np.ndarray],
                      metadata: dict[str, str] | None = None) -> None:
  """Writes tensors in the safetensors format (the inverse of `read_safetensors`)."""
  tensors = {name: np.ascontiguousarray(array) for name, array in tensors.items()}
  # Write beside and rename: readers that memory-mapped the old file keep its inode.
  partial = path + ".partial"
  safetensors.numpy.save_file(tensors, partial, metadata=metadata or {"format": "pt"})
  os.replace(partial, path)


def is_hf_checkpoint(directory: str) -> bool:
  """config.json beside HuggingFace weights (a training workdir also has a config.json)."""
  weights = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
             "pytorch_model.bin.index.json")
  return (os.path.isfile(os.path.join(directory, "config.json"))
          and any(os.path.isfile(os.path.join(directory, w)) for w in weights))


def load_hf_config(directory: str, **overrides) -> T5Config:
  """config.json -> T5Config, reading every architectural field."""
  path = os.path.join(directory, "config.json")
  if not os.path.isdir(directory):
    raise CheckpointError(f"{directory}: no such checkpoint directory")
  if not os.path.isfile(path):
    raise CheckpointError(f"{path}: missing (a HuggingFace T5 directory has config.json)")
  try:
    with open(path) as f:
      hf = json.load(f)
  except json.JSONDecodeError as e:
    raise CheckpointError(f"{path}: invalid JSON ({e})") from e
  if hf.get("model_type") != "t5":
    raise CheckpointError(f"{path}: model_type is {hf.get('model_type')!r}, not 't5'")
  required = ["vocab_size", "d_model", "d_kv", "d_ff", "num_heads", "num_layers"]
  missing = [k for k in required if k not in hf]
  if missing:
    raise CheckpointError(f"{path}: missing T5 keys {missing}")
  ff = hf.get("feed_forward_proj", "relu")
  if ff not in ("gated-gelu", "relu"):
    raise CheckpointError(f"{path}: feed_forward_proj {ff!r} is not supported "
                          "(gated-gelu or relu)")
  # transformers 5 writes scale_decoder_outputs; older configs signal the original
  # T5's output rescaling through tie_word_embeddings (absent means True).
  scale = hf.get("scale_decoder_outputs", hf.get("tie_word_embeddings", True))
  values = dict(
      vocab_size=hf["vocab_size"], d_model=hf["d_model"], d_kv=hf["d_kv"], d_ff=hf["d_ff"],
      num_heads=hf["num_heads"], num_encoder_layers=hf["num_layers"],
      num_decoder_layers=hf.get("num_decoder_layers") or hf["num_layers"],
      relative_attention_num_buckets=hf.get("relative_attention_num_buckets", 32),
      relative_attention_max_distance=hf.get("relative_attention_max_distance", 128),
      feed_forward_proj=ff, scale_decoder_outputs=bool(scale),
      layer_norm_epsilon=hf.get("layer_norm_epsilon", 1e-6),
      dropout_rate=hf.get("dropout_rate", 0.1),
      pad_token_id=hf.get("pad_token_id", 0) if hf.get("pad_token_id") is not None else 0,
      eos_token_id=hf.get("eos_token_id", 1) if hf.get("eos_token_id") is not None else 1,
      decoder_start_token_id=hf.get("decoder_start_token_id", 0) or 0,
  )
  values.update(overrides)
  return T5Config(**values)


def _weight_files(directory: str) -> list[str]:
  single = os.path.join(directory, "model.safetensors")
  index = os.path.join(directory, "model.safetensors.index.json")
  if os.path.isfile(single):
    return [single]
  if os.path.isfile(index):
    try:
      with open(index) as f:
        weight_map = json.load(f)["weight_map"]
    except (json.JSONDecodeError, KeyError) as e:
      raise CheckpointError(f"{index}: not a safetensors index ({e})") from e
    files = sorted(set(weight_map.values()))
    for name in files:
      if not os.path.isfile(os.path.join(directory, name)):
        raise CheckpointError(f"{index}: shard {name} is missing")
    return [os.path.join(directory, name) for name in files]
  pickles = [n for n in ("pytorch_model.bin", "pytorch_model.bin.index.json")
             if os.path.exists(os.path.join(directory, n))]
  if pickles:
    raise CheckpointError(
        f"{directory}: only {pickles[0]} found. Pickle checkpoints are refused (loading "
        "them runs arbitrary code). Convert it once, where you trust it, with: "
        "python -c \"from transformers import T5ForConditionalGeneration as M; "
        f"M.from_pretrained('{directory}').save_pretrained('{directory}', "
        "safe_serialization=True)\"")
  raise CheckpointError(f"{directory}: no model.safetensors or model.safetensors.index.json")


# HuggingFace name -> (our path, how to turn [out, in] torch layout into ours).
def _attention_map(prefix: str, ours: str, cfg: T5Config):
  heads = (cfg.num_heads, cfg.d_kv)
  qkv = lambda w: w.T.reshape((cfg.d_model,) + heads)  # [H, d] -> [d, heads, kv]
  out = lambda w: w.T.reshape(heads + (cfg.d_model,))  # [d, H] -> [heads, kv, d]
  return {f"{prefix}.q.weight": ((ours, "query", "kernel"), qkv),
          f"{prefix}.k.weight": ((ours, "key", "kernel"), qkv),
          f"{prefix}.v.weight": ((ours, "value", "kernel"), qkv),
          f"{prefix}.o.weight": ((ours, "out", "kernel"), out)}


def _mlp_map(prefix: str, cfg: T5Config):
  names = ("wi_0", "wi_1", "wo") if cfg.feed_forward_proj == "gated-gelu" else ("wi", "wo")
  return {f"{prefix}.DenseReluDense.{n}.weight": (("mlp", n, "kernel"), np.transpose)
          for n in names}


def _layer_map(stack: str, cfg: T5Config) -> dict:
  """Names inside one block (with {i}) -> (path inside our scanned layer, transform)."""
  ident = lambda w: w
  if stack == "encoder":
    m = {"layer.0.layer_norm.weight": (("pre_attention_layer_norm", "scale"), ident),
         "layer.1.layer_norm.weight": (("pre_mlp_layer_norm", "scale"), ident)}
    m.update(_attention_map("layer.0.SelfAttention", "attention", cfg))
    m.update(_mlp_map("layer.1", cfg))
  else:
    m = {"layer.0.layer_norm.weight": (("pre_self_attention_layer_norm", "scale"), ident),
         "layer.1.layer_norm.weight": (("pre_cross_attention_layer_norm", "scale"), ident),
         "layer.2.layer_norm.weight": (("pre_mlp_layer_norm", "scale"), ident)}
    m.update(_attention_map("layer.0.SelfAttention", "self_attention", cfg))
    m.update(_attention_map("layer.1.EncDecAttention", "encoder_decoder_attention", cfg))
    m.update(_mlp_map("layer.2", cfg))
  return m


def _set(tree: dict, path: tuple, value) -> None:
  for key in path[:-1]:
    tree = tree.setdefault(key, {})
  tree[path[-1]] = value


def load_hf_checkpoint(directory: str, **config_overrides) -> tuple[T5Config, dict]:
  """Reads a HuggingFace T5 directory -> (T5Config, float32 numpy params tree)."""
  cfg = load_hf_config(directory, **config_overrides)
  files = _weight_files(directory)
  with open_safetensors(files) as tensors:
    return _read_params(cfg, tensors, files[0])


def _read_params(cfg: T5Config, tensors: SafetensorsFiles, first_file: str):
  """The named tensors -> (config, params), one tensor in memory at a time besides the result."""
  names = tensors.names()
  # shared.weight, or failing that one of its copies that some exports write.
  embedding_names = [n for n in ("shared.weight", "encoder.embed_tokens.weight",
                                 "decoder.embed_tokens.weight") if n in names]
  if not embedding_names:
    raise CheckpointError(f"{first_file}: missing key 'shared.weight' (the token embedding)")
  names -= set(embedding_names)
  # No lm_head.weight means a tied checkpoint: the head is the embedding.
  tied = "lm_head.weight" not in names
  names.discard("lm_head.weight")
  cfg = cfg.replace(tie_word_embeddings=tied)

  expected: dict[str, tuple] = {}  # name -> (our path, transform, layer index)
  params: dict = {}
  stacks = {"encoder": cfg.num_encoder_layers, "decoder": cfg.num_decoder_layers}
  layer_maps = {s: _layer_map(s, cfg) for s in stacks}
  per_layer: dict[tuple, list] = {}
  for stack, depth in stacks.items():
    for i in range(depth):
      for suffix, (path, fn) in layer_maps[stack].items():
        expected[f"{stack}.block.{i}.{suffix}"] = ((stack, "layers") + path, fn, i)
    expected[f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"] = (
        (stack, "relpos_bias", "rel_embedding"), np.transpose, None)
    expected[f"{stack}.final_layer_norm.weight"] = (
        (stack, f"{stack}_norm", "scale"), lambda w: w, None)

  unknown = sorted(names - set(expected))
  if unknown:
    raise CheckpointError(f"{tensors.path(unknown[0])}: unknown key {unknown[0]!r} for a T5 "
                          f"with {cfg.num_encoder_layers}+{cfg.num_decoder_layers} layers "
                          f"({len(unknown)} unknown keys)")
  missing = sorted(set(expected) - names)
  if missing:
    raise CheckpointError(f"{first_file}: missing key {missing[0]!r} ({len(missing)} missing)")

  reference = _reference_shapes(cfg)
  for name, (path, fn, layer) in expected.items():
    want = reference[path]
    if layer is not None:
      want = want[1:]
    try:  # transposed and split into heads: a weight of another shape cannot be
      value = np.asarray(fn(np.asarray(tensors.read(name), dtype=np.float32)))
    except ValueError:
      value = None
    if value is None or value.shape != want:
      raise CheckpointError(f"{tensors.path(name)}: key {name!r} has shape "
                            f"{list(tensors.shape(name))}, which does not fit config.json "
                            f"(expected {list(want)} after transposing to this layout)")
    if layer is None:
      _set(params, path, value)
    else:
      per_layer.setdefault(path, [None] * stacks[path[0]])[layer] = value
  for path, values in per_layer.items():
    _set(params, path, np.stack(values))

  matrix = (cfg.vocab_size, cfg.d_model)
  params["token_embedder"] = {"embedding": _read_matrix(tensors, embedding_names[0], matrix)}
  if not tied:
    params["logits_dense"] = {"kernel": _read_matrix(tensors, "lm_head.weight", matrix).T}
  return cfg, params


def _read_matrix(tensors: SafetensorsFiles, name: str, shape: tuple[int, int]) -> np.ndarray:
  if tensors.shape(name) != tuple(shape):
    raise CheckpointError(f"{tensors.path(name)}: key {name!r} has shape "
                          f"{list(tensors.shape(name))}, expected {list(shape)} from config.json")
  return np.asarray(tensors.read(name), np.float32)


def _reference_shapes(cfg: T5Config) -> dict[tuple, tuple]:
  """Our parameter paths -> shapes, from the model itself (no allocation)."""

  shapes = t5.param_shapes(cfg)
  flat = flax.traverse_util.flatten_dict(shapes)
  return {k: tuple(v.shape) for k, v in flat.items()}


def to_hf_state_dict(params: dict, cfg: T5Config) -> dict[str, np.ndarray]:
  """Our params tree -> HuggingFace T5 tensors ([out, in] layout)."""
  out: dict[str, np.ndarray] = {}
  get = lambda tree, path: _get(tree, path)
  for stack, depth in (("encoder", cfg.num_encoder_layers), ("decoder", cfg.num_decoder_layers)):
    for suffix, (path, _) in _layer_map(stack, cfg).items():
      stacked = np.asarray(get(params, (stack, "layers") + path), np.float32)
      for i in range(depth):
        w = stacked[i]
        if path[-1] == "scale":
          hf = w
        elif path[0].endswith("attention") and path[1] in ("query", "key", "value"):
          hf = w.reshape(cfg.d_model, -1).T
        elif path[0].endswith("attention"):
          hf = w.reshape(-1, cfg.d_model).T
        else:
          hf = w.T
        out[f"{stack}.block.{i}.{suffix}"] = np.ascontiguousarray(hf)
    out[f"{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"] = (
        np.ascontiguousarray(np.asarray(get(params, (stack, "relpos_bias", "rel_embedding")),
                                        np.float32).T))
    out[f"{stack}.final_layer_norm.weight"] = np.asarray(
        get(params, (stack, f"{stack}_norm", "scale")), np.float32)
  out["shared.weight"] = np.asarray(params["token_embedder"]["embedding"], np.float32)
  if not cfg.tie_word_embeddings:
    out["lm_head.weight"] = np.ascontiguousarray(
        np.asarray(params["logits_dense"]["kernel"], np.float32).T)
  return out


def _get(tree, path):
  for key in path:
    tree = tree[key]
  return tree


def hf_config_dict(cfg: T5Config) -> dict[str, Any]:
  """config.json for `save_hf_checkpoint` (readable by transformers 4 and 5)."""
  return {
      "architectures": ["T5ForConditionalGeneration"], "model_type": "t5",
      "vocab_size": cfg.vocab_size, "d_model": cfg.d_model, "d_kv": cfg.d_kv,
      "d_ff": cfg.d_ff, "num_heads": cfg.num_heads, "num_layers": cfg.num_encoder_layers,
      "num_decoder_layers": cfg.num_decoder_layers,
      "relative_attention_num_buckets": cfg.relative_attention_num_buckets,
      "relative_attention_max_distance": cfg.relative_attention_max_distance,
      "feed_forward_proj": cfg.feed_forward_proj,
      "dense_act_fn": "gelu_new" if cfg.feed_forward_proj == "gated-gelu" else "relu",
      "is_gated_act": cfg.feed_forward_proj == "gated-gelu",
      "tie_word_embeddings": cfg.scale_decoder_outputs,
      "scale_decoder_outputs": cfg.scale_decoder_outputs,
      "layer_norm_epsilon": cfg.layer_norm_epsilon, "dropout_rate": cfg.dropout_rate,
      "pad_token_id": cfg.pad_token_id, "eos_token_id": cfg.eos_token_id,
      "decoder_start_token_id": cfg.decoder_start_token_id, "is_encoder_decoder": True,
      "initializer_factor": 1.0, "use_cache": True,
  }


def save_hf_checkpoint(directory: str, params: dict, cfg: T5Config) -> None:
  """Writes config.json + model.safetensors that transformers' T5 loads."""
  os.makedirs(directory, exist_ok=True)
  with open(os.path.join(directory, "config.json"), "w") as f:
    json.dump(hf_config_dict(cfg), f, indent=2)
  write_safetensors(os.path.join(directory, "model.safetensors"), to_hf_state_dict(params, cfg))

