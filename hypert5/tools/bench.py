"""Training and inference speed of the train step `hypert5.train` runs, as JSON lines.

  python -m hypert5.bench --preset=tiny|small|large|xl [--kind=prefix|lora|both|none]
      [--steps=N] [--mesh_shape=4,2 --mesh_axes=data,model] [--compare_hf] [--gemm_floor]
  python -m hypert5.bench --config=configs/NAME.py[:ARG] [--config.KEY=VALUE ...]

The step timed is `training.trainer_setup.setup_train(config).step`, the one
`hypert5.train` builds and runs for the same config: its mesh and shardings,
gradient clipping, accumulation, optimizer and remat policy. A preset is the
config `configs/bench.py:PRESET,KIND` (the shapes and numerics are listed
there); `--config` times any experiment config's step instead. Batches are
synthetic, at the config's shapes, random tokens with no padding (every
position is counted), so no data is needed. Each `train` line carries the
`hypert5.train` command that runs the step it timed.

Imports neither TensorFlow nor SeqIO (nor torch, unless --compare_hf or
--gemm_floor asks for PyTorch), so it runs on an accelerator image without them.

HyperT5 (kinds prefix, lora): the hypermodel (a T5 backbone of the downstream
model's size, trainable) writes phi from `hyper_inputs_length` tokens; the
frozen downstream T5 (a separate, non-donated argument of the step) reads
`inputs_length` tokens with phi and is scored on `targets_length` targets.
Gradients are taken with respect to the trainable parts only.

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
  train FLOPs per step = batch x (3 x F_hyper + 2 x F_down) for HyperT5: the
  hypermodel runs forward and backward (weights and activations), the frozen
  downstream forward and backward to its activations only (no weight
  gradients); a trained downstream model (kind t5, HyperT5+) counts 3 x F_down.
MFU = train FLOPs per step / step time / peak, the peak being the device's
dense bf16 peak from `PEAK_TFLOPS` (a measured matmul peak where the device is
unknown, e.g. CPU). The measured matmul peak (best time of a large jnp.dot in
the compute dtype) is printed beside it in every case.

Inference (rank-classification scoring, per query): with a cached phi, the
downstream T5 alone reads the query (phi made once per task, batch 1,
broadcast over the queries); against 16-shot concatenation, where the plain
downstream T5 reads the same few-shot text the hypermodel reads
(`hyper_inputs_length` tokens, 16 examples) followed by the query. Both score
`targets_length` target tokens with teacher forcing.

--compare_hf (small preset, CPU): HuggingFace PyTorch T5ForConditionalGeneration
against our plain downstream T5 (the train step of `configs/bench.py:PRESET,t5`:
full fine-tuning, AdamW), same shapes and random init, training step (forward,
backward, AdamW) and eval forward, in tokens (inputs + targets) per second.

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
import importlib.util
import json
import math
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags
from jax.extend import core as jax_core
from ml_collections import config_flags

from hypert5 import cli, experiment
from hypert5.errors import BenchError
from hypert5.model import hypermodel, partitioning, t5
from hypert5.model import peft as peft_lib
from hypert5.model.decoding import log_likelihood
from hypert5.model.t5_config import T5Config
from hypert5.training import trainer_setup

FLAGS = flags.FLAGS

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
SHOTS = 16


# ---------------------------------------------------------------------------
# Presets: configs of configs/bench.py.


def presets() -> dict:
  """{name: shapes} of configs/bench.py (its PRESETS table)."""
  return cli.load_config_module(cli.repository_config("bench.py")).PRESETS


def preset_config(name: str, kind: str):
  """configs/bench.py:NAME,KIND, as `hypert5.train --config=...` loads it."""
  known = presets()
  if name not in known:
    raise BenchError(f"--preset={name}: no such preset; pass one of {', '.join(known)} "
                     f"(defined in configs/bench.py), or --config=FILE for any experiment")
  try:
    return cli.load_config(cli.repository_config("bench.py"), f"{name},{kind}")
  except ValueError as e:
    raise BenchError(str(e)) from e


def timed_steps(name: str) -> int:
  return presets()[name]["timed_steps"]


def with_overrides(config, overrides: dict):
  """A copy of `config` with {dotted key: value} set (each must exist)."""
  config = config.copy_and_resolve_references()
  for key, value in overrides.items():
    *path, leaf = key.split(".")
    node = config
    for part in path:
      node = node[part]
    if leaf not in node:
      raise BenchError(f"config has no key {key!r}")
    node[leaf] = value
  return config


def train_command(source: str, overrides: dict) -> str:
  """The `hypert5.train` command that runs the step of `source` with `overrides`."""
  def flag(value):
    if isinstance(value, (tuple, list)):
      return "(" + ",".join(repr(v) if isinstance(v, str) else str(v) for v in value) + ",)"
    return str(value)
  extra = "".join(f" --config.{k}={flag(v)}" for k, v in overrides.items())
  return f"python -m hypert5.train --config={source} --workdir=WORKDIR{extra}"


def build(config) -> trainer_setup.TrainSetup:
  """train's set-up of `config`; a mesh or config that cannot run is a BenchError."""
  try:
    return trainer_setup.setup_train(config)
  except partitioning.MeshError as e:
    raise BenchError(f"{e} (the bench's mesh: --mesh_shape and --mesh_axes; default: the "
                     "config's)") from e
  except ValueError as e:  # a config value the models or the optimizer reject
    raise BenchError(str(e)) from e


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


def train_flops(config) -> int:
  """Model FLOPs of one training step of `config` (batch included; see the docstring)."""
  cfg, peft = experiment.t5_config(config), experiment.peft_config(config)
  trainable, phi_source = experiment.TRAINABLE[config.experiment]
  data = config.data
  down = downstream_flops(cfg, data.inputs_length, data.targets_length, peft)
  per_example = (3 if "downstream" in trainable else 2) * down
  if phi_source == "hyper":
    per_example += 3 * hyper_flops(cfg, cfg, peft, data.hyper_inputs_length,
                                   config.hyper.head_hidden)
  return config.batch_size * per_example


def token_count(config, models) -> int:
  """Tokens one step reads: hypermodel input (if any), inputs and targets."""
  data = config.data
  lengths = data.inputs_length + data.targets_length
  if models.hyper is not None:
    lengths += data.hyper_inputs_length
  return config.batch_size * lengths


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


# ---------------------------------------------------------------------------
# The train step (train's own) and inference.


def time_train_step(setup: trainer_setup.TrainSetup, steps: int):
  """Times `setup.step` from the state a fresh `hypert5.train` run starts from.

  Returns ({first_step_s, step_s, loss}, trainable params after the steps,
  frozen params, the batch).
  """
  trainable, opt_state, frozen = setup.initial_state()
  batch = setup.dense_batch()
  state = {"trainable": trainable, "opt_state": opt_state, "step": 0}
  del trainable, opt_state  # donated to the first step

  def run_step():
    with setup.activate():
      state["trainable"], state["opt_state"], metrics = setup.step(
          state["trainable"], state["opt_state"], jnp.int32(state["step"]), frozen, batch)
    state["step"] += 1
    return metrics["loss"]

  first_s, step_s = _timed(run_step, steps)
  loss = float(run_step())
  return {"first_step_s": first_s, "step_s": step_s, "loss": loss}, state["trainable"], \
      frozen, batch


def bench_train(setup, label: dict, steps: int, peak: dict):
  """The `train` line of one config; also returns (trainable, frozen, batch)."""
  device = jax.devices()[0]
  config, models = setup.config, setup.models
  timing, trainable, frozen, batch = time_train_step(setup, steps)
  flops = train_flops(config)
  achieved = flops / timing["step_s"] / 1e12
  cfg = models.downstream.config
  line = {
      "bench": "train", **label, "experiment": config.experiment,
      "device": device.device_kind, "devices": setup.mesh.size, "mesh": dict(setup.mesh.shape),
      "dtype": cfg.dtype, "batch": config.batch_size,
      "lengths": [config.data.hyper_inputs_length, config.data.inputs_length,
                  config.data.targets_length],
      "attention_impl": cfg.attention_impl or "xla", "remat_policy": cfg.remat_policy,
      "optimizer": config.optimizer.name, "grad_clip_norm": config.optimizer.grad_clip_norm,
      "grad_accum_steps": config.optimizer.grad_accum_steps,
      "trainable_params": t5.count_params(trainable), "frozen_params": t5.count_params(frozen),
      **timing, "tokens_per_s": token_count(config, models) / timing["step_s"],
      "model_tflop_per_step": flops / 1e12, "achieved_tflops": achieved,
      "peak_tflops": peak["peak_tflops"], "peak_source": peak["peak_source"],
      "mfu": achieved / peak["peak_tflops"],
      "measured_matmul_tflops": peak["measured_matmul_tflops"],
      "mfu_vs_measured_matmul": achieved / peak["measured_matmul_tflops"],
      "peak_memory_bytes": peak_memory_bytes(device),
  }
  return line, trainable, frozen, batch


def bench_inference(setup, label: dict, trainable: dict, frozen: dict, batch: dict,
                    steps: int) -> dict:
  """Cached phi against 16-shot concatenation, per query (HyperT5 configs)."""
  device = jax.devices()[0]
  config, models = setup.config, setup.models
  downstream_params = frozen["downstream"]
  queries = config.batch_size
  # Phi once per task, then the downstream model alone per query.
  task_tokens = batch["hyper_encoder_input_tokens"][:1]  # [1, hyper_len]: one task's text
  make_phi = jax.jit(lambda p, x: models.hyper.apply({"params": p}, x))
  _, phi_s = _timed(lambda: make_phi(trainable["hyper"], task_tokens), steps)
  phi = make_phi(trainable["hyper"], task_tokens)  # [1, ...]: broadcast over the queries
  inputs, targets = batch["encoder_input_tokens"], batch["decoder_target_tokens"]
  weights = jnp.ones_like(targets, jnp.float32)
  _, cached_s = _timed(lambda: log_likelihood(models.downstream, downstream_params, inputs,
                                              targets, weights, phi), steps)
  plain = t5.T5(models.downstream.config)
  few_shot = jnp.concatenate([jnp.broadcast_to(task_tokens, (queries, task_tokens.shape[1])),
                              inputs], axis=1)  # [b, hyper_len + inputs_len]
  _, concat_s = _timed(lambda: log_likelihood(plain, downstream_params, few_shot, targets,
                                              weights), steps)
  return {
      "bench": "inference", **label, "device": device.device_kind,
      "queries_per_batch": queries, "shots": SHOTS,
      "cached_phi_encoder_len": inputs.shape[1], "concat_encoder_len": few_shot.shape[1],
      "phi_ms_per_task": phi_s * 1e3,
      "cached_phi_ms_per_query": cached_s / queries * 1e3,
      "concat_ms_per_query": concat_s / queries * 1e3,
      "speedup_cached_phi": concat_s / cached_s,
      "peak_memory_bytes": peak_memory_bytes(device),
  }


def device_peak(dtype: str) -> dict:
  """The peak MFU divides by, and a measured matmul peak."""
  device = jax.devices()[0]
  size = 1024 if device.platform == "cpu" else 8192
  measured = measured_matmul_tflops(jnp.dtype(dtype), size)
  table = table_peak(device)
  return {"bench": "peak", "device": device.device_kind, "platform": device.platform,
          "devices": jax.device_count(), "matmul_size": size, "dtype": dtype,
          "measured_matmul_tflops": measured,
          "peak_tflops": table if table is not None else measured,
          "peak_source": "table (dense bf16)" if table is not None else "measured matmul"}


# ---------------------------------------------------------------------------
# Plain T5 against HuggingFace PyTorch (--compare_hf).


def plain_t5_forward(setup):
  """(params, batch) -> [b, t, vocab] logits of the downstream T5 in eval mode."""
  models = setup.models

  def forward(params, batch):
    return experiment.downstream_logits(models, {"downstream": params}, batch, None,
                                        deterministic=True)

  return forward


def bench_plain_t5(setup, steps: int) -> dict:
  """Our plain T5's train step (train's, AdamW) and eval forward."""
  timing, trainable, _, batch = time_train_step(setup, steps)
  forward = jax.jit(plain_t5_forward(setup))
  _, forward_s = _timed(lambda: forward(trainable["downstream"], batch), steps)
  return {"train_step_s": timing["step_s"], "forward_s": forward_s}


def bench_hf_t5(setup, steps: int) -> dict:
  """HuggingFace PyTorch T5ForConditionalGeneration, randomly initialized, same shapes."""
  import torch  # noqa: PLC0415  (torch only for --compare_hf)
  import transformers  # noqa: PLC0415  (torch only for --compare_hf)
  cfg: T5Config = setup.models.downstream.config
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
  opt = setup.config.optimizer
  optimizer = torch.optim.AdamW(model.parameters(), lr=opt.learning_rate, betas=(opt.b1, opt.b2),
                                eps=opt.eps, weight_decay=opt.weight_decay)
  batch = {k: torch.from_numpy(np.asarray(v)).long() for k, v in setup.dense_batch().items()
           if k != "decoder_loss_weights"}

  def train_step():
    model.train()
    loss = model(input_ids=batch["encoder_input_tokens"],
                 decoder_input_ids=batch["decoder_input_tokens"],
                 labels=batch["decoder_target_tokens"]).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return loss.item()

  def forward():
    model.eval()
    with torch.no_grad():
      return model(input_ids=batch["encoder_input_tokens"],
                   decoder_input_ids=batch["decoder_input_tokens"]).logits

  _, train_s = _timed(train_step, steps)
  _, forward_s = _timed(forward, steps)
  return {"train_step_s": train_s, "forward_s": forward_s, "torch": torch.__version__,
          "transformers": transformers.__version__, "torch_threads": torch.get_num_threads()}


def compare_hf(setup, label: dict, steps: int) -> list[dict]:
  """`setup`: a plain T5 config (configs/bench.py:PRESET,t5)."""
  config = setup.config
  tokens = token_count(config, setup.models)
  results = {"hypert5-jax": bench_plain_t5(setup, steps), "hf-torch": bench_hf_t5(setup, steps)}
  lines = []
  for impl, r in results.items():
    lines.append({"bench": "compare_hf", "impl": impl, **label,
                  "device": jax.devices()[0].device_kind, "batch": config.batch_size,
                  "lengths": [config.data.inputs_length, config.data.targets_length], **r,
                  "train_tokens_per_s": tokens / r["train_step_s"],
                  "forward_tokens_per_s": tokens / r["forward_s"]})
  ours, hf = results["hypert5-jax"], results["hf-torch"]
  lines.append({"bench": "compare_hf_ratio", **label,
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
  import torch  # noqa: PLC0415  (torch only for --compare_hf)
  lhs_shape, rhs_shape = _gemm_operand_shapes(b, m, k, n, layout)
  lhs, rhs = torch.randn(lhs_shape), torch.randn(rhs_shape)
  lhs = lhs.transpose(-1, -2) if layout == "tn" else lhs  # views: BLAS reads them transposed
  rhs = rhs.transpose(-1, -2) if layout == "nt" else rhs
  return lambda: torch.matmul(lhs, rhs)


def traced_dot_shapes(setup) -> dict:
  """{"train": dots of the plain T5 train step (train's), "forward": of its eval forward}."""
  args = setup.abstract_arguments()
  with setup.activate():
    train_jaxpr = jax.make_jaxpr(setup.step)(*args).jaxpr
  forward_jaxpr = jax.make_jaxpr(plain_t5_forward(setup))(setup.abstract["downstream"],
                                                          args[-1]).jaxpr
  return {"train": dot_shapes(train_jaxpr), "forward": dot_shapes(forward_jaxpr)}


def gemm_floor(setup, label: dict, repeats: int = 5) -> list[dict]:
  """Summed best times of the plain T5 step's matmuls, per library (see the docstring)."""
  passes = traced_dot_shapes(setup)
  libraries = {"xla": _xla_gemm}
  if importlib.util.find_spec("torch") is not None:
    libraries["torch"] = _torch_gemm
  tokens = token_count(setup.config, setup.models)
  lines = []
  for library, make_gemm in libraries.items():
    seconds = {shape: min(_fastest_seconds(make_gemm(*shape, layout), repeats)
                          for layout in GEMM_LAYOUTS)
               for shape in set(passes["train"]) | set(passes["forward"])}
    for name, shapes in passes.items():
      counts = collections.Counter(shapes)
      floor_s = sum(count * seconds[shape] for shape, count in counts.items())
      flop = sum(2 * count * math.prod(shape) for shape, count in counts.items())
      lines.append({"bench": "gemm_floor", "impl": library, **label,
                    "pass": name, "dots": len(shapes), "distinct_shapes": len(counts),
                    "gflop": flop / 1e9, "floor_s": floor_s, "gflop_per_s": flop / floor_s / 1e9,
                    "max_tokens_per_s": tokens / floor_s})
  return lines


# ---------------------------------------------------------------------------
# Command line.


def define_flags() -> None:
  flags.DEFINE_string("preset", "tiny", "A preset of configs/bench.py: tiny, small, large, xl.")
  config_flags.DEFINE_config_file("config", None, "Time this experiment config's train step "
                                  "instead of a preset's.", lock_config=True)
  flags.DEFINE_enum("kind", "both", ["prefix", "lora", "both", "none"],
                    "Which HyperT5 of the preset (none: only the plain-T5 lines of "
                    "--compare_hf, --gemm_floor).")
  flags.DEFINE_integer("steps", None, "Timed steps after the first (default: the preset's).")
  flags.DEFINE_list("mesh_shape", None, "Mesh sizes, e.g. 4,2 (default: the config's).")
  flags.DEFINE_list("mesh_axes", None, "Mesh axis names (default: data, or data,model for "
                    "two sizes).")
  flags.DEFINE_string("attention_impl", "auto",
                      "auto (the config's on GPU, falling back to XLA; XLA elsewhere), xla or "
                      "cudnn.")
  flags.DEFINE_bool("compare_hf", False, "Also time HuggingFace PyTorch T5 against our plain "
                    "T5 (meant for --preset=small on CPU).")
  flags.DEFINE_bool("gemm_floor", False, "Also time the plain T5 step's matmuls alone, with XLA "
                    "and PyTorch (meant for --preset=small on CPU).")


def emit(line: dict) -> dict:
  print(json.dumps(line), flush=True)
  return line


def mesh_overrides(mesh_shape, mesh_axes) -> dict:
  if not mesh_shape:
    if mesh_axes:
      raise BenchError("--mesh_axes needs --mesh_shape")
    return {}
  try:
    shape = tuple(int(s) for s in mesh_shape)
  except ValueError as e:
    raise BenchError(f"--mesh_shape={','.join(mesh_shape)}: expected integers, e.g. 4,2") from e
  axes = tuple(mesh_axes) if mesh_axes else (("data",), ("data", "model"))[len(shape) == 2]
  return {"mesh_shape": shape, "mesh_axes": axes}


def attention_overrides(config, attention_impl: str) -> dict:
  """auto: cuDNN attention only on GPU (XLA's elsewhere)."""
  if attention_impl == "auto":
    wanted = config.model.attention_impl
    if wanted == "cudnn" and jax.devices()[0].platform != "gpu":
      return {"model.attention_impl": "xla"}
    return {}
  if attention_impl not in ("xla", "cudnn"):
    raise BenchError(f"--attention_impl={attention_impl}: expected auto, xla or cudnn")
  return {"model.attention_impl": attention_impl}


def plan_runs(preset: str | None, kind: str, config=None, config_source: str = "",
              mesh: dict | None = None, attention_impl: str = "auto") -> list[dict]:
  """What to time: [{label, source, overrides, config, setup}], every set-up built
  (and so every preset, kind and mesh checked) before anything compiles."""
  runs = []
  if config is not None:
    sources = [(config_source or "CONFIG", config, {"config": config_source})]
  else:
    kinds = {"both": ("prefix", "lora"), "none": ()}.get(kind, (kind,))
    sources = [(f"configs/bench.py:{preset},{k}", preset_config(preset, k),
                {"preset": preset, "kind": k}) for k in kinds]
    if not kinds:
      preset_config(preset, "t5")  # an unknown preset is still an error
  for source, base, label in sources:
    overrides = {**(mesh or {}), **attention_overrides(base, attention_impl)}
    cfg = with_overrides(base, overrides)
    runs.append({"label": label, "source": source, "overrides": overrides, "config": cfg,
                 "setup": build(cfg)})
  return runs


def run(preset: str = "tiny", kind: str = "both", steps: int | None = None,
        attention_impl: str = "auto", with_hf: bool = False, with_gemm_floor: bool = False,
        *, config=None, config_source: str = "", mesh_shape=None, mesh_axes=None) -> list[dict]:
  """Runs the benchmark, printing and returning its JSON lines.

  Raises BenchError for a preset, kind or mesh that cannot run, before any compile.
  """
  mesh = mesh_overrides(mesh_shape, mesh_axes)
  runs = plan_runs(None if config is not None else preset, kind, config, config_source, mesh,
                   attention_impl)
  plain = None
  if with_hf or with_gemm_floor:
    if config is not None:
      raise BenchError("--compare_hf and --gemm_floor time a preset's plain T5; drop --config")
    plain_config = with_overrides(preset_config(preset, "t5"), mesh)
    plain = {"label": {"preset": preset, "kind": "t5"}, "setup": build(plain_config)}
  steps = steps or (timed_steps(preset) if config is None else 3)

  dtype = (runs[0]["config"] if runs else plain["setup"].config).model.dtype
  lines = [emit(device_peak(dtype))]
  peak = lines[0]
  for r in runs:
    try:
      train_line, trainable, frozen, batch = bench_train(r["setup"], r["label"], steps, peak)
    except Exception as e:
      if attention_impl != "auto" or r["config"].model.attention_impl != "cudnn":
        raise
      print(f"{r['source']}: cuDNN attention failed ({type(e).__name__}: {str(e)[:300]}); "
            "retrying with XLA attention", file=sys.stderr)
      r["overrides"] = {**r["overrides"], "model.attention_impl": "xla"}
      r["config"] = with_overrides(r["config"], {"model.attention_impl": "xla"})
      r["setup"] = build(r["config"])
      train_line, trainable, frozen, batch = bench_train(r["setup"], r["label"], steps, peak)
    train_line["train_command"] = train_command(r["source"], r["overrides"])
    lines.append(emit(train_line))
    if r["setup"].models.hyper is not None:
      lines.append(emit(bench_inference(r["setup"], r["label"], trainable, frozen, batch,
                                        steps)))
    del trainable, frozen, batch
  if with_hf:
    lines += [emit(line) for line in compare_hf(plain["setup"], plain["label"], steps)]
  if with_gemm_floor:
    lines += [emit(line) for line in gemm_floor(plain["setup"], plain["label"])]
  return lines


def main(argv):
  del argv
  cli.quiet_logs()
  # As given, so that each train line's command reproduces the config it timed.
  config_source = " ".join(
      [a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--config=")]
      + [a for a in sys.argv[1:] if a.startswith("--config.")])
  run(FLAGS.preset, FLAGS.kind, FLAGS.steps, FLAGS.attention_impl, FLAGS.compare_hf,
      FLAGS.gemm_floor, config=FLAGS.config, config_source=config_source,
      mesh_shape=FLAGS.mesh_shape, mesh_axes=FLAGS.mesh_axes)


def run_command() -> None:
  """`python -m hypert5.bench`."""
  cli.run(main, define_flags)


if __name__ == "__main__":
  run_command()
