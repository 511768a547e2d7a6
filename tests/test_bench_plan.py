"""hypert5.bench (tiny preset, smoke test) and hypert5.plan (AOT memory on fake devices)."""

import json
import math
import os
import subprocess
import sys

import pytest

from conftest import REPO, TINY_CONFIG


def run_module(module, *args, timeout=300):
  return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                        cwd=REPO, timeout=timeout)


def json_lines(stdout):
  return [json.loads(l) for l in stdout.splitlines() if l.startswith("{")]


def positive_finite(x):
  return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_flops_formula_counts_one_encoder_layer_by_hand():
  from hypert5 import bench
  from hypert5.peft import PeftConfig
  from hypert5.t5_config import T5Config
  cfg = T5Config(vocab_size=10, d_model=8, d_kv=2, d_ff=16, num_heads=2, num_encoder_layers=1,
                 num_decoder_layers=1)
  s, p, d, h, f = 5, 3, 8, 4, 16
  by_hand = s * (4 * 2 * d * h + 2 * 2 * h * (s + p) + 3 * 2 * d * f)
  assert bench.encoder_flops(cfg, s, PeftConfig("prefix", prefix_length=p)) == by_hand
  lora = PeftConfig("lora", lora_rank=2, lora_targets=("q", "v"))
  assert bench.encoder_flops(cfg, s, lora) == (bench.encoder_flops(cfg, s)
                                               + 2 * s * 2 * 2 * (d + h))


def test_gemm_floor_times_every_matmul_of_the_plain_t5_step():
  """The floor reads its matmuls from the traced step: their FLOPs must be the
  bench's formula plus the relative-position one-hot, and training must do three
  times the forward's (the one-hot, applied to integer buckets, only gets a
  weight gradient)."""
  import jax
  from hypert5 import bench, t5
  preset = bench.PRESETS["tiny"]
  cfg = bench.model_config(preset, None)
  assert cfg.scan_layers  # the scanned body's dots must be counted once per layer
  loss_fn, forward = bench.plain_t5_functions(cfg)
  params = t5.param_shapes(cfg)
  batch = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype),
                       bench.synthetic_batch(preset, cfg.vocab_size))
  flops = lambda shapes: sum(2 * math.prod(shape) for shape in shapes)
  forward_flops = flops(bench.dot_shapes(jax.make_jaxpr(forward)(params, batch).jaxpr))
  relpos = (2 * cfg.num_heads * cfg.relative_attention_num_buckets
            * (preset.inputs_len ** 2 + preset.targets_len ** 2))
  assert forward_flops == preset.batch * bench.downstream_flops(
      cfg, preset.inputs_len, preset.targets_len) + relpos
  train_flops = flops(bench.dot_shapes(
      jax.make_jaxpr(jax.value_and_grad(loss_fn))(params, batch).jaxpr))
  assert train_flops == 3 * forward_flops - relpos

  lines = bench.gemm_floor(preset, repeats=1)
  assert [(l["impl"], l["pass"]) for l in lines] == [
      ("xla", "train"), ("xla", "forward"), ("torch", "train"), ("torch", "forward")]
  for line in lines:
    expected = train_flops if line["pass"] == "train" else forward_flops
    assert line["gflop"] == pytest.approx(expected / 1e9)
    for key in ("floor_s", "gflop_per_s", "max_tokens_per_s"):
      assert positive_finite(line[key]), (key, line)


def test_bench_imports_no_tensorflow_seqio_or_ml_collections():
  """The accelerator image lacks them."""
  code = ("import sys, hypert5.bench; print(sorted(m for m in sys.modules if m.split('.')[0] in "
          "('tensorflow', 'seqio', 'ml_collections', 'torch', 'transformers')))")
  result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
  assert result.returncode == 0, result.stderr[-2000:]
  assert result.stdout.strip() == "[]"


def test_tiny_bench_prints_train_and_inference_lines():
  result = run_module("hypert5.bench", "--preset=tiny", "--kind=both", "--steps=1")
  assert result.returncode == 0, result.stderr[-3000:]
  lines = json_lines(result.stdout)
  by_bench = {}
  for line in lines:
    by_bench.setdefault(line["bench"], []).append(line)
  assert positive_finite(by_bench["peak"][0]["measured_matmul_tflops"])
  assert [l["kind"] for l in by_bench["train"]] == ["prefix", "lora"]
  for line in by_bench["train"]:
    for key in ("step_s", "tokens_per_s", "model_tflop_per_step", "achieved_tflops",
                "peak_tflops", "mfu", "measured_matmul_tflops", "loss"):
      assert positive_finite(line[key]), (key, line)
    assert "peak_memory_bytes" in line  # null on CPU
  for line in by_bench["inference"]:
    for key in ("phi_ms_per_task", "cached_phi_ms_per_query", "concat_ms_per_query",
                "speedup_cached_phi"):
      assert positive_finite(line[key]), (key, line)


def expected_frozen_bytes_per_device(model_ways):
  """Downstream T5 of configs/tiny.py: a leaf with a logical axis that maps to `model`
  is split `model_ways` ways, every other leaf is replicated."""
  from hypert5 import cli, experiment, partitioning, t5
  cfg = experiment.t5_config(cli.load_config(TINY_CONFIG))
  to_model = {name for name, mesh in partitioning.DEFAULT_RULES if mesh == "model"}
  shapes = t5.param_shapes(cfg)
  axes = t5.param_logical_axes(cfg)
  import jax
  total = 0
  for x, names in zip(jax.tree.leaves(shapes),
                      jax.tree.leaves(axes, is_leaf=lambda a: isinstance(a, jax.sharding.PartitionSpec))):
    ways = model_ways if set(names) & to_model else 1
    total += math.prod(x.shape) * 4 // ways
  return total


def test_plan_on_a_4x2_mesh_reports_sharded_memory():
  result = run_module("hypert5.plan", f"--config={TINY_CONFIG}", "--mesh_shape=4,2")
  assert result.returncode == 0, result.stderr[-3000:]
  assert "temporaries" in result.stdout
  (plan,) = json_lines(result.stdout)
  assert plan["mesh"] == {"data": 4, "model": 2} and plan["devices"] == 8
  for key in ("frozen_params_bytes", "trainable_params_bytes", "optimizer_state_bytes",
              "argument_bytes", "temp_bytes", "output_bytes", "total_bytes"):
    assert positive_finite(plan[key]), key
  assert plan["frozen_params_bytes"] == expected_frozen_bytes_per_device(2)
  assert plan["frozen_params_bytes"] < plan["frozen_params_bytes_total"]
  assert plan["trainable_params_bytes"] < plan["trainable_params_bytes_total"]
  # Everything the step reads is an argument: params, optimizer state, batch and step.
  parts = sum(plan[k] for k in ("frozen_params_bytes", "trainable_params_bytes",
                                "optimizer_state_bytes", "batch_bytes"))
  assert parts <= plan["argument_bytes"] <= parts + 64


@pytest.mark.parametrize("args, message", [
    (["--mesh_shape=1,8"], r"heads=4\) .* does not divide over mesh axes \('model',\) of size 8"),
    (["--mesh_shape=4,2", "--devices=4"], r"needs 8 devices, but 4 are available"),
])
def test_plan_rejects_an_impossible_mesh(args, message):
  import re
  result = run_module("hypert5.plan", f"--config={TINY_CONFIG}", *args)
  assert result.returncode == 1, result.stdout[-2000:]
  assert re.search(message, result.stderr), result.stderr[-2000:]
