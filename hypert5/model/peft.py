"""PEFT parameters (phi) for a frozen T5: their format, checks and routing.

phi is a pytree of arrays with a leading batch axis, so every example in a batch
can carry its own phi (multi-task batches); a batch axis of 1 broadcasts one phi
over the batch (inference for one task). Formats, per example:

prefix (the paper's layout; needs as many encoder as decoder layers):
  {"prefix": [L, 2 (encoder, decoder), 2 (key, value), P, H]}
  plus {"cross_prefix": [L, 2 (key, value), P, H]} with `cross_prefix=True`.
  H = heads * d_kv. Prefixes are prepended to every self-attention layer's keys
  and values (and cross-attention's when enabled).
lora:
  {"encoder" | "decoder_self" | "decoder_cross": {t: {"a": [L, d_in, r],
                                                      "b": [L, r, d_out]}}}
  for each target projection t in `lora_targets` (q, k, v, o). The update of W
  ([d_in, d_out]) is (alpha / r) * a @ b, so `a` and `b` are PEFT's lora_A and
  lora_B transposed; the alpha/r scale is applied here, not stored in phi.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from hypert5.errors import ConfigError
from hypert5.model.t5_config import T5Config

LORA_TARGETS = ("q", "k", "v", "o")
LORA_GROUPS = ("encoder", "decoder_self", "decoder_cross")


@dataclasses.dataclass(frozen=True)
class PeftConfig:
  """Which PEFT method phi parameterizes, and its sizes."""
  kind: str  # "prefix" or "lora"
  prefix_length: int = 32
  cross_prefix: bool = False  # also prefix decoder cross-attention (paper: off)
  lora_rank: int = 32
  lora_alpha: float = 32.0
  lora_targets: tuple[str, ...] = ("q", "v")

  def __post_init__(self):
    if self.kind not in ("prefix", "lora"):
      raise ConfigError(f"PeftConfig.kind must be 'prefix' or 'lora', got {self.kind!r}")
    if self.kind == "prefix" and self.prefix_length <= 0:
      raise ConfigError(f"prefix_length must be positive, got {self.prefix_length}")
    if self.kind == "lora":
      if self.lora_rank <= 0:
        raise ConfigError(f"lora_rank must be positive, got {self.lora_rank}")
      bad = [t for t in self.lora_targets if t not in LORA_TARGETS]
      if bad or not self.lora_targets:
        raise ConfigError(f"lora_targets {self.lora_targets} must be a non-empty subset of "
                         f"{LORA_TARGETS}")
    object.__setattr__(self, "lora_targets", tuple(self.lora_targets))

  @property
  def self_prefix_length(self) -> int:
    return self.prefix_length if self.kind == "prefix" else 0

  @property
  def cross_prefix_length(self) -> int:
    return self.prefix_length if self.kind == "prefix" and self.cross_prefix else 0

  @property
  def lora_scale(self) -> float:
    return self.lora_alpha / self.lora_rank

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, values: dict[str, Any], *, source: str = "peft config") -> PeftConfig:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
      raise ConfigError(f"{source}: unknown PeftConfig keys {unknown}")
    values = dict(values)
    if "lora_targets" in values:
      values["lora_targets"] = tuple(values["lora_targets"])
    return cls(**values)

  def save(self, path: str) -> None:
    with open(path, "w") as f:
      json.dump(self.to_dict(), f, indent=2, sort_keys=True)

  @classmethod
  def load(cls, path: str) -> PeftConfig:
    with open(path) as f:
      return cls.from_dict(json.load(f), source=path)


def lora_dims(target: str, cfg: T5Config) -> tuple[int, int]:
  """(d_in, d_out) of projection `target`."""
  return (cfg.joined_kv, cfg.d_model) if target == "o" else (cfg.d_model, cfg.joined_kv)


def _group_layers(group: str, cfg: T5Config) -> int:
  return cfg.num_encoder_layers if group == "encoder" else cfg.num_decoder_layers


def phi_shapes(peft: PeftConfig, cfg: T5Config) -> dict:
  """Per-example shapes of phi (no batch axis), as a pytree of tuples."""
  if peft.kind == "prefix":
    if cfg.num_encoder_layers != cfg.num_decoder_layers:
      raise ConfigError(
          "prefix phi [L, 2, 2, P, H] needs equal encoder and decoder depth; this model has "
          f"{cfg.num_encoder_layers} encoder and {cfg.num_decoder_layers} decoder layers")
    layers, p, h = cfg.num_encoder_layers, peft.prefix_length, cfg.joined_kv
    shapes = {"prefix": (layers, 2, 2, p, h)}
    if peft.cross_prefix:
      shapes["cross_prefix"] = (layers, 2, p, h)
    return shapes
  shapes = {}
  for group in LORA_GROUPS:
    layers = _group_layers(group, cfg)
    shapes[group] = {}
    for target in peft.lora_targets:
      d_in, d_out = lora_dims(target, cfg)
      shapes[group][target] = {"a": (layers, d_in, peft.lora_rank),
                               "b": (layers, peft.lora_rank, d_out)}
  return shapes


def phi_logical_axes(peft: PeftConfig, cfg: T5Config) -> dict:
  """Logical axis names of phi with its batch axis, matching `phi_shapes`."""
  if peft.kind == "prefix":
    axes = {"prefix": ("batch", "layers", None, None, "prefix", "joined_kv")}
    if peft.cross_prefix:
      axes["cross_prefix"] = ("batch", "layers", None, "prefix", "joined_kv")
    return axes
  axes = {}
  for group in LORA_GROUPS:
    axes[group] = {}
    for target in peft.lora_targets:
      d_in, d_out = ("joined_kv", "embed") if target == "o" else ("embed", "joined_kv")
      axes[group][target] = {"a": ("batch", "layers", d_in, "lora_rank"),
                             "b": ("batch", "layers", "lora_rank", d_out)}
  return axes


def num_phi_params(peft: PeftConfig, cfg: T5Config) -> int:
  leaves = jax.tree.leaves(phi_shapes(peft, cfg), is_leaf=lambda x: isinstance(x, tuple))
  return int(sum(np.prod(s) for s in leaves))


def check_phi(phi, peft: PeftConfig, cfg: T5Config, batch_size: int | None = None) -> int:
  """Raises a ValueError naming the key, the expected and the given shape.

  Returns phi's batch size (1 when it broadcasts).
  """
  expected = phi_shapes(peft, cfg)
  if not isinstance(phi, dict):
    raise ValueError(f"phi must be a dict of arrays for {peft.kind}, got {type(phi).__name__}")
  batch_sizes = set()

  def visit(exp, got, path):
    if isinstance(exp, tuple):
      shape = tuple(getattr(got, "shape", ()))
      if len(shape) != len(exp) + 1 or shape[1:] != exp:
        raise ValueError(f"phi{path}: expected shape [batch, {', '.join(map(str, exp))}] "
                         f"for {peft.kind} on this model, got {list(shape)}")
      batch_sizes.add(shape[0])
      return
    if not isinstance(got, dict) or set(got) != set(exp):
      keys = sorted(got) if isinstance(got, dict) else type(got).__name__
      raise ValueError(f"phi{path}: expected keys {sorted(exp)}, got {keys}")
    for k in exp:
      visit(exp[k], got[k], f"{path}[{k!r}]")

  visit(expected, phi, "")
  if len(batch_sizes) != 1:
    raise ValueError(f"phi leaves disagree on the batch axis: {sorted(batch_sizes)}")
  (phi_batch,) = batch_sizes
  if batch_size is not None and phi_batch not in (1, batch_size):
    raise ValueError(f"phi has batch {phi_batch}; expected 1 (broadcast) or {batch_size}")
  return phi_batch


def per_layer(phi, peft: PeftConfig, cfg: T5Config, batch_size: int) -> dict:
  """phi -> the per-layer PEFT inputs of the encoder and decoder stacks.

  Returns {"encoder": {"self": attn}, "decoder": {"self": attn, "cross": attn}}
  where every array has a leading layer axis (scanned) then the batch axis:
    attn["prefix_key"|"prefix_value"]: [L, b, P, heads, kv]
    attn["lora"][t]["a"]: [L, b, d_in, r]; attn["lora"][t]["b"]: [L, b, r, d_out] (scaled)
  """
  check_phi(phi, peft, cfg, batch_size)

  def to_layers_first(x):  # [b|1, L, ...] -> [L, b, ...]
    x = jnp.moveaxis(x, 1, 0)
    return jnp.broadcast_to(x, (x.shape[0], batch_size) + x.shape[2:])

  if peft.kind == "prefix":
    heads = (cfg.num_heads, cfg.d_kv)

    def kv(x):  # [b, L, 2, P, H] -> key, value [L, b, P, heads, kv]
      x = to_layers_first(x)
      x = x.reshape(x.shape[:-1] + heads)
      return {"prefix_key": x[:, :, 0], "prefix_value": x[:, :, 1]}

    prefix = phi["prefix"]
    out = {"encoder": {"self": kv(prefix[:, :, 0])}, "decoder": {"self": kv(prefix[:, :, 1])}}
    if peft.cross_prefix:
      out["decoder"]["cross"] = kv(phi["cross_prefix"])
    return out

  def lora(group):
    return {"lora": {t: {"a": to_layers_first(ab["a"]),
                         "b": to_layers_first(ab["b"]) * peft.lora_scale}
                     for t, ab in phi[group].items()}}

  return {"encoder": {"self": lora("encoder")},
          "decoder": {"self": lora("decoder_self"), "cross": lora("decoder_cross")}}


class SharedPeft(nn.Module):
  """One learned phi shared by all tasks: the prefix-tuning and LoRA baselines.

  Returns phi with a batch axis of 1 (it broadcasts over any batch). LoRA starts
  with b = 0, so the model starts as the plain T5; a prefix starts at N(0, 0.5^2),
  about the scale of T5 v1.1 keys and values.
  """
  peft_config: PeftConfig
  t5_config: T5Config
  prefix_init_std: float = 0.5

  @nn.compact
  def __call__(self):
    shapes = phi_shapes(self.peft_config, self.t5_config)
    axes = phi_logical_axes(self.peft_config, self.t5_config)

    def make(path, shape, names):
      names = names[1:]  # no batch axis on the stored parameter
      if path[-1] == "b":
        init = nn.initializers.zeros
      elif path[-1] == "a":
        init = nn.initializers.variance_scaling(1.0, "fan_in", "normal", in_axis=-2,
                                                out_axis=-1, batch_axis=(0,))
      else:
        init = nn.initializers.normal(self.prefix_init_std)
      value = self.param("/".join(path), nn.with_logical_partitioning(init, names),
                         shape, jnp.float32)
      return value[None]

    def build(shape_tree, axes_tree, path):
      if isinstance(shape_tree, tuple):
        return make(path, shape_tree, axes_tree)
      return {k: build(shape_tree[k], axes_tree[k], path + (k,)) for k in shape_tree}

    return build(shapes, axes, ())
