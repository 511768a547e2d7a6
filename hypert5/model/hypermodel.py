"""HyperT5: a T5 that reads few-shot text and writes phi for a frozen downstream T5.

HyperTuning (Phang et al., 2022, sections 3-4). The hypermodel's encoder reads
the few-shot examples (and the task definition, where there is one). Its
decoder reads a fixed set of newly learned input embeddings, with the causal
mask removed, cross-attending to the encoder; MLP heads map the decoder's
outputs to phi, in the format of `model/peft.py`:

HyperT5-Prefix: 2P decoder tokens (3P with cross-attention prefixes). Token p
  of group g (encoder, decoder[, cross]) yields prefix position p of group g in
  every layer, keys and values: one MLP, d_model -> hidden -> L * 2 * H.
  Its output layer starts at N(0, prefix_init_std^2 / hidden): generated
  prefixes start with a standard deviation of roughly 0.7 x prefix_init_std
  (the GELU hidden layer's RMS), about 0.35 by default.
HyperT5-LoRA: 2 decoder tokens per attention module of the downstream model
  (L_enc + 2 L_dec modules: encoder self, decoder self, decoder cross), one for
  A and one for B. The A token yields every target's A ([d_in, r]) of that
  module, the B token every target's B ([r, d_out]); one MLP head per factor.
  The B head's output layer starts at zero, so the generated update starts at
  exactly zero (LoRA's zero-initialized B) while A starts random.

The backbone is a separate, trainable copy of the downstream T5's weights
(`init_from_downstream`); its LM head is not used.
"""

from __future__ import annotations

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from hypert5.model import peft as peft_lib
from hypert5.model import t5
from hypert5.model.t5_config import T5Config

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class HyperConfig:
  """Sizes of the hypermodel around its T5 backbone."""
  head_hidden: int = 0  # MLP hidden width; 0 means the backbone's d_model
  prefix_init_std: float = 0.5

  def to_dict(self):
    return dataclasses.asdict(self)


def num_decoder_tokens(peft: peft_lib.PeftConfig, downstream: T5Config) -> int:
  """How many learned input embeddings the hypermodel's decoder reads."""
  if peft.kind == "prefix":
    return (3 if peft.cross_prefix else 2) * peft.prefix_length
  return 2 * (downstream.num_encoder_layers + 2 * downstream.num_decoder_layers)


class MlpHead(nn.Module):
  """d_model -> hidden (GELU) -> out. The output layer's init is N(0, out_std^2)
  scaled by fan-in ("normal" variance scaling), or zero when out_scale is 0."""
  hidden: int
  out: int
  out_scale: float
  dtype: jnp.dtype

  @nn.compact
  def __call__(self, x: Array) -> Array:
    x = t5.DenseGeneral((self.hidden,), ("embed", "mlp"), use_bias=True, dtype=self.dtype,
                        name="hidden")(x)
    x = jax.nn.gelu(x, approximate=True)
    return t5.DenseGeneral((self.out,), ("mlp", "hyper_out"), use_bias=True,
                           init_scale=self.out_scale, init_distribution="normal",
                           dtype=self.dtype, name="output")(x).astype(jnp.float32)


class HyperT5(nn.Module):
  """hyper_tokens [b, s] -> phi (batch b) for a downstream model `downstream`."""
  backbone_config: T5Config
  downstream_config: T5Config
  peft_config: peft_lib.PeftConfig
  hyper_config: HyperConfig = HyperConfig()

  def setup(self):
    self.backbone = t5.T5(self.backbone_config)
    self.decoder_inputs = self.param(
        "decoder_inputs",
        nn.with_logical_partitioning(nn.initializers.normal(1.0), ("hyper_tokens", "embed")),
        (num_decoder_tokens(self.peft_config, self.downstream_config),
         self.backbone_config.d_model), jnp.float32)
    hidden = self.hyper_config.head_hidden or self.backbone_config.d_model
    dtype = self.backbone_config.compute_dtype
    down, peft = self.downstream_config, self.peft_config
    if peft.kind == "prefix":
      phi_shapes = peft_lib.phi_shapes(peft, down)
      layers = phi_shapes["prefix"][0]
      out = layers * 2 * down.joined_kv
      # variance scale s^2 over fan-in `hidden`: N(0, prefix_init_std^2 / hidden).
      self.prefix_head = MlpHead(hidden, out, self.hyper_config.prefix_init_std ** 2, dtype)
    else:
      d_in = sum(peft_lib.lora_dims(t, down)[0] for t in peft.lora_targets)
      d_out = sum(peft_lib.lora_dims(t, down)[1] for t in peft.lora_targets)
      self.lora_a_head = MlpHead(hidden, d_in * peft.lora_rank, 1.0, dtype)
      self.lora_b_head = MlpHead(hidden, peft.lora_rank * d_out, 0.0, dtype)

  def __call__(self, hyper_tokens: Array, *, deterministic: bool = True) -> dict:
    """hyper_tokens: [b, s] few-shot text -> phi with batch axis b."""
    encoded = self.backbone.encode(hyper_tokens, deterministic=deterministic)  # [b, s, embed]
    embedded = self.decoder_inputs.astype(self.backbone_config.compute_dtype)[None]
    hidden = self.backbone.decode_embeddings(encoded, hyper_tokens, embedded,
                                             deterministic=deterministic)  # [b, n, embed]
    if self.peft_config.kind == "prefix":
      return self._prefix(hidden)
    return self._lora(hidden)

  def _prefix(self, hidden: Array) -> dict:
    down, peft = self.downstream_config, self.peft_config
    batch, p = hidden.shape[0], peft.prefix_length
    layers = down.num_encoder_layers
    out = self.prefix_head(hidden)  # [b, groups * P, L * 2 * H]
    out = out.reshape(batch, -1, p, layers, 2, down.joined_kv)  # [b, groups, P, L, kv, H]
    out = out.transpose(0, 3, 1, 4, 2, 5)  # [b, L, groups, kv, P, H]
    phi = {"prefix": out[:, :, :2]}  # [b, L, 2 (enc, dec), 2 (k, v), P, H]
    if peft.cross_prefix:
      phi["cross_prefix"] = out[:, :, 2]  # [b, L, 2, P, H]
    return _constrain(phi, peft, down)

  def _lora(self, hidden: Array) -> dict:
    down, peft = self.downstream_config, self.peft_config
    batch, rank = hidden.shape[0], peft.lora_rank
    modules = down.num_encoder_layers + 2 * down.num_decoder_layers
    a_all = self.lora_a_head(hidden[:, :modules])  # [b, modules, sum(d_in) * r]
    b_all = self.lora_b_head(hidden[:, modules:])  # [b, modules, r * sum(d_out)]
    a_all = a_all.reshape(batch, modules, -1, rank)  # [b, modules, sum(d_in), r]
    b_all = b_all.reshape(batch, modules, rank, -1)  # [b, modules, r, sum(d_out)]
    spans = {"encoder": (0, down.num_encoder_layers),
             "decoder_self": (down.num_encoder_layers,
                              down.num_encoder_layers + down.num_decoder_layers),
             "decoder_cross": (down.num_encoder_layers + down.num_decoder_layers, modules)}
    phi = {}
    for group, (lo, hi) in spans.items():
      phi[group] = {}
      in_start = out_start = 0
      for target in peft.lora_targets:
        d_in, d_out = peft_lib.lora_dims(target, down)
        phi[group][target] = {
            "a": a_all[:, lo:hi, in_start:in_start + d_in],  # [b, L, d_in, r]
            "b": b_all[:, lo:hi, :, out_start:out_start + d_out],  # [b, L, r, d_out]
        }
        in_start += d_in
        out_start += d_out
    return _constrain(phi, peft, down)


def _constrain(phi, peft, down):
  axes = peft_lib.phi_logical_axes(peft, down)
  return jax.tree.map(lambda x, names: nn.with_logical_constraint(x, names), phi, axes,
                      is_leaf=lambda x: isinstance(x, jax.Array))


def _dummy_tokens():
  return jnp.ones((1, 4), jnp.int32)


@functools.partial(jax.jit, static_argnums=0)
def init_params(model: HyperT5, rng: Array) -> dict:
  """Randomly initialized (unboxed) parameters, in one compiled computation."""
  return nn.unbox(model.init(rng, _dummy_tokens())["params"])


def init_from_downstream(hyper_params: dict, downstream_params: dict) -> dict:
  """A hypermodel whose backbone is a copy of the downstream T5 (minus its LM head)."""
  backbone = {k: v for k, v in downstream_params.items() if k != "logits_dense"}
  missing = set(hyper_params["backbone"]) - set(backbone)
  if missing:
    raise ValueError(f"downstream parameters lack {sorted(missing)} for the hypermodel backbone")
  shapes = jax.tree.map(np.shape, hyper_params["backbone"])
  if shapes != jax.tree.map(np.shape, backbone):
    raise ValueError("the hypermodel backbone and the downstream T5 differ in shape; "
                     "initialize from a downstream model of the backbone's size")
  # jnp.array copies: the backbone is trained, the downstream model stays frozen.
  return dict(hyper_params, backbone=jax.tree.map(jnp.array, backbone))
