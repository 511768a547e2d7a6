"""Training and inference speed of HyperT5-Prefix and HyperT5-LoRA, as JSON lines.

  python -m hypert5.bench --preset=tiny|small|large|xl [--kind=prefix|lora|both|none]
      [--steps=N] [--compare_hf] [--gemm_floor]

Imports only JAX, Flax, Optax, NumPy and TensorFlow-free hypert5 modules, so it
runs on an accelerator image without TensorFlow, SeqIO or ml_collections.
Batches are random tokens with no padding (every position is counted).

Training step: the hypermodel (a T5 backbone of the downstream model's size,
trainable, Adafactor, donated with its optimizer state) writes phi from
`hyper_len` tokens; the frozen downstream T5 (a separate, non-donated
argument) reads `inputs_len` tokens with phi and is scored on `targets_len`
targets. Gradients are taken with respect to the hypermodel only.

Model FLOPs (what MFU counts; matmuls only, no recomputation from remat):
  per token and layer, d = d_model, H = heads x d_kv, f = d_ff:
    projection q, k, v or o: 2 d H        feed-forward: 3 x 2 d f (gated-GELU)
    attention scores + values: 2 x 2 H x (keys attended; prefix included)
  encoder layer, s tokens:  s (4 x 2dH + 2 x 2H (s + P) + 6df)
  decoder layer, t tokens:  t (4 x 2dH + 2 x 2H (t + P))   self-attention
                          + t (2 x 2dH + 2 x 2H s) + s (2 x 2dH)   cross-attention
                          + t 6df
  LM head: t x 2 d V (downstream only). LoRA adds 2 r (d_in + d_out) per token
  and target. Attention is counted as computed, dense (no causal halving).
  The hypermodel's decoder reads n learned tokens (2P for prefix, 2 per
  attention module for LoRA) without a causal mask; its MLP heads add
  n x (2 d h + 2 h out). Not counted: the relative-position one-hot matmul
  (once per stack), norms, softmax, embeddings' gathers.
  train FLOPs per step = batch x (3 x F_hyper + 2 x F_down): the hypermodel
  runs forward and backward (weights and activations), the frozen downstream
  forward and backward to its activations only (no weight gradients).
MFU = train FLOPs per step / step time / peak, the peak being the device's
dense bf16 peak from `PEAK_TFLOPS` (a measured matmul peak where the device is
unknown, e.g. CPU). The measured matmul peak (best time of a large jnp.dot in
the compute dtype) is printed beside it in every case.

Inference (rank-classification scoring, per query): with a cached phi, the
downstream T5 alone reads the query (phi made once per task, batch 1,
broadcast over the queries); against 16-shot concatenation, where the plain
downstream T5 reads the same few-shot text the hypermodel reads
(`hyper_len` tokens, 16 examples) followed by the query. Both score
`targets_len` target tokens with teacher forcing.

--compare_hf (small preset, CPU): HuggingFace PyTorch T5ForConditionalGeneration
against our plain downstream T5, same shapes and random init, full training
step (forward, backward, AdamW) and eval forward, in tokens (inputs + targets)
per second.

--gemm_floor (small preset, CPU): the matmul floor of that plain T5 step. Every
dot_general in the traced training step (and in the eval forward) is timed
alone, as a [batch, m, k] x [batch, k, n] matmul in each of three operand
layouts (neither, lhs or rhs stored transposed), the fastest layout kept, with
XLA and, where installed, with PyTorch. Their sum is the least time any
implementation calling those kernels could take for the step: a throughput
target above `max_tokens_per_s` cannot be met on this machine with them.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import math
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags
from jax.extend import core as jax_core

from hypert5 import hypermodel, t5
from hypert5 import peft as peft_lib
from hypert5.decoding import log_likelihood, token_log_probs
from hypert5.t5_config import T5Config, get_size

# Dense bf16 peak TFLOP/s by a substring of jax.Device.device_kind (first match wins).
PEAK_TFLOPS = (
    ("H200", 989.0),
    ("H100", 989.0),  # SXM; the PCIe card is lower
    ("A100", 312.0),
    ("v5p", 459.0),
    ("v5 lite", 197.0),
    ("v5e", 197.0),
    ("v4", 275.0),
)


@dataclasses.dataclass(frozen=True)
class Preset:
  """Shapes and numerics of one benchmark."""
  size: str
  batch: int
  hyper_len: int  # few-shot tokens the hypermodel reads (16 examples)
  inputs_len: int
  targets_len: int
  dtype: str
  prefix_length: int
  lora_rank: int
  steps: int
  remat_policy: str = "none"
  attention_impl: str | None = None
  # Scanned layers compile in O(1) time in depth (what XL/XXL need); unrolled
  # layers run faster where compile time does not matter (small on CPU: 20%).
  scan_layers: bool = True


PRESETS = {
    # Runs on CPU in seconds; the test suite's smoke test.
    "tiny": Preset("tiny", 4, 128, 32, 16, "float32", 4, 4, steps=3),
    "small": Preset("small", 8, 512, 256, 64, "float32", 32, 32, steps=3, scan_layers=False),
    # Keep the weight matmuls' outputs, recompute attention: should cuDNN
    # attention fall back to XLA's, 16 heads x 1024^2 scores per layer and
    # example would not fit at batch 32. XLA's CPU plan of this step: 67 GiB.
    "large": Preset("large", 32, 1024, 256, 128, "bfloat16", 32, 32, steps=10,
                    remat_policy="dots_no_batch", attention_impl="cudnn"),
    # Keep only each layer's input: the weight matmuls' outputs alone would be
    # ~90 GiB here, beside ~40 GiB of params, grads and state. CPU plan: 65 GiB.
    "xl": Preset("xl", 32, 1024, 256, 128, "bfloat16", 32, 32, steps=10,
                 remat_policy="full", attention_impl="cudnn"),
}
SHOTS = 16


def model_config(preset: Preset, attention_impl: str | None) -> T5Config:
  """Dropout off: its masks are not matmul work, and it would disable fused attention."""
  return get_size(preset.size, dtype=preset.dtype, scan_layers=preset.scan_layers,
                  dropout_rate=0.0,
                  remat_policy=preset.remat_policy, attention_impl=attention_impl)


def peft_config(kind: str, preset: Preset) -> peft_lib.PeftConfig:
  return peft_lib.PeftConfig(kind=kind, prefix_length=preset.prefix_length,
                             lora_rank=preset.lora_rank, lora_alpha=float(preset.lora_rank))


# ---------------------------------------------------------------------------
# FLOPs (see the module docstring).


def _lora_flops(peft: peft_lib.PeftConfig | None, cfg: T5Config, tokens: dict) -> int:
  """tokens: {target: tokens the target projection sees} for one attention module."""
  if peft is None or peft.kind != "lora":
    return 0
  return sum(2 * peft.lora_rank * sum(peft_lib.lora_dims(t, cfg)) * tokens[t]
             for t in peft.lora_targets)


def encoder_flops(cfg: T5Config, s: int, peft=None) -> int:
  """Forward matmul FLOPs of the encoder over one example of s tokens."""
  d, h, prefix = cfg.d_model, cfg.joined_kv, peft.self_prefix_length if peft else 0
  ffn = (3 if cfg.feed_forward_proj == "gated-gelu" else 2) * 2 * d * cfg.d_ff
  layer = s * (4 * 2 * d * h + 2 * 2 * h * (s + prefix) + ffn)
  layer += _lora_flops(peft, cfg, dict.fromkeys("qkvo", s))
  return cfg.num_encoder_layers * layer


def decoder_flops(cfg: T5Config, t: int, s: int, peft=None, lm_head: bool = True) -> int:
  """Forward matmul FLOPs of the decoder: t decoder tokens against s encoder tokens."""
  d, h = cfg.d_model, cfg.joined_kv
  prefix = peft.self_prefix_length if peft else 0
  cross_prefix = peft.cross_prefix_length if peft else 0
  ffn = (3 if cfg.feed_forward_proj == "gated-gelu" else 2) * 2 * d * cfg.d_ff
  self_attention = t * (4 * 2 * d * h + 2 * 2 * h * (t + prefix))
  cross_attention = t * (2 * 2 * d * h + 2 * 2 * h * (s + cross_prefix)) + s * 2 * 2 * d * h
  layer = self_attention + cross_attention + t * ffn
  layer += _lora_flops(peft, cfg, dict.fromkeys("qkvo", t))
  layer += _lora_flops(peft, cfg, {"q": t, "o": t, "k": s, "v": s})
  return cfg.num_decoder_layers * layer + (t * 2 * d * cfg.vocab_size if lm_head else 0)


def downstream_flops(cfg: T5Config, s: int, t: int, peft=None) -> int:
  return encoder_flops(cfg, s, peft) + decoder_flops(cfg, t, s, peft)


def hyper_flops(hyper_cfg: T5Config, down: T5Config, peft: peft_lib.PeftConfig, s: int,
                head_hidden: int = 0) -> int:
  """Forward matmul FLOPs of the hypermodel for one example of s few-shot tokens."""
  n = hypermodel.num_decoder_tokens(peft, down)
  d, hidden = hyper_cfg.d_model, head_hidden or hyper_cfg.d_model
  flops = encoder_flops(hyper_cfg, s) + decoder_flops(hyper_cfg, n, s, lm_head=False)
  if peft.kind == "prefix":
    out = down.num_encoder_layers * 2 * down.joined_kv
    return flops + n * (2 * d * hidden + 2 * hidden * out)
  rank = peft.lora_rank
  d_in = sum(peft_lib.lora_dims(t, down)[0] for t in peft.lora_targets)
  d_out = sum(peft_lib.lora_dims(t, down)[1] for t in peft.lora_targets)
  per_factor = n // 2  # one A token and one B token per attention module
  return flops + per_factor * (2 * (2 * d * hidden) + 2 * hidden * rank * (d_in + d_out))


def train_flops(cfg: T5Config, peft: peft_lib.PeftConfig, preset: Preset) -> int:
  """Model FLOPs of one HyperT5 training step (batch included)."""
  return preset.batch * (3 * hyper_flops(cfg, cfg, peft, preset.hyper_len)
                         + 2 * downstream_flops(cfg, preset.inputs_len, preset.targets_len,
                                                peft))


# ---------------------------------------------------------------------------
# Device facts.


def table_peak(device) -> float | None:
  """Dense bf16 TFLOP/s of a known accelerator, else None."""
  if device.platform == "cpu":
    return None
  for name, peak in PEAK_TFLOPS:
    if name.lower() in device.device_kind.lower():
      return peak
  return None


def _fastest_seconds(fn, repeats: int) -> float:
  """Best wall time of `fn` over `repeats` calls, after one untimed call (compilation)."""
  fn()
  best = float("inf")
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    best = min(best, time.perf_counter() - start)
  return best


def measured_matmul_tflops(dtype, size: int, repeats: int = 10) -> float:
  """Best throughput of a [size, size] @ [size, size] jnp.dot in `dtype`."""
  a = jax.random.normal(jax.random.PRNGKey(0), (size, size), dtype)
  b = jax.random.normal(jax.random.PRNGKey(1), (size, size), dtype)
  dot = jax.jit(jnp.dot)
  best = _fastest_seconds(lambda: dot(a, b).block_until_ready(), repeats)
  return 2 * size ** 3 / best / 1e12


def peak_memory_bytes(device) -> int | None:
  """Peak bytes in use since the process started (None where the backend has no stats)."""
  stats = device.memory_stats()
  return int(stats["peak_bytes_in_use"]) if stats and "peak_bytes_in_use" in stats else None


def _timed(fn, steps: int) -> tuple[float, float]:
  """(first call's seconds, including compilation; median of `steps` later calls)."""
  start = time.perf_counter()
  jax.block_until_ready(fn())
  first = time.perf_counter() - start
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return first, statistics.median(times)


def synthetic_batch(preset: Preset, vocab_size: int, seed: int = 0) -> dict:
  """Random tokens, no padding: {name: [batch, length] int32}."""
  rng = np.random.default_rng(seed)

  def tokens(length, batch=preset.batch):
    return jnp.asarray(rng.integers(2, vocab_size, (batch, length), dtype=np.int32))

  targets = tokens(preset.targets_len)
  return {"hyper": tokens(preset.hyper_len), "inputs": tokens(preset.inputs_len),
          "targets": targets,
          "decoder_inputs": jnp.concatenate(
              [jnp.zeros((preset.batch, 1), jnp.int32), targets[:, :-1]], axis=1)}


# ---------------------------------------------------------------------------
# HyperT5: the training step and inference.


def make_hyper_train_step(hyper: hypermodel.HyperT5, downstream: t5.T5,
                          optimizer: optax.GradientTransformation):
  """(hyper_params, opt_state, downstream_params, batch) -> (hyper_params, opt_state, loss).

  The state is donated; the frozen downstream parameters are not, and get no gradient.
  """

  def loss_fn(hyper_params, downstream_params, batch):
    phi = hyper.apply({"params": hyper_params}, batch["hyper"], deterministic=False)
    logits = downstream.apply({"params": downstream_params}, batch["inputs"],
                              batch["decoder_inputs"], phi=phi, deterministic=False)
    return -jnp.mean(token_log_probs(logits, batch["targets"]))  # [b, t, vocab] -> scalar

  def step(hyper_params, opt_state, downstream_params, batch):
    loss, grads = jax.value_and_grad(loss_fn)(hyper_params, downstream_params, batch)
    updates, opt_state = optimizer.update(grads, opt_state, hyper_params)
    return optax.apply_updates(hyper_params, updates), opt_state, loss

  return jax.jit(step, donate_argnums=(0, 1))


def bench_kind(kind: str, preset: Preset, steps: int, attention_impl: str | None,
               peak: dict) -> list[dict]:
  """Training and inference lines for HyperT5-`kind`."""
  device = jax.devices()[0]
  cfg = model_config(preset, attention_impl)
  peft = peft_config(kind, preset)
  downstream = t5.T5(cfg, peft)
  hyper = hypermodel.HyperT5(cfg, cfg, peft)
  downstream_params = t5.init_params(cfg, jax.random.PRNGKey(1))
  hyper_params = hypermodel.init_params(hyper, jax.random.PRNGKey(2))
  optimizer = optax.adafactor(1e-3)
  opt_state = jax.jit(optimizer.init)(hyper_params)
  batch = synthetic_batch(preset, cfg.vocab_size)
  step = make_hyper_train_step(hyper, downstream, optimizer)

  state = [hyper_params, opt_state]

  def run_step():
    state[0], state[1], loss = step(state[0], state[1], downstream_params, batch)
    return loss

  compile_s, step_s = _timed(run_step, steps)
  loss = float(run_step())
  flops = train_flops(cfg, peft, preset)
  tokens = preset.batch * (preset.hyper_len + preset.inputs_len + preset.targets_len)
  achieved = flops / step_s / 1e12
  lines = [{
      "bench": "train", "preset": preset_name(preset), "kind": kind,
      "device": device.device_kind, "dtype": cfg.dtype, "batch": preset.batch,
      "lengths": [preset.hyper_len, preset.inputs_len, preset.targets_len],
      "attention_impl": cfg.attention_impl or "xla", "remat_policy": cfg.remat_policy,
      "hyper_params": t5.count_params(state[0]), "downstream_params":
          t5.count_params(downstream_params), "loss": loss,
      "first_step_s": compile_s, "step_s": step_s, "tokens_per_s": tokens / step_s,
      "model_tflop_per_step": flops / 1e12, "achieved_tflops": achieved,
      "peak_tflops": peak["peak_tflops"], "peak_source": peak["peak_source"],
      "mfu": achieved / peak["peak_tflops"],
      "measured_matmul_tflops": peak["measured_matmul_tflops"],
      "mfu_vs_measured_matmul": achieved / peak["measured_matmul_tflops"],
      "peak_memory_bytes": peak_memory_bytes(device),
  }]
  hyper_params = state[0]  # the originals were donated to the first step
  del state, opt_state

  # Inference: phi once per task, then the downstream model alone per query.
  task_tokens = batch["hyper"][:1]  # [1, hyper_len]: one task's few-shot text
  make_phi = jax.jit(lambda p, x: hyper.apply({"params": p}, x))
  _, phi_s = _timed(lambda: make_phi(hyper_params, task_tokens), steps)
  phi = make_phi(hyper_params, task_tokens)  # [1, ...]: broadcast over the queries
  weights = jnp.ones_like(batch["targets"], jnp.float32)
  _, cached_s = _timed(lambda: log_likelihood(downstream, downstream_params, batch["inputs"],
                                              batch["targets"], weights, phi), steps)
  plain = t5.T5(cfg)
  few_shot = jnp.concatenate([jnp.broadcast_to(task_tokens, (preset.batch, preset.hyper_len)),
                              batch["inputs"]], axis=1)  # [b, hyper_len + inputs_len]
  _, concat_s = _timed(lambda: log_likelihood(plain, downstream_params, few_shot,
                                              batch["targets"], weights), steps)
  lines.append({
      "bench": "inference", "preset": preset_name(preset), "kind": kind,
      "device": device.device_kind, "queries_per_batch": preset.batch, "shots": SHOTS,
      "cached_phi_encoder_len": preset.inputs_len,
      "concat_encoder_len": preset.hyper_len + preset.inputs_len,
      "phi_ms_per_task": phi_s * 1e3,
      "cached_phi_ms_per_query": cached_s / preset.batch * 1e3,
      "concat_ms_per_query": concat_s / preset.batch * 1e3,
      "speedup_cached_phi": concat_s / cached_s,
      "peak_memory_bytes": peak_memory_bytes(device),
  })
  return lines


def preset_name(preset: Preset) -> str:
  return next(name for name, p in PRESETS.items() if p == preset)


def device_peak(preset: Preset) -> dict:
  """The peak MFU divides by, and a measured matmul peak."""
  device = jax.devices()[0]
  dtype = jnp.dtype(preset.dtype)
  size = 1024 if device.platform == "cpu" else 8192
  measured = measured_matmul_tflops(dtype, size)
  table = table_peak(device)
  return {"bench": "peak", "device": device.device_kind, "platform": device.platform,
          "devices": jax.device_count(), "matmul_size": size, "dtype": preset.dtype,
          "measured_matmul_tflops": measured,
          "peak_tflops": table if table is not None else measured,
          "peak_source": "table (dense bf16)" if table is not None else "measured matmul"}


# ---------------------------------------------------------------------------
# Plain T5 against HuggingFace PyTorch (--compare_hf).


def plain_t5_functions(cfg: T5Config):
  """(loss_fn, forward) of the plain T5 that --compare_hf and --gemm_floor time.

  loss_fn(params, batch) -> mean target NLL (training mode);
  forward(params, batch) -> [b, t, vocab] logits (eval mode).
  """
  model = t5.T5(cfg)

  def loss_fn(params, batch):
    logits = model.apply({"params": params}, batch["inputs"], batch["decoder_inputs"],
                         deterministic=False)  # [b, t, vocab]
    return -jnp.mean(token_log_probs(logits, batch["targets"]))

  def forward(params, batch):
    return model.apply({"params": params}, batch["inputs"], batch["decoder_inputs"])

  return loss_fn, forward


def bench_plain_t5(preset: Preset, steps: int) -> dict:
  """Our downstream T5 alone: full training step (AdamW) and eval forward."""
  cfg = model_config(preset, None)
  params = t5.init_params(cfg, jax.random.PRNGKey(1))
  optimizer = optax.adamw(1e-4)
  opt_state = jax.jit(optimizer.init)(params)
  batch = synthetic_batch(preset, cfg.vocab_size)
  loss_fn, forward = plain_t5_functions(cfg)
  forward = jax.jit(forward)

  def step(params, opt_state, batch):
    loss, grads = jax.value_and_grad(loss_fn)(params, batch)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  step = jax.jit(step, donate_argnums=(0, 1))
  state = [params, opt_state]

  def run_step():
    state[0], state[1], loss = step(state[0], state[1], batch)
    return loss

  _, train_s = _timed(run_step, steps)
  _, forward_s = _timed(lambda: forward(state[0], batch), steps)
  return {"train_step_s": train_s, "forward_s": forward_s}


def bench_hf_t5(preset: Preset, steps: int) -> dict:
  """HuggingFace PyTorch T5ForConditionalGeneration, randomly initialized, same shapes."""
  import torch  # pylint: disable=import-outside-toplevel
  import transformers  # pylint: disable=import-outside-toplevel
  cfg = model_config(preset, None)
  hf_config = transformers.T5Config(
      vocab_size=cfg.vocab_size, d_model=cfg.d_model, d_kv=cfg.d_kv, d_ff=cfg.d_ff,
      num_heads=cfg.num_heads, num_layers=cfg.num_encoder_layers,
      num_decoder_layers=cfg.num_decoder_layers,
      relative_attention_num_buckets=cfg.relative_attention_num_buckets,
      relative_attention_max_distance=cfg.relative_attention_max_distance,
      feed_forward_proj=cfg.feed_forward_proj, tie_word_embeddings=False,
      dropout_rate=cfg.dropout_rate, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
  torch.manual_seed(0)
  model = transformers.T5ForConditionalGeneration(hf_config)
  optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
  batch = {k: torch.from_numpy(np.array(v)).long()
           for k, v in synthetic_batch(preset, cfg.vocab_size).items()}

  def train_step():
    model.train()
    loss = model(input_ids=batch["inputs"], decoder_input_ids=batch["decoder_inputs"],
                 labels=batch["targets"]).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item()

  def forward():
    model.eval()
    with torch.no_grad():
      return model(input_ids=batch["inputs"], decoder_input_ids=batch["decoder_inputs"]).logits

  _, train_s = _timed(train_step, steps)
  _, forward_s = _timed(forward, steps)
  return {"train_step_s": train_s, "forward_s": forward_s, "torch": torch.__version__,
          "transformers": transformers.__version__, "torch_threads": torch.get_num_threads()}


def compare_hf(preset: Preset, steps: int) -> list[dict]:
  tokens = preset.batch * (preset.inputs_len + preset.targets_len)
  lines = []
  results = {"hypert5-jax": bench_plain_t5(preset, steps), "hf-torch": bench_hf_t5(preset, steps)}
  for impl, r in results.items():
    lines.append({"bench": "compare_hf", "impl": impl, "preset": preset_name(preset),
                  "device": jax.devices()[0].device_kind, "batch": preset.batch,
                  "lengths": [preset.inputs_len, preset.targets_len], **r,
                  "train_tokens_per_s": tokens / r["train_step_s"],
                  "forward_tokens_per_s": tokens / r["forward_s"]})
  ours, hf = results["hypert5-jax"], results["hf-torch"]
  lines.append({"bench": "compare_hf_ratio", "preset": preset_name(preset),
                "train_speedup_vs_hf": hf["train_step_s"] / ours["train_step_s"],
                "forward_speedup_vs_hf": hf["forward_s"] / ours["forward_s"]})
  return lines


# ---------------------------------------------------------------------------
# The matmul floor of the plain T5 step (--gemm_floor).

GEMM_LAYOUTS = ("nn", "nt", "tn")  # stored transposed: neither operand, rhs, lhs


def dot_shapes(jaxpr) -> list[tuple[int, int, int, int]]:
  """(batch, m, k, n) of every dot_general a jaxpr runs, nested jaxprs included.

  A dot inside a scan body is listed once per iteration.
  """
  shapes = []
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "dot_general":
      (lhs_contract, _), (lhs_batch, _) = eqn.params["dimension_numbers"]
      lhs, rhs = (v.aval.shape for v in eqn.invars)
      b = math.prod(lhs[i] for i in lhs_batch)
      k = math.prod(lhs[i] for i in lhs_contract)
      shapes.append((b, math.prod(lhs) // (b * k), k, math.prod(rhs) // (b * k)))
    repeats = eqn.params["length"] if eqn.primitive.name == "scan" else 1
    for sub in jax_core.jaxprs_in_params(eqn.params):
      shapes += dot_shapes(sub) * repeats
  return shapes


def _gemm_operand_shapes(b: int, m: int, k: int, n: int, layout: str):
  """Stored shapes of lhs and rhs; a batch of 1 is dropped (a plain matrix product)."""
  lhs = (k, m) if layout == "tn" else (m, k)
  rhs = (n, k) if layout == "nt" else (k, n)
  return ((b,) + lhs, (b,) + rhs) if b > 1 else (lhs, rhs)


def _xla_gemm(b: int, m: int, k: int, n: int, layout: str):
  lhs_shape, rhs_shape = _gemm_operand_shapes(b, m, k, n, layout)
  lhs = jax.random.normal(jax.random.PRNGKey(0), lhs_shape, jnp.float32)
  rhs = jax.random.normal(jax.random.PRNGKey(1), rhs_shape, jnp.float32)
  first = int(b > 1)  # the index of the first non-batch dim
  contract = ((first if layout == "tn" else first + 1,), (first + 1 if layout == "nt" else first,))
  batch_dims = ((0,), (0,)) if b > 1 else ((), ())
  dot = jax.jit(lambda x, y: jax.lax.dot_general(x, y, (contract, batch_dims)))
  return lambda: dot(lhs, rhs).block_until_ready()


def _torch_gemm(b: int, m: int, k: int, n: int, layout: str):
  import torch  # pylint: disable=import-outside-toplevel
  lhs_shape, rhs_shape = _gemm_operand_shapes(b, m, k, n, layout)
  lhs, rhs = torch.randn(lhs_shape), torch.randn(rhs_shape)
  lhs = lhs.transpose(-1, -2) if layout == "tn" else lhs  # views: BLAS reads them transposed
  rhs = rhs.transpose(-1, -2) if layout == "nt" else rhs
  return lambda: torch.matmul(lhs, rhs)


def gemm_floor(preset: Preset, repeats: int = 5) -> list[dict]:
  """Summed best times of the plain T5 step's matmuls, per library (see the docstring)."""
  cfg = model_config(preset, None)
  loss_fn, forward = plain_t5_functions(cfg)
  params = t5.param_shapes(cfg)
  batch = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype),
                       synthetic_batch(preset, cfg.vocab_size))
  passes = {"train": dot_shapes(jax.make_jaxpr(jax.value_and_grad(loss_fn))(params, batch).jaxpr),
            "forward": dot_shapes(jax.make_jaxpr(forward)(params, batch).jaxpr)}
  libraries = {"xla": _xla_gemm}
  try:
    import torch  # pylint: disable=import-outside-toplevel,unused-import
    libraries["torch"] = _torch_gemm
  except ImportError:
    pass
  tokens = preset.batch * (preset.inputs_len + preset.targets_len)
  lines = []
  for library, make_gemm in libraries.items():
    seconds = {shape: min(_fastest_seconds(make_gemm(*shape, layout), repeats)
                          for layout in GEMM_LAYOUTS)
               for shape in set(passes["train"]) | set(passes["forward"])}
    for name, shapes in passes.items():
      counts = collections.Counter(shapes)
      floor_s = sum(count * seconds[shape] for shape, count in counts.items())
      flop = sum(2 * count * math.prod(shape) for shape, count in counts.items())
      lines.append({"bench": "gemm_floor", "impl": library, "preset": preset_name(preset),
                    "pass": name, "dots": len(shapes), "distinct_shapes": len(counts),
                    "gflop": flop / 1e9, "floor_s": floor_s, "gflop_per_s": flop / floor_s / 1e9,
                    "max_tokens_per_s": tokens / floor_s})
  return lines


# ---------------------------------------------------------------------------
# Command line.


def define_flags() -> None:
  flags.DEFINE_enum("preset", "tiny", list(PRESETS), "Shapes and numerics.")
  flags.DEFINE_enum("kind", "both", ["prefix", "lora", "both", "none"],
                    "Which HyperT5 (none: only the plain-T5 lines of --compare_hf, --gemm_floor).")
  flags.DEFINE_integer("steps", None, "Timed steps after the first (default: the preset's).")
  flags.DEFINE_string("attention_impl", "auto",
                      "auto (the preset's on GPU, falling back to XLA; XLA elsewhere), xla or "
                      "cudnn.")
  flags.DEFINE_bool("compare_hf", False, "Also time HuggingFace PyTorch T5 against our plain "
                    "T5 (meant for --preset=small on CPU).")
  flags.DEFINE_bool("gemm_floor", False, "Also time the plain T5 step's matmuls alone, with XLA "
                    "and PyTorch (meant for --preset=small on CPU).")


def emit(line: dict) -> dict:
  print(json.dumps(line), flush=True)
  return line


def run(preset_name_: str, kind: str = "both", steps: int | None = None,
        attention_impl: str = "auto", with_hf: bool = False,
        with_gemm_floor: bool = False) -> list[dict]:
  """Runs the benchmark, printing and returning its JSON lines."""
  preset = PRESETS[preset_name_]
  steps = steps or preset.steps
  platform = jax.devices()[0].platform
  if attention_impl == "auto":
    impl = preset.attention_impl if platform == "gpu" else None
  else:
    impl = None if attention_impl == "xla" else attention_impl
  peak = device_peak(preset)
  lines = [peak]
  emit(peak)
  kinds = {"both": ("prefix", "lora"), "none": ()}.get(kind, (kind,))
  for k in kinds:
    try:
      new = bench_kind(k, preset, steps, impl, peak)
    except Exception as e:  # pylint: disable=broad-except
      if impl is None or attention_impl != "auto":
        raise
      print(f"{k}: attention_impl={impl} failed ({type(e).__name__}: {str(e)[:300]}); "
            "retrying with XLA attention", file=sys.stderr)
      new = bench_kind(k, preset, steps, None, peak)
    lines += [emit(line) for line in new]
  if with_hf:
    lines += [emit(line) for line in compare_hf(preset, steps)]
  if with_gemm_floor:
    lines += [emit(line) for line in gemm_floor(preset)]
  return lines


def main(argv):
  del argv
  FLAGS = flags.FLAGS  # pylint: disable=invalid-name
  run(FLAGS.preset, FLAGS.kind, FLAGS.steps, FLAGS.attention_impl, FLAGS.compare_hf,
      FLAGS.gemm_floor)


if __name__ == "__main__":
  define_flags()
  app.run(main)
