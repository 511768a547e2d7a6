"""Scoring and batched incremental decoding with a key/value cache.

`log_likelihood` is the primitive behind rank classification: the sum of the
target tokens' log-probabilities under teacher forcing. `generate` decodes
greedily or by temperature sampling, one token per step against the cache,
and stops once every sequence has produced EOS.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from hypert5.model.t5 import T5

Array = jax.Array


def shift_right(targets: Array, start_token: int) -> Array:
  """[b, t] targets -> [b, t] decoder inputs (start token, then targets[:, :-1])."""
  start = jnp.full(targets.shape[:1] + (1,), start_token, targets.dtype)
  return jnp.concatenate([start, targets[:, :-1]], axis=1)


def token_log_probs(logits: Array, targets: Array) -> Array:
  """[b, t, vocab] float32 logits, [b, t] ids -> [b, t] log p(target)."""
  log_z = jax.nn.logsumexp(logits, axis=-1)
  picked = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
  return picked - log_z


@functools.partial(jax.jit, static_argnames=("model",))
def log_likelihood(model: T5, params, encoder_tokens: Array, decoder_target_tokens: Array,
                   target_weights: Array, phi=None) -> Array:
  """Sum over target tokens of log p(token): [b, s], [b, t], [b, t] -> [b].

  target_weights marks the real target positions (1) against padding (0).
  """
  decoder_inputs = shift_right(decoder_target_tokens, model.config.decoder_start_token_id)
  logits = model.apply({"params": params}, encoder_tokens, decoder_inputs, phi=phi)
  return jnp.sum(token_log_probs(logits, decoder_target_tokens) * target_weights, axis=-1)


@functools.partial(jax.jit, static_argnames=("model", "max_length", "temperature",
                                             "stop_at_eos"))
def generate(model: T5, params, encoder_tokens: Array, *, max_length: int, phi=None,
             temperature: float = 0.0, rng: Array | None = None,
             stop_at_eos: bool = True) -> Array:
  """Decodes up to `max_length` tokens: [b, s] -> [b, max_length] ids.

  temperature 0 is greedy. Positions after a sequence's EOS are padding.
  """
  cfg = model.config
  variables = {"params": params}
  batch = encoder_tokens.shape[0]
  encoded = model.apply(variables, encoder_tokens, phi=phi, method=T5.encode)
  cache = model.apply(variables, encoded, max_length, phi=phi, method=T5.init_decode_cache)
  encoder_mask = encoder_tokens != cfg.pad_token_id
  tokens = jnp.full((batch, max_length + 1), cfg.pad_token_id, jnp.int32)
  tokens = tokens.at[:, 0].set(cfg.decoder_start_token_id)
  if rng is None:
    rng = jax.random.PRNGKey(0)

  def step(state):
    index, tokens, cache, done, rng = state
    current = jax.lax.dynamic_slice_in_dim(tokens, index, 1, axis=1)  # [b, 1]
    logits, cache = model.apply(variables, current, cache, index, encoder_mask, phi=phi,
                                method=T5.decode_step)  # [b, vocab]
    if temperature == 0.0:
      next_token = jnp.argmax(logits, axis=-1)
    else:
      rng, sample_rng = jax.random.split(rng)
      next_token = jax.random.categorical(sample_rng, logits / temperature, axis=-1)
    next_token = jnp.where(done, cfg.pad_token_id, next_token).astype(jnp.int32)
    tokens = jax.lax.dynamic_update_slice_in_dim(tokens, next_token[:, None], index + 1, axis=1)
    if stop_at_eos:
      done = done | (next_token == cfg.eos_token_id)
    return index + 1, tokens, cache, done, rng

  def not_finished(state):
    index, _, _, done, _ = state
    return (index < max_length) & ~jnp.all(done)

  state = (jnp.int32(0), tokens, cache, jnp.zeros((batch,), bool), rng)
  _, tokens, _, _, _ = jax.lax.while_loop(not_finished, step, state)
  return tokens[:, 1:]
