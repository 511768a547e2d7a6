"""hypert5.bench (tiny preset, smoke test) and hypert5.plan (AOT memory on fake devices):
both measure the step hypert5.train runs (hypert5.trainer_setup)."""

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
  return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def positive_finite(x):
  return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_flops_formula_counts_one_encoder_layer_by_hand():
  from hypert5.model.peft import PeftConfig
  from hypert5.model.t5_config import T5Config
  from hypert5.tools import bench
  cfg = T5Config(vocab_size=10, d_model=8, d_kv=2, d_ff=16, num_heads=2, num_encoder_layers=1,
                 num_decoder_layers=1)
  s, p, d, h, f = 5, 3, 8, 4, 16
  by_hand = s * (4 * 2 * d * h + 2 * 2 * h * (s + p) + 3 * 2 * d * f)
  assert bench.encoder_flops(cfg, s, PeftConfig("prefix", prefix_length=p)) == by_hand
  lora = PeftConfig("lora", lora_rank=2, lora_targets=("q", "v"))
  assert bench.encoder_flops(cfg, s, lora) == (bench.encoder_flops(cfg, s)
                                               + 2 * s * 2 * 2 * (d + h))


BENCH_CONFIG = os.path.join(REPO, "configs", "bench.py")


def test_gemm_floor_times_every_matmul_of_the_plain_t5_step():
  """The floor reads its matmuls from train's own step of the plain T5 preset: their
  FLOPs must be the bench's formula plus the relative-position one-hot, and
  training must do three times the forward's (the one-hot, applied to integer
  buckets, only gets a weight gradient)."""
  from hypert5.tools import bench
  setup = bench.build(bench.preset_config("tiny", "t5"))
  cfg, data = setup.models.downstream.config, setup.config.data
  assert cfg.scan_layers  # the scanned body's dots must be counted once per layer
  flops = lambda shapes: sum(2 * math.prod(shape) for shape in shapes)
  passes = bench.traced_dot_shapes(setup)
  forward_flops = flops(passes["forward"])
  relpos = (2 * cfg.num_heads * cfg.relative_attention_num_buckets
            * (data.inputs_length ** 2 + data.targets_length ** 2))
  assert forward_flops == setup.config.batch_size * bench.downstream_flops(
      cfg, data.inputs_length, data.targets_length) + relpos
  train_flops = flops(passes["train"])
  assert train_flops == 3 * forward_flops - relpos
  assert train_flops == bench.train_flops(setup.config) + 2 * relpos

  lines = bench.gemm_floor(setup, {"preset": "tiny"}, repeats=1)
  assert [(row["impl"], row["pass"]) for row in lines] == [
      ("xla", "train"), ("xla", "forward"), ("torch", "train"), ("torch", "forward")]
  for line in lines:
    expected = train_flops if line["pass"] == "train" else forward_flops
    assert line["gflop"] == pytest.approx(expected / 1e9)
    for key in ("floor_s", "gflop_per_s", "max_tokens_per_s"):
      assert positive_finite(line[key]), (key, line)


NO_TENSORFLOW = f"""
import sys
for name in ("tensorflow", "seqio", "tensorflow_datasets", "torch", "transformers"):
  sys.modules[name] = None  # `import name` now raises ImportError
import hypert5.tools.bench, hypert5.plan, hypert5.train
from hypert5 import cli
from hypert5.training import trainer_setup
for arg in ("tiny,prefix", "large,lora", "xl,t5"):
  config = cli.load_config({BENCH_CONFIG!r}, arg)
  config.model.attention_impl = "xla"  # cuDNN's is traced only where there is a GPU
  trainer_setup.setup_train(config)
trainer_setup.setup_train(cli.load_config({TINY_CONFIG!r}))
print("built")
"""


def test_bench_plan_and_configs_run_without_tensorflow_or_seqio():
  """The accelerator image has neither (nor torch): with importing them an error, the
  bench, the plan, the set-up and the configs still load and build their steps."""
  result = subprocess.run([sys.executable, "-c", NO_TENSORFLOW], capture_output=True,
                          text=True, cwd=REPO)
  assert result.returncode == 0, result.stderr[-2000:]
  assert result.stdout.strip().splitlines()[-1] == "built"


def test_tiny_bench_prints_train_and_inference_lines():
  result = run_module("hypert5.bench", "--preset=tiny", "--kind=both", "--steps=1")
  assert result.returncode == 0, result.stderr[-3000:]
  lines = json_lines(result.stdout)
  by_bench = {}
  for line in lines:
    by_bench.setdefault(line["bench"], []).append(line)
  assert positive_finite(by_bench["peak"][0]["measured_matmul_tflops"])
  assert [row["kind"] for row in by_bench["train"]] == ["prefix", "lora"]
  for line in by_bench["train"]:
    for key in ("step_s", "tokens_per_s", "model_tflop_per_step", "achieved_tflops",
                "peak_tflops", "mfu", "measured_matmul_tflops", "loss"):
      assert positive_finite(line[key]), (key, line)
    assert "peak_memory_bytes" in line  # null on CPU
    # What it timed is what this command trains, with train's optimizer and clipping.
    assert line["train_command"] == (f"python -m hypert5.train --config=configs/bench.py:"
                                     f"tiny,{line['kind']} --workdir=WORKDIR")
    assert line["optimizer"] == "adafactor" and line["grad_clip_norm"] == 1.0
  for line in by_bench["inference"]:
    for key in ("phi_ms_per_task", "cached_phi_ms_per_query", "concat_ms_per_query",
                "speedup_cached_phi"):
      assert positive_finite(line[key]), (key, line)


def test_bench_step_is_the_step_train_runs(tmp_path):
  """For the tiny preset, the program the bench times lowers to the same HLO as the
  step built afresh by trainer_setup.make_train_step for the config `hypert5.train
  --config=configs/bench.py:tiny,prefix` loads; and one step of the bench's step,
  from a fresh run's state and first batch, gives the parameters `hypert5.train`
  checkpoints after its first step."""
  import jax
  import jax.numpy as jnp
  import numpy as np

  from hypert5 import cli, experiment
  from hypert5.formats import checkpoints
  from hypert5.tools import bench
  from hypert5.training import data, trainer_setup
  from hypert5.training import loop as train
  from hypert5.training.optim import make_optimizer
  (run,) = bench.plan_runs("tiny", "prefix")
  ours = run["setup"]

  config = cli.load_config(BENCH_CONFIG, "tiny,prefix")
  models = experiment.build_models(config)
  optimizer, schedule = make_optimizer(config.optimizer, config.total_steps)
  shardings, _, opt_shardings, _ = trainer_setup.abstract_state(models, optimizer, ours.mesh,
                                                                ours.rules)
  fresh = trainer_setup.make_train_step(models, optimizer, schedule, config, shardings,
                                        opt_shardings, ours.mesh, ours.rules)
  assert fresh is not ours.step
  with ours.activate():
    assert fresh.lower(*ours.abstract_arguments()).as_text() == ours.lower().as_text()

  config.total_steps, config.checkpoint_every, config.log_every = 1, 1, 1
  train.train(config, str(tmp_path / "run"))
  checkpointer = checkpoints.TrainCheckpointer(str(tmp_path / "run" / "checkpoints"), keep=1)
  trained, _, meta = checkpointer.restore(
      1, {p: ours.abstract[p] for p in ours.models.trainable}, ours.opt_abstract)
  checkpointer.close()
  assert meta["step"] == 1
  initial, opt_state, frozen = ours.initial_state()
  before = [np.asarray(x) for x in jax.tree.leaves(initial)]
  first = next(data.train_batches(config, ours.features, local_batch_size=config.batch_size,
                                  shard_index=0, num_shards=1))
  with ours.activate():
    stepped, _, _ = ours.step(initial, opt_state, jnp.int32(0), frozen, ours.global_batch(first))
  after = [np.asarray(x) for x in jax.tree.leaves(stepped)]
  for ours_leaf, train_leaf in zip(after, jax.tree.leaves(trained)):
    np.testing.assert_array_equal(ours_leaf, np.asarray(train_leaf))
  assert any(not np.array_equal(a, b) for a, b in zip(after, before))  # the step moved them


PLAN_EQUALS_TRAIN = """
import json, sys
import jax.numpy as jnp
from hypert5 import cli
from hypert5.training import data, trainer_setup
from hypert5.tools import plan
config = cli.load_config(sys.argv[1])
config.data.source = "synthetic"
config.mesh_shape, config.mesh_axes = (4, 2), ("data", "model")
planned = plan.plan(config)
# train's own step, lowered for what the loop passes it: a fresh run's state and
# its first batch, made global as the loop makes it.
setup = trainer_setup.setup_train(config)
trainable, opt_state, frozen = setup.initial_state()
local = next(data.train_batches(config, setup.features, local_batch_size=config.batch_size,
                                shard_index=0, num_shards=1))
with setup.activate():
  lowered = setup.step.lower(trainable, opt_state, jnp.int32(0), frozen,
                             setup.global_batch(local))
memory = lowered.compile().memory_analysis()
print(json.dumps({"plan": planned, "same_program": lowered.as_text() == setup.lower().as_text(),
                  "train": {"argument_bytes": memory.argument_size_in_bytes,
                            "output_bytes": memory.output_size_in_bytes,
                            "alias_bytes": memory.alias_size_in_bytes,
                            "temp_bytes": memory.temp_size_in_bytes}}))
"""


def test_plan_equals_the_memory_analysis_of_trains_own_step():
  """configs/tiny.py on a 4 x 2 mesh: the plan's numbers are those of the program
  the train loop compiles for its real arguments."""
  env = dict(os.environ, XLA_FLAGS=(os.environ.get("XLA_FLAGS", "")
                                    + " --xla_force_host_platform_device_count=8").strip())
  result = subprocess.run([sys.executable, "-c", PLAN_EQUALS_TRAIN, TINY_CONFIG],
                          capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  out = json_lines(result.stdout)[-1]
  assert out["same_program"]
  for key, value in out["train"].items():
    assert out["plan"][key] == value, key
  assert out["plan"]["temp_bytes"] > 0 and out["plan"]["mesh"] == {"data": 4, "model": 2}


@pytest.mark.parametrize("args, devices, message", [
    (["--preset=huge"], 1,
     r"--preset=huge: no such preset; pass one of tiny, small, large, xl"),
    (["--preset=tiny", "--mesh_shape=4,2"], 1,
     r"mesh_shape \(4, 2\) needs 8 devices, but 1 are available.*--mesh_shape"),
    (["--preset=tiny", "--mesh_shape=1,8"], 8,
     r"heads=4\) .* does not divide over mesh axes \('model',\) of size 8"),
])
def test_bench_rejects_bad_input_before_compiling(args, devices, message):
  import re
  env = dict(os.environ, XLA_FLAGS=(os.environ.get("XLA_FLAGS", "") +
                                    f" --xla_force_host_platform_device_count={devices}"))
  result = subprocess.run([sys.executable, "-m", "hypert5.bench", *args], capture_output=True,
                          text=True, cwd=REPO, env=env, timeout=300)
  assert result.returncode == 1, result.stdout[-2000:]
  assert re.search(message, result.stderr), result.stderr[-2000:]
  assert json_lines(result.stdout) == []  # not even the matmul peak ran


def expected_frozen_bytes_per_device(model_ways):
  """Downstream T5 of configs/tiny.py: a leaf with a logical axis that maps to `model`
  is split `model_ways` ways, every other leaf is replicated."""
  from hypert5 import cli, experiment
  from hypert5.model import partitioning, t5
  cfg = experiment.t5_config(cli.load_config(TINY_CONFIG))
  to_model = {name for name, mesh in partitioning.DEFAULT_RULES if mesh == "model"}
  shapes = t5.param_shapes(cfg)
  axes = t5.param_logical_axes(cfg)
  import jax
  total = 0
  for x, names in zip(jax.tree.leaves(shapes),
                      jax.tree.leaves(axes, is_leaf=lambda a: isinstance(
                          a, jax.sharding.PartitionSpec))):
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
    (["--mesh_shape=4,2", "--devices=4"], r"needs 8 devices, but 4 are available.*product is 4"),
    (["--config=configs/bench.py:large,prefix", "--mesh_shape=1", "--mesh_axes=data"],
     r"attention_impl='cudnn' cannot be compiled on the CPU.*--config.model.attention_impl=xla"),
])
def test_plan_rejects_what_it_cannot_compile(args, message):
  import re
  if not any(a.startswith("--config=") for a in args):
    args = [f"--config={TINY_CONFIG}", *args]
  result = run_module("hypert5.plan", *args)
  assert result.returncode == 1, result.stdout[-2000:]
  assert re.search(message, result.stderr), result.stderr[-2000:]
