"""T5 backbone: parity with HuggingFace's PyTorch T5, decoding, sizes, axis names."""

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from conftest import forward, make_hf_t5
from transformers import T5ForConditionalGeneration

from hypert5.formats import hf
from hypert5.model import decoding, t5
from hypert5.model.t5_config import SIZES, get_size


def padded_batch(vocab_size, seed=0):
  rs = np.random.RandomState(seed)
  enc = rs.randint(3, vocab_size, (3, 11)).astype(np.int32)
  enc[1, 7:] = 0
  enc[2, 4:] = 0
  dec = rs.randint(3, vocab_size, (3, 9)).astype(np.int32)
  dec[:, 0] = 0
  return enc, dec


def hf_logits(model, enc, dec):
  with torch.no_grad():
    return model(input_ids=torch.tensor(enc, dtype=torch.long),
                 attention_mask=torch.tensor(enc != 0, dtype=torch.long),
                 decoder_input_ids=torch.tensor(dec, dtype=torch.long)).logits.numpy()


VARIANTS = {
    # v1.1: gated-GELU, untied head, unequal depth, odd vocab, 12 buckets.
    "v1_1": {},
    # Original T5: ReLU, tied head rescaled by d_model**-0.5, other bucket settings.
    "original": dict(feed_forward_proj="relu", tie_word_embeddings=True, vocab_size=97,
                     num_layers=3, num_decoder_layers=2, relative_attention_num_buckets=6,
                     relative_attention_max_distance=9),
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_logits_match_huggingface(tmp_path, variant):
  reference = make_hf_t5(tmp_path, seed=3, **VARIANTS[variant])
  reference = T5ForConditionalGeneration.from_pretrained(str(tmp_path)).eval()
  cfg, params = hf.load_hf_checkpoint(str(tmp_path))
  assert cfg.tie_word_embeddings == (variant == "original")
  enc, dec = padded_batch(cfg.vocab_size)
  ours = forward(t5.T5(cfg), params, enc, dec)
  want = hf_logits(reference, enc, dec)
  np.testing.assert_allclose(np.asarray(ours), want, atol=1e-4, rtol=0)


def test_scan_unrolled_and_remat_agree(hf_t5_dir):
  cfg, params = hf.load_hf_checkpoint(hf_t5_dir)
  enc, dec = padded_batch(cfg.vocab_size, seed=1)
  base = forward(t5.T5(cfg), params, enc, dec)
  for changes in (dict(scan_layers=False), dict(remat_policy="full"),
                  dict(remat_policy="dots", scan_layers=False)):
    other = forward(t5.T5(cfg.replace(**changes)), params, enc, dec)
    np.testing.assert_allclose(other, base, atol=1e-5, err_msg=str(changes))


def test_greedy_decoding_matches_huggingface_for_20_steps(hf_t5_dir):
  cfg, params = hf.load_hf_checkpoint(hf_t5_dir)
  reference = T5ForConditionalGeneration.from_pretrained(hf_t5_dir).eval()
  enc, _ = padded_batch(cfg.vocab_size, seed=2)
  ours = np.asarray(decoding.generate(t5.T5(cfg), params, jnp.asarray(enc), max_length=20,
                                      stop_at_eos=False))
  with torch.no_grad():
    out = reference.generate(input_ids=torch.tensor(enc, dtype=torch.long),
                             attention_mask=torch.tensor(enc != 0, dtype=torch.long),
                             max_new_tokens=20, do_sample=False, eos_token_id=None,
                             pad_token_id=0, use_cache=False)  # HF cache breaks on 2+3 layers
  np.testing.assert_array_equal(ours, out[:, 1:].numpy())


def test_cached_decoding_equals_teacher_forcing(hf_t5_dir):
  """Each step of the KV-cache decoder gives the teacher-forced logits."""
  cfg, params = hf.load_hf_checkpoint(hf_t5_dir)
  model = t5.T5(cfg)
  enc, dec = padded_batch(cfg.vocab_size, seed=4)
  full = forward(model, params, enc, dec)  # [b, t, vocab]
  variables = {"params": params}
  encoded = model.apply(variables, enc, method=t5.T5.encode)
  cache = model.apply(variables, encoded, dec.shape[1], method=t5.T5.init_decode_cache)
  step = jax.jit(lambda v, *args: model.apply(v, *args, method=t5.T5.decode_step))
  for i in range(dec.shape[1]):
    logits, cache = step(variables, dec[:, i:i + 1], cache, jnp.int32(i), enc != 0)
    np.testing.assert_allclose(logits, full[:, i], atol=1e-4)


def test_generation_stops_at_eos(hf_t5_dir):
  """With EOS set to a token greedy decoding emits at step 3, rows end there."""
  cfg, params = hf.load_hf_checkpoint(hf_t5_dir)
  enc, _ = padded_batch(cfg.vocab_size)
  free = np.asarray(decoding.generate(t5.T5(cfg), params, enc, max_length=12,
                                      stop_at_eos=False))
  eos = int(free[0, 2])
  stopped = np.asarray(decoding.generate(t5.T5(cfg.replace(eos_token_id=eos)), params, enc,
                                         max_length=12))
  for free_row, row in zip(free, stopped):
    hits = np.flatnonzero(free_row == eos)
    end = hits[0] + 1 if len(hits) else len(row)
    np.testing.assert_array_equal(row[:end], free_row[:end])
    assert (row[end:] == cfg.pad_token_id).all()
  assert (stopped[0, 3:] == cfg.pad_token_id).all()


def hf_param_count(**config):
  from transformers import T5Config
  with torch.device("meta"):
    model = T5ForConditionalGeneration(T5Config(**config))
  count = sum(p.numel() for p in model.parameters())
  if model.lm_head.weight is model.shared.weight:  # transformers 5 ties it regardless
    count += model.lm_head.weight.numel()
  return count


@pytest.mark.parametrize("size", ["small", "base", "large", "xl", "xxl"])
def test_parameter_counts_equal_huggingface_v1_1(size):
  cfg = SIZES[size]
  ours = t5.count_params(t5.param_shapes(cfg))  # eval_shape: nothing allocated
  theirs = hf_param_count(
      vocab_size=cfg.vocab_size, d_model=cfg.d_model, d_kv=cfg.d_kv, d_ff=cfg.d_ff,
      num_heads=cfg.num_heads, num_layers=cfg.num_encoder_layers,
      num_decoder_layers=cfg.num_decoder_layers, feed_forward_proj="gated-gelu",
      tie_word_embeddings=False)
  assert ours == theirs
  published = {"small": 76_961_152, "base": 247_577_856, "large": 783_150_080,
               "xl": 2_849_757_184, "xxl": 11_135_332_352}
  assert ours == published[size]


def test_every_parameter_has_one_logical_name_per_dimension():
  cfg = get_size("tiny")
  shapes = flax.traverse_util.flatten_dict(t5.param_shapes(cfg), sep="/")
  axes = flax.traverse_util.flatten_dict(t5.param_logical_axes(cfg), sep="/")
  assert set(shapes) == set(axes)
  known = {"vocab", "embed", "mlp", "heads", "kv", "layers", "relpos_buckets"}
  for key, shape in shapes.items():
    names = tuple(axes[key])
    assert len(names) == len(shape.shape), key
    assert set(names) <= known, (key, names)
    if "/layers/" in f"/{key}/":
      assert names[0] == "layers", key


def test_dropout_changes_training_outputs_only(hf_t5_dir):
  cfg, params = hf.load_hf_checkpoint(hf_t5_dir)
  model = t5.T5(cfg.replace(dropout_rate=0.3))
  enc, dec = padded_batch(cfg.vocab_size)
  plain = forward(model, params, enc, dec)
  eval_mode = forward(t5.T5(cfg.replace(dropout_rate=0.0)), params, enc, dec)
  np.testing.assert_allclose(plain, eval_mode, atol=1e-5)
  train = forward(model, params, enc, dec, deterministic=False,
                  rngs={"dropout": jax.random.PRNGKey(0)})
  assert np.abs(np.asarray(train) - np.asarray(plain)).max() > 1e-2


def test_packed_segments_equal_separate_examples(hf_t5_dir):
  """Two examples packed in one row give the logits of each run alone."""
  cfg, params = hf.load_hf_checkpoint(hf_t5_dir)
  model = t5.T5(cfg)
  a_in, b_in = [5, 6, 7, 8, 1], [9, 10, 1]
  a_out, b_out = [0, 11, 12, 13], [0, 14, 15]
  packed = forward(
      model, params,
      np.array([a_in + b_in + [0]]), np.array([a_out + b_out + [0]]),
      encoder_segment_ids=np.array([[1] * 5 + [2] * 3 + [0]]),
      encoder_positions=np.array([list(range(5)) + list(range(3)) + [0]]),
      decoder_segment_ids=np.array([[1] * 4 + [2] * 3 + [0]]),
      decoder_positions=np.array([list(range(4)) + list(range(3)) + [0]]))
  alone_a = forward(model, params, np.array([a_in]), np.array([a_out]))
  alone_b = forward(model, params, np.array([b_in]), np.array([b_out]))
  np.testing.assert_allclose(packed[0, :4], alone_a[0], atol=1e-4)
  np.testing.assert_allclose(packed[0, 4:7], alone_b[0], atol=1e-4)
