"""T5 architecture constants: the size table and the config every module reads.

The sizes are those of the public T5 v1.1 and LM-adapted checkpoints
(google/t5-v1_1-* and google/t5-*-lm-adapt): gated-GELU feed-forward, untied
input embedding and LM head, no biases, 32 relative-position buckets.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import jax.numpy as jnp

from hypert5.errors import ConfigError

FEED_FORWARD_KINDS = ("gated-gelu", "relu")


@dataclasses.dataclass(frozen=True)
class T5Config:
  """Architecture and numerics of one T5 encoder-decoder."""

  vocab_size: int = 32128
  d_model: int = 512
  d_kv: int = 64
  d_ff: int = 1024
  num_heads: int = 6
  num_encoder_layers: int = 8
  num_decoder_layers: int = 8
  relative_attention_num_buckets: int = 32
  relative_attention_max_distance: int = 128
  feed_forward_proj: str = "gated-gelu"
  # v1.1 has a separate LM head and no rescaling; the original T5 ties the head to
  # the embedding and scales decoder outputs by d_model**-0.5 before it.
  tie_word_embeddings: bool = False
  scale_decoder_outputs: bool = False
  layer_norm_epsilon: float = 1e-6
  dropout_rate: float = 0.1
  pad_token_id: int = 0
  eos_token_id: int = 1
  decoder_start_token_id: int = 0
  # Numerics and compilation; none of these change the parameters.
  dtype: str = "float32"  # compute dtype; parameters stay float32
  scan_layers: bool = True  # lax.scan over layers: compile time is O(1) in depth
  remat_policy: str = "none"  # none | full | dots | dots_no_batch
  attention_impl: str | None = None  # None (XLA) or "cudnn" for jax.nn.dot_product_attention

  def __post_init__(self):
    if self.feed_forward_proj not in FEED_FORWARD_KINDS:
      raise ConfigError(
          f"feed_forward_proj={self.feed_forward_proj!r} is not supported; "
          f"expected one of {FEED_FORWARD_KINDS}")
    if self.remat_policy not in ("none", "full", "dots", "dots_no_batch"):
      raise ConfigError(f"unknown remat_policy {self.remat_policy!r}")
    for name in ("vocab_size", "d_model", "d_kv", "d_ff", "num_heads",
                 "num_encoder_layers", "num_decoder_layers",
                 "relative_attention_num_buckets", "relative_attention_max_distance"):
      if getattr(self, name) <= 0:
        sized = (" (0 asks hypert5.train and hypert5.eval to size it from the mixture's "
                 "vocabulary; other commands need a number)") if name == "vocab_size" else ""
        raise ConfigError(f"T5Config.{name} must be positive, got {getattr(self, name)}{sized}")

  @property
  def joined_kv(self) -> int:
    return self.num_heads * self.d_kv

  @property
  def compute_dtype(self):
    return jnp.dtype(self.dtype)

  def replace(self, **changes) -> T5Config:
    return dataclasses.replace(self, **changes)

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, values: dict[str, Any], *, source: str = "config") -> T5Config:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
      raise ConfigError(f"{source}: unknown T5Config keys {unknown}")
    return cls(**values)

  def save(self, path: str) -> None:
    with open(path, "w") as f:
      json.dump(self.to_dict(), f, indent=2, sort_keys=True)

  @classmethod
  def load(cls, path: str) -> T5Config:
    with open(path) as f:
      return cls.from_dict(json.load(f), source=path)


# The public T5 v1.1 / LM-adapted sizes (HuggingFace config.json of google/t5-v1_1-*).
SIZES: dict[str, T5Config] = {
    "small": T5Config(d_model=512, d_kv=64, d_ff=1024, num_heads=6,
                      num_encoder_layers=8, num_decoder_layers=8),
    "base": T5Config(d_model=768, d_kv=64, d_ff=2048, num_heads=12,
                     num_encoder_layers=12, num_decoder_layers=12),
    "large": T5Config(d_model=1024, d_kv=64, d_ff=2816, num_heads=16,
                      num_encoder_layers=24, num_decoder_layers=24),
    "xl": T5Config(d_model=2048, d_kv=64, d_ff=5120, num_heads=32,
                   num_encoder_layers=24, num_decoder_layers=24),
    "xxl": T5Config(d_model=4096, d_kv=64, d_ff=10240, num_heads=64,
                    num_encoder_layers=24, num_decoder_layers=24),
    # A few-thousand-parameter model for tests and the CPU demo.
    "tiny": T5Config(vocab_size=512, d_model=64, d_kv=16, d_ff=128, num_heads=4,
                     num_encoder_layers=2, num_decoder_layers=2,
                     relative_attention_num_buckets=16,
                     relative_attention_max_distance=64, dropout_rate=0.0),
}


def get_size(name: str, **overrides) -> T5Config:
  """A size from the table, with field overrides (e.g. dtype="bfloat16")."""
  if name not in SIZES:
    raise ConfigError(f"unknown model size {name!r}; known: {sorted(SIZES)}")
  return SIZES[name].replace(**overrides)


def config_path(directory: str) -> str:
  return os.path.join(directory, "t5_config.json")
