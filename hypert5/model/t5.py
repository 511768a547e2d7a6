"""T5 v1.1 encoder-decoder in Flax Linen, with hooks for generated PEFT parameters.

Why Linen: the functional parameter tree is what pjit-style sharding, Orbax and
freezing by "separate argument" want, and `nn.scan`/`nn.remat`/logical
partitioning are mature there (t5x, flaxformer and gemma are Linen too).

Architecture (matches HuggingFace `T5ForConditionalGeneration`):
RMS layer norm without bias, no biases, gated-GELU (tanh) or ReLU feed-forward,
relative position buckets (one table per stack, shared by all its layers;
HuggingFace stores it in block 0), unscaled dot-product attention, untied LM
head unless `tie_word_embeddings`.

PEFT hooks: every attention layer takes an optional dict of per-example
parameters (`peft.py` builds them from phi):
  prefix_key, prefix_value: [batch, prefix, heads, kv] prepended to keys/values;
  lora: {"q"|"k"|"v"|"o": {"a": [batch, d_in, rank], "b": [batch, rank, d_out]}}.
Layers are scanned (`scan_layers=True`, compile time independent of depth) or
unrolled; the parameter tree is the same stacked tree either way.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from hypert5.model import peft as peft_lib
from hypert5.model.t5_config import T5Config

Array = jax.Array
NEG_INF = -1e10  # additive mask value, finite so fully masked rows stay NaN-free

# ---------------------------------------------------------------------------
# Initializers (Mesh TensorFlow / t5x conventions).


def _logical(init, axes):
  return nn.with_logical_partitioning(init, axes)


# ---------------------------------------------------------------------------
# Building blocks.


class DenseGeneral(nn.Module):
  """x[..., *in] @ kernel[*in, *features], kernel logically named by `axes`.

  Our own (not nn.DenseGeneral) so the kernel is created in its final shape:
  Flax's version initializes a flattened kernel, whose logical constraint
  fails under an active mesh. fan_in spans all contracted dims.
  """
  features: tuple[int, ...]
  axes: tuple[str, ...]
  in_dims: int = 1
  init_scale: float = 1.0  # 0 makes a zero-initialized kernel
  init_distribution: str = "truncated_normal"
  use_bias: bool = False
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: Array) -> Array:
    in_shape = x.shape[x.ndim - self.in_dims:]
    shape = tuple(in_shape) + tuple(self.features)
    if self.init_scale == 0:
      init = nn.initializers.zeros
    else:
      init = nn.initializers.variance_scaling(
          self.init_scale, "fan_in", self.init_distribution,
          in_axis=tuple(range(self.in_dims)), out_axis=tuple(range(self.in_dims, len(shape))))
    kernel = self.param("kernel", _logical(init, self.axes), shape, jnp.float32)
    contract = (tuple(range(x.ndim - self.in_dims, x.ndim)), tuple(range(self.in_dims)))
    y = jax.lax.dot_general(x.astype(self.dtype), kernel.astype(self.dtype), (contract, ((), ())))
    if self.use_bias:
      bias = self.param("bias", _logical(nn.initializers.zeros, self.axes[self.in_dims:]),
                        tuple(self.features), jnp.float32)
      y = y + bias.astype(self.dtype)
    return y


class RMSNorm(nn.Module):
  """T5 layer norm: scale only, no mean subtraction, no bias; statistics in fp32."""
  epsilon: float
  dtype: Any

  @nn.compact
  def __call__(self, x: Array) -> Array:
    scale = self.param("scale", _logical(nn.initializers.ones, ("embed",)),
                       (x.shape[-1],), jnp.float32)
    x32 = x.astype(jnp.float32)
    variance = jnp.mean(jnp.square(x32), axis=-1, keepdims=True)
    y = x32 * jax.lax.rsqrt(variance + self.epsilon)
    return (y * scale).astype(self.dtype)


def relative_position_bucket(relative_position: Array, bidirectional: bool,
                             num_buckets: int, max_distance: int) -> Array:
  """Maps key-minus-query offsets to T5's log-spaced buckets.

  Half the buckets are exact small offsets, the rest grow logarithmically up to
  max_distance; bidirectional splits the buckets between the two signs.
  """
  bucket = jnp.zeros_like(relative_position)
  if bidirectional:
    num_buckets //= 2
    bucket += (relative_position > 0).astype(jnp.int32) * num_buckets
    distance = jnp.abs(relative_position)
  else:
    distance = -jnp.minimum(relative_position, 0)
  max_exact = num_buckets // 2
  is_small = distance < max_exact
  # max(distance, 1) keeps log() finite where the small branch is chosen anyway.
  log_ratio = (jnp.log(jnp.maximum(distance, 1).astype(jnp.float32) / max_exact)
               / np.log(max_distance / max_exact))
  large = max_exact + (log_ratio * (num_buckets - max_exact)).astype(jnp.int32)
  large = jnp.minimum(large, num_buckets - 1)
  return bucket + jnp.where(is_small, distance, large)


class RelativePositionBias(nn.Module):
  """One learned scalar per (head, bucket); returns an additive attention bias."""
  config: T5Config
  bidirectional: bool

  @nn.compact
  def __call__(self, query_positions: Array, key_positions: Array) -> Array:
    """[b|1, t], [b|1, s] positions -> [b|1, heads, t, s] float32 bias."""
    cfg = self.config
    table = self.param(
        "rel_embedding",
        _logical(nn.initializers.normal(stddev=1.0), ("heads", "relpos_buckets")),
        (cfg.num_heads, cfg.relative_attention_num_buckets), jnp.float32)
    offsets = key_positions[:, None, :] - query_positions[:, :, None]  # [b, t, s]
    buckets = relative_position_bucket(
        offsets, self.bidirectional, cfg.relative_attention_num_buckets,
        cfg.relative_attention_max_distance)
    # One-hot matmul instead of a gather: same numbers, friendlier to sharding.
    one_hot = jax.nn.one_hot(buckets, cfg.relative_attention_num_buckets, dtype=jnp.float32)
    return jnp.einsum("hk,btsk->bhts", table, one_hot)  # [b, heads, t, s]


def _lora_update(x: Array, lora: dict[str, Array] | None) -> Array | None:
  """x: [b, t, d_in]; a: [b, d_in, r]; b: [b, r, d_out] -> [b, t, d_out] (scale folded into b)."""
  if lora is None:
    return None
  down = jnp.einsum("btd,bdr->btr", x, lora["a"].astype(x.dtype))
  return jnp.einsum("btr,bro->bto", down, lora["b"].astype(x.dtype))


def attention_core(query: Array, key: Array, value: Array, bias: Array | None,
                   mask: Array | None, *, dropout: nn.Dropout | None,
                   deterministic: bool, implementation: str | None) -> Array:
  """Unscaled softmax attention.

  query: [b, t, heads, kv]; key, value: [b, s, heads, kv];
  bias: [b|1, heads, t, s] additive; mask: [b|1, 1, t, s] boolean (True = attend).
  Returns [b, t, heads, kv].
  """
  if dropout is None or deterministic:
    # XLA or cuDNN fused attention; T5 folds 1/sqrt(d_kv) into the init, so scale=1.
    if bias is not None:
      bias = bias.astype(query.dtype)
    return jax.nn.dot_product_attention(query, key, value, bias=bias, mask=mask,
                                        scale=1.0, implementation=implementation)
  # Attention-probability dropout (HuggingFace T5 applies it) needs the explicit form.
  logits = jnp.einsum("btnh,bsnh->bnts", query, key,
                      preferred_element_type=jnp.float32)
  if bias is not None:
    logits = logits + bias
  if mask is not None:
    logits = jnp.where(mask, logits, NEG_INF)
  probs = jax.nn.softmax(logits, axis=-1)
  probs = dropout(probs, deterministic=deterministic).astype(value.dtype)
  return jnp.einsum("bnts,bsnh->btnh", probs, value)


class Attention(nn.Module):
  """Multi-head attention with optional prefix keys/values and LoRA updates."""
  config: T5Config

  def setup(self):
    cfg = self.config
    heads = (cfg.num_heads, cfg.d_kv)
    dense = functools.partial(DenseGeneral, dtype=cfg.compute_dtype)
    # 1/sqrt(d_kv) lives in the query init (Mesh TF), so attention is unscaled.
    self.query = dense(heads, ("embed", "heads", "kv"), init_scale=1.0 / cfg.d_kv)
    self.key = dense(heads, ("embed", "heads", "kv"))
    self.value = dense(heads, ("embed", "heads", "kv"))
    self.out = dense((cfg.d_model,), ("heads", "kv", "embed"), in_dims=2)
    self.dropout = nn.Dropout(cfg.dropout_rate) if cfg.dropout_rate > 0 else None

  def _project(self, dense, name: str, x: Array, peft: dict | None) -> Array:
    """[b, t, embed] -> [b, t, heads, kv], plus the LoRA update of projection `name`."""
    y = dense(x)
    update = _lora_update(x, (peft or {}).get("lora", {}).get(name))
    if update is not None:
      y = y + update.reshape(y.shape)
    return y

  def project_kv(self, inputs_kv: Array, peft: dict | None) -> tuple[Array, Array]:
    return (self._project(self.key, "k", inputs_kv, peft),
            self._project(self.value, "v", inputs_kv, peft))

  def __call__(self, inputs_q: Array, inputs_kv: Array | None, *, bias: Array | None,
               mask: Array | None, peft: dict | None, deterministic: bool,
               kv: tuple[Array, Array] | None = None) -> Array:
    """inputs_q: [b, t, embed]; inputs_kv: [b, s, embed] (or precomputed kv).

    bias: [b|1, heads, t, s'] or None; mask: [b|1, 1, t, s'] (True = attend), where
    s' counts the prefix columns too when a prefix is given.
    """
    cfg = self.config
    peft = peft or {}
    query = self._project(self.query, "q", inputs_q, peft)  # [b, t, heads, kv]
    query = nn.with_logical_constraint(query, ("batch", "length", "heads", "kv"))
    key, value = kv if kv is not None else self.project_kv(inputs_kv, peft)
    if "prefix_key" in peft:
      # Prefix positions are prepended here; the caller gave them zero relative
      # bias and an always-true mask, so padding and causality never hide them.
      key = jnp.concatenate([peft["prefix_key"].astype(key.dtype), key], axis=1)
      value = jnp.concatenate([peft["prefix_value"].astype(value.dtype), value], axis=1)
    key = nn.with_logical_constraint(key, ("batch", "length", "heads", "kv"))
    value = nn.with_logical_constraint(value, ("batch", "length", "heads", "kv"))
    context = attention_core(query, key, value, bias, mask, dropout=self.dropout,
                             deterministic=deterministic,
                             implementation=cfg.attention_impl)  # [b, t, heads, kv]
    out = self.out(context)  # [b, t, embed]
    update = _lora_update(context.reshape(context.shape[:2] + (-1,)),
                          peft.get("lora", {}).get("o"))
    if update is not None:
      out = out + update
    return out


class MlpBlock(nn.Module):
  """Gated-GELU (v1.1) or ReLU (original T5) feed-forward, no biases."""
  config: T5Config

  @nn.compact
  def __call__(self, x: Array, *, deterministic: bool) -> Array:
    cfg = self.config
    wi = functools.partial(DenseGeneral, (cfg.d_ff,), ("embed", "mlp"), dtype=cfg.compute_dtype)
    if cfg.feed_forward_proj == "gated-gelu":
      gate = jax.nn.gelu(wi(name="wi_0")(x), approximate=True)
      hidden = gate * wi(name="wi_1")(x)
    else:
      hidden = jax.nn.relu(wi(name="wi")(x))
    hidden = nn.with_logical_constraint(hidden, ("batch", "length", "mlp"))  # [b, t, mlp]
    hidden = nn.Dropout(cfg.dropout_rate)(hidden, deterministic=deterministic)
    return DenseGeneral((cfg.d_model,), ("mlp", "embed"), dtype=cfg.compute_dtype,
                        name="wo")(hidden)


def _residual_constraint(x: Array) -> Array:
  return nn.with_logical_constraint(x, ("batch", "length", "embed"))


@struct.dataclass
class LayerInputs:
  """What every layer of a stack reads besides its input and its own PEFT
  parameters: the same for all layers (nn.scan broadcasts it, hence one argument).

  self_bias: [b|1, heads, t, s_self] relative-position bias (0 on prefix columns);
  self_mask: [b|1, 1, t, s_self] (True = attend); s_self counts prefix columns.
  Decoder only: encoded [b, s, embed]; cross_mask [b|1, 1, t, s + cross prefix];
  decode_index, the position written into the self-attention cache ("decode" mode).
  """
  self_bias: Array | None = None
  self_mask: Array | None = None
  encoded: Array | None = None
  cross_mask: Array | None = None
  decode_index: Array | None = None


class EncoderLayer(nn.Module):
  config: T5Config
  deterministic: bool = True

  @nn.compact
  def __call__(self, x: Array, inputs: LayerInputs, peft: dict | None):
    """x: [b, t, embed] -> ([b, t, embed], None) (scan carry, no per-layer output)."""
    cfg, det = self.config, self.deterministic
    peft = peft or {}
    norm = functools.partial(RMSNorm, cfg.layer_norm_epsilon, cfg.compute_dtype)
    h = norm(name="pre_attention_layer_norm")(x)
    h = Attention(cfg, name="attention")(h, h, bias=inputs.self_bias, mask=inputs.self_mask,
                                         peft=peft.get("self"), deterministic=det)
    x = _residual_constraint(x + nn.Dropout(cfg.dropout_rate)(h, deterministic=det))
    h = norm(name="pre_mlp_layer_norm")(x)
    h = MlpBlock(cfg, name="mlp")(h, deterministic=det)
    x = _residual_constraint(x + nn.Dropout(cfg.dropout_rate)(h, deterministic=det))
    return x, None


class DecoderLayer(nn.Module):
  """One decoder block. `mode`: "full" (teacher forcing), "decode" (one step
  against a key/value cache) or "cross_kv" (only the cross-attention keys and
  values, computed once before decoding)."""
  config: T5Config
  deterministic: bool = True
  mode: str = "full"

  @nn.compact
  def __call__(self, x: Array, inputs: LayerInputs, peft: dict | None, cache: dict | None):
    """x: [b, t, embed] -> (x, per-layer cache or None).

    Decode mode: t == 1 and `cache` holds this layer's self-attention keys and
    values [b, max_len, heads, kv] and its cross-attention keys and values.
    """
    cfg, det = self.config, self.deterministic
    peft = peft or {}
    norm = functools.partial(RMSNorm, cfg.layer_norm_epsilon, cfg.compute_dtype)
    self_attention = Attention(cfg, name="self_attention")
    cross_attention = Attention(cfg, name="encoder_decoder_attention")
    if self.mode == "cross_kv":
      key, value = cross_attention.project_kv(inputs.encoded, peft.get("cross"))
      return x, {"cross_key": key, "cross_value": value}

    h = norm(name="pre_self_attention_layer_norm")(x)
    new_cache = None
    if self.mode == "decode":
      key, value = self_attention.project_kv(h, peft.get("self"))  # [b, 1, heads, kv]
      start = (0, inputs.decode_index, 0, 0)
      cached_key = jax.lax.dynamic_update_slice(
          cache["self_key"], key.astype(cache["self_key"].dtype), start)
      cached_value = jax.lax.dynamic_update_slice(
          cache["self_value"], value.astype(cache["self_value"].dtype), start)
      new_cache = dict(cache, self_key=cached_key, self_value=cached_value)
      self_inputs, self_kv = None, (cached_key, cached_value)
      cross_kv = (cache["cross_key"], cache["cross_value"])
    else:
      self_inputs, self_kv, cross_kv = h, None, None
    h = self_attention(h, self_inputs, bias=inputs.self_bias, mask=inputs.self_mask,
                       peft=peft.get("self"), deterministic=det, kv=self_kv)
    x = _residual_constraint(x + nn.Dropout(cfg.dropout_rate)(h, deterministic=det))

    h = norm(name="pre_cross_attention_layer_norm")(x)
    # Cross-attention has no position bias in T5.
    h = cross_attention(h, inputs.encoded, bias=None, mask=inputs.cross_mask,
                        peft=peft.get("cross"), deterministic=det, kv=cross_kv)
    x = _residual_constraint(x + nn.Dropout(cfg.dropout_rate)(h, deterministic=det))

    h = norm(name="pre_mlp_layer_norm")(x)
    h = MlpBlock(cfg, name="mlp")(h, deterministic=det)
    x = _residual_constraint(x + nn.Dropout(cfg.dropout_rate)(h, deterministic=det))
    return x, new_cache


_REMAT_POLICIES = {
    "full": None,
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.checkpoint_dots_with_no_batch_dims,
}


def _stack(layer_cls, cfg: T5Config, num_layers: int, in_axes: tuple, **attributes):
  """Scanned (or fully unrolled) layers; the stacked parameter tree is the same either way.

  nn.scan takes positional arguments only; `in_axes` gives one entry per argument
  after the carry: nn.broadcast (the same for every layer) or 0 (stacked per layer).
  """
  if cfg.remat_policy != "none":
    layer_cls = nn.remat(layer_cls, policy=_REMAT_POLICIES[cfg.remat_policy],
                         prevent_cse=not cfg.scan_layers)
  scanned = nn.scan(
      layer_cls,
      variable_axes={"params": 0},
      split_rngs={"params": True, "dropout": True},
      in_axes=in_axes,
      length=num_layers,
      unroll=1 if cfg.scan_layers else num_layers,
      metadata_params={nn.PARTITION_NAME: "layers"},
  )
  return scanned(cfg, name="layers", **attributes)


def _with_prefix_columns(bias: Array | None, mask: Array, prefix_length: int):
  """Prepends prefix columns: zero relative-position bias and always attended."""
  if prefix_length == 0:
    return bias, mask
  if bias is not None:
    bias = jnp.concatenate([jnp.zeros(bias.shape[:-1] + (prefix_length,), bias.dtype), bias], -1)
  return bias, jnp.concatenate([jnp.ones(mask.shape[:-1] + (prefix_length,), bool), mask], -1)


class Encoder(nn.Module):
  config: T5Config

  @nn.compact
  def __call__(self, embedded: Array, *, segment_ids: Array, positions: Array,
               peft: dict | None = None, prefix_length: int = 0,
               deterministic: bool = True) -> Array:
    """embedded: [b, s, embed]; segment_ids: [b, s] (0 = padding); positions: [b|1, s];
    peft: per-layer PEFT parameters; prefix_length: prefix columns of self-attention.
    Returns [b, s, embed]."""
    cfg = self.config
    bias = RelativePositionBias(cfg, bidirectional=True, name="relpos_bias")(
        positions, positions)  # [b|1, heads, s, s]
    # Padding keys (segment 0) are hidden; packed segments see only themselves.
    mask = ((segment_ids[:, :, None] == segment_ids[:, None, :])
            & (segment_ids[:, None, :] > 0))[:, None]  # [b, 1, s, s]
    bias, mask = _with_prefix_columns(bias, mask, prefix_length)
    x = nn.Dropout(cfg.dropout_rate)(embedded, deterministic=deterministic)
    x = _residual_constraint(x.astype(cfg.compute_dtype))
    layers = _stack(EncoderLayer, cfg, cfg.num_encoder_layers, (nn.broadcast, 0),
                    deterministic=deterministic)
    x, _ = layers(x, LayerInputs(self_bias=bias, self_mask=mask), peft)
    x = RMSNorm(cfg.layer_norm_epsilon, cfg.compute_dtype, name="encoder_norm")(x)
    return nn.Dropout(cfg.dropout_rate)(x, deterministic=deterministic)


class Decoder(nn.Module):
  config: T5Config

  @nn.compact
  def __call__(self, embedded: Array, *, encoded: Array | None = None,
               self_mask: Array | None = None, cross_mask: Array | None = None,
               query_positions: Array | None = None, key_positions: Array | None = None,
               peft: dict | None = None, cache: dict | None = None,
               decode_index: Array | None = None, prefix_length: int = 0,
               cross_prefix_length: int = 0, deterministic: bool = True,
               mode: str = "full") -> tuple[Array, Any]:
    """embedded: [b, t, embed] -> ([b, t, embed], cache); see DecoderLayer for `mode`.

    encoded: [b, s, embed]; self_mask: [b|1, 1, t, s_self]; cross_mask: [b|1, 1, t, s]
    (True = attend, prefix columns are added here); query_positions: [b|1, t];
    key_positions: [b|1, s_self], default query_positions; cache and decode_index:
    "decode" mode (T5.decode_step).
    """
    cfg = self.config
    layers = _stack(DecoderLayer, cfg, cfg.num_decoder_layers, (nn.broadcast, 0, 0),
                    deterministic=deterministic, mode=mode)
    if mode == "cross_kv":
      return layers(embedded, LayerInputs(encoded=encoded), peft, None)
    if key_positions is None:
      key_positions = query_positions
    bias = RelativePositionBias(cfg, bidirectional=False, name="relpos_bias")(
        query_positions, key_positions)  # [b|1, heads, t, s_self]
    bias, self_mask = _with_prefix_columns(bias, self_mask, prefix_length)
    _, cross_mask = _with_prefix_columns(None, cross_mask, cross_prefix_length)
    x = nn.Dropout(cfg.dropout_rate)(embedded, deterministic=deterministic)
    x = _residual_constraint(x.astype(cfg.compute_dtype))
    inputs = LayerInputs(self_bias=bias, self_mask=self_mask, encoded=encoded,
                         cross_mask=cross_mask, decode_index=decode_index)
    x, new_cache = layers(x, inputs, peft, cache)
    x = RMSNorm(cfg.layer_norm_epsilon, cfg.compute_dtype, name="decoder_norm")(x)
    return nn.Dropout(cfg.dropout_rate)(x, deterministic=deterministic), new_cache


class T5(nn.Module):
  """T5 encoder-decoder. `peft_config` says what phi, when given, contains.

  With phi=None every method computes exactly the plain T5.
  """
  config: T5Config
  peft_config: peft_lib.PeftConfig | None = None

  def setup(self):
    cfg = self.config
    self.token_embedder = nn.Embed(
        cfg.vocab_size, cfg.d_model, dtype=cfg.compute_dtype, param_dtype=jnp.float32,
        embedding_init=_logical(nn.initializers.normal(stddev=1.0), ("vocab", "embed")))
    self.encoder = Encoder(cfg)
    self.decoder = Decoder(cfg)
    if not cfg.tie_word_embeddings:
      self.logits_dense = DenseGeneral((cfg.vocab_size,), ("embed", "vocab"),
                                       dtype=cfg.compute_dtype)

  def _layer_peft(self, phi, batch_size: int):
    """phi -> ({"encoder": ..., "decoder": ...} stacked per layer, P_self, P_cross)."""
    if phi is None:
      return {"encoder": None, "decoder": None}, 0, 0
    if self.peft_config is None:
      raise ValueError("phi was given but the model was built without a peft_config")
    return (peft_lib.per_layer(phi, self.peft_config, self.config, batch_size),
            self.peft_config.self_prefix_length, self.peft_config.cross_prefix_length)

  def encode(self, encoder_tokens: Array, *, phi=None, encoder_segment_ids=None,
             encoder_positions=None, deterministic: bool = True) -> Array:
    """[b, s] token ids -> [b, s, embed] encoder outputs."""
    cfg = self.config
    layer_peft, prefix_length, _ = self._layer_peft(phi, encoder_tokens.shape[0])
    if encoder_segment_ids is None:
      encoder_segment_ids = (encoder_tokens != cfg.pad_token_id).astype(jnp.int32)
    if encoder_positions is None:
      encoder_positions = jnp.arange(encoder_tokens.shape[1], dtype=jnp.int32)[None, :]
    embedded = self.token_embedder(encoder_tokens)  # [b, s, embed]
    return self.encoder(embedded, segment_ids=encoder_segment_ids, positions=encoder_positions,
                        peft=layer_peft["encoder"], prefix_length=prefix_length,
                        deterministic=deterministic)

  def logits(self, decoder_outputs: Array) -> Array:
    """[b, t, embed] -> [b, t, vocab] float32."""
    cfg = self.config
    if cfg.scale_decoder_outputs:
      decoder_outputs = decoder_outputs * (cfg.d_model ** -0.5)
    if cfg.tie_word_embeddings:
      out = self.token_embedder.attend(decoder_outputs)
    else:
      out = self.logits_dense(decoder_outputs)
    out = nn.with_logical_constraint(out, ("batch", "length", "vocab"))
    return out.astype(jnp.float32)

  def decode(self, encoded: Array, encoder_tokens: Array, decoder_input_tokens: Array, *,
             phi=None, encoder_segment_ids=None, decoder_segment_ids=None,
             decoder_positions=None, deterministic: bool = True) -> Array:
    """Teacher-forced decoder: [b, t] decoder inputs -> [b, t, vocab] logits."""
    cfg = self.config
    batch, length = decoder_input_tokens.shape
    layer_peft, prefix_length, cross_prefix_length = self._layer_peft(phi, batch)
    if encoder_segment_ids is None:
      encoder_segment_ids = (encoder_tokens != cfg.pad_token_id).astype(jnp.int32)
    if decoder_positions is None:
      decoder_positions = jnp.arange(length, dtype=jnp.int32)[None, :]
    causal = decoder_positions[:, :, None] >= decoder_positions[:, None, :]  # [b|1, t, t]
    if decoder_segment_ids is not None:
      # Packed targets attend within their own segment. Padding queries need no
      # mask of their own: their outputs carry zero loss weight.
      causal = causal & (decoder_segment_ids[:, :, None] == decoder_segment_ids[:, None, :])
      cross_mask = ((decoder_segment_ids[:, :, None] == encoder_segment_ids[:, None, :])
                    & (encoder_segment_ids[:, None, :] > 0))  # [b, t, s]
    else:
      cross_mask = (encoder_segment_ids > 0)[:, None, :]  # [b, 1, s]
    embedded = self.token_embedder(decoder_input_tokens)  # [b, t, embed]
    outputs, _ = self.decoder(
        embedded, encoded=encoded, self_mask=causal[:, None], cross_mask=cross_mask[:, None],
        query_positions=decoder_positions, peft=layer_peft["decoder"],
        prefix_length=prefix_length, cross_prefix_length=cross_prefix_length,
        deterministic=deterministic)
    return self.logits(outputs)

  def decode_embeddings(self, encoded: Array, encoder_tokens: Array, embedded: Array, *,
                        deterministic: bool = True) -> Array:
    """Decoder over given input embeddings with NO causal mask (the hypermodel's use).

    encoded: [b, s, embed]; embedded: [b|1, t, embed] -> [b, t, embed] final hidden states.
    """
    batch, length = encoder_tokens.shape[0], embedded.shape[1]
    embedded = jnp.broadcast_to(embedded, (batch,) + embedded.shape[1:])
    positions = jnp.arange(length, dtype=jnp.int32)[None, :]
    every = jnp.ones((1, 1, length, length), bool)  # bidirectional: nothing hidden
    cross_mask = (encoder_tokens != self.config.pad_token_id)[:, None, None, :]  # [b, 1, 1, s]
    outputs, _ = self.decoder(embedded, encoded=encoded, self_mask=every, cross_mask=cross_mask,
                              query_positions=positions, deterministic=deterministic)
    return outputs

  def __call__(self, encoder_tokens: Array, decoder_input_tokens: Array, *, phi=None,
               encoder_segment_ids=None, decoder_segment_ids=None, encoder_positions=None,
               decoder_positions=None, deterministic: bool = True) -> Array:
    """[b, s] encoder tokens, [b, t] decoder inputs -> [b, t, vocab] float32 logits."""
    encoded = self.encode(encoder_tokens, phi=phi, encoder_segment_ids=encoder_segment_ids,
                          encoder_positions=encoder_positions, deterministic=deterministic)
    return self.decode(encoded, encoder_tokens, decoder_input_tokens, phi=phi,
                       encoder_segment_ids=encoder_segment_ids,
                       decoder_segment_ids=decoder_segment_ids,
                       decoder_positions=decoder_positions, deterministic=deterministic)

  # -- incremental decoding --------------------------------------------------

  def init_decode_cache(self, encoded: Array, max_length: int, *, phi=None) -> dict:
    """Empty self-attention cache plus cross-attention keys/values, computed once.

    Returns {"self_key", "self_value": [layers, b, max_length, heads, kv],
             "cross_key", "cross_value": [layers, b, s, heads, kv]}.
    """
    cfg = self.config
    batch = encoded.shape[0]
    layer_peft, _, _ = self._layer_peft(phi, batch)
    _, cross_kv = self.decoder(encoded, encoded=encoded, peft=layer_peft["decoder"],
                               mode="cross_kv")
    shape = (cfg.num_decoder_layers, batch, max_length, cfg.num_heads, cfg.d_kv)
    zeros = jnp.zeros(shape, cfg.compute_dtype)
    return {"self_key": zeros, "self_value": zeros, **cross_kv}

  def decode_step(self, tokens: Array, cache: dict, decode_index: Array,
                  encoder_mask: Array, *, phi=None) -> tuple[Array, dict]:
    """One decoding step at position `decode_index` (a scalar).

    tokens: [b, 1]; encoder_mask: [b, s] (True = real token).
    Returns ([b, vocab] float32 logits, updated cache).
    """
    max_length = cache["self_key"].shape[2]
    layer_peft, prefix_length, cross_prefix_length = self._layer_peft(phi, tokens.shape[0])
    key_positions = jnp.arange(max_length, dtype=jnp.int32)[None, :]  # [1, max_len]
    query_positions = jnp.reshape(decode_index, (1, 1)).astype(jnp.int32)  # [1, 1]
    self_mask = (key_positions <= decode_index)[:, None, None, :]  # [1, 1, 1, max_len]
    cross_mask = encoder_mask[:, None, None, :]  # [b, 1, 1, s]
    embedded = self.token_embedder(tokens)  # [b, 1, embed]
    outputs, new_cache = self.decoder(
        embedded, self_mask=self_mask, cross_mask=cross_mask, query_positions=query_positions,
        key_positions=key_positions, peft=layer_peft["decoder"], cache=cache,
        decode_index=decode_index, prefix_length=prefix_length,
        cross_prefix_length=cross_prefix_length, mode="decode")
    return self.logits(outputs)[:, 0], new_cache


def _dummy_inputs():
  return jnp.ones((1, 1), jnp.int32), jnp.ones((1, 1), jnp.int32)


@functools.lru_cache(maxsize=64)
def abstract_variables(cfg: T5Config) -> dict:
  """Boxed (logically partitioned) parameter shapes, without allocating anything.
  Memoized per config (tracing init takes about a second); do not modify the result."""
  model = T5(cfg)
  return jax.eval_shape(lambda: model.init(jax.random.PRNGKey(0), *_dummy_inputs()))


def unbox_shapes(boxed):
  """Abstract boxed parameters -> plain ShapeDtypeStructs. Unlike nn.unbox it applies
  no sharding constraint, so it works under an active mesh."""
  return jax.tree.map(lambda x: x.value if isinstance(x, nn.Partitioned) else x, boxed,
                      is_leaf=lambda x: isinstance(x, nn.Partitioned))


def param_shapes(cfg: T5Config) -> dict:
  """Parameter tree of jax.ShapeDtypeStruct."""
  return unbox_shapes(abstract_variables(cfg)["params"])


def param_logical_axes(cfg: T5Config) -> dict:
  """Parameter tree of PartitionSpecs over logical axis names."""
  return nn.get_partition_spec(abstract_variables(cfg))["params"]


@functools.partial(jax.jit, static_argnums=0)
def init_params(cfg: T5Config, rng: Array) -> dict:
  """Randomly initialized (unboxed) parameters, in one compiled computation."""
  return nn.unbox(T5(cfg).init(rng, *_dummy_inputs())["params"])


def count_params(tree) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree.leaves(tree)))
