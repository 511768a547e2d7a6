"""Per-device memory of a train step on a mesh, from an ahead-of-time compile on fake
CPU devices.

  python -m hypert5.plan --config=configs/NAME.py[:ARG] --mesh_shape=DATA,MODEL
      [--mesh_axes=data,model] [--devices=N] [--size=xl] [--config.KEY=VALUE ...]

e.g. HyperT5-Prefix at T5-XL on 8 devices, 4-way data and 2-way tensor parallel:

  python -m hypert5.plan --config=configs/tiny.py --size=xl --mesh_shape=4,2 \
      --config.batch_size=32 --config.data.hyper_inputs_length=1024 \
      --config.data.inputs_length=256 --config.data.targets_length=128

It starts N = prod(mesh_shape) fake CPU devices (XLA_FLAGS, set before JAX
creates its backend), builds the experiment with `hypert5.train`'s own set-up
(`trainer_setup.setup_train`: mesh, models, shardings, optimizer, the jitted
step), lowers and compiles that step against abstract arguments carrying their
shardings (nothing is allocated, so T5-XXL plans on a laptop), and prints
per-device bytes:

  frozen params, trainable params, optimizer state, batch: each leaf's shard
    shape under its sharding (exact);
  arguments, outputs, aliased (donated), temporaries: XLA's
    `compiled.memory_analysis()`; total = arguments + outputs - aliased +
    temporaries.

The temporaries are what XLA's CPU backend plans; an accelerator's compiler
fuses and schedules differently, so take them as an estimate. `--size` takes
the architecture (and dropout) of a T5 size from `model/t5_config.py`'s SIZES,
keeping the config's vocabulary and numerics (dtype, scan_layers,
remat_policy, attention_impl). Any config key can be overridden with
--config.KEY=VALUE (batch_size, data.hyper_inputs_length, peft.kind, ...).
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
import time

import jax
from absl import flags
from ml_collections import config_flags

from hypert5 import cli
from hypert5.errors import ConfigError
from hypert5.model import t5
from hypert5.model.t5_config import get_size
from hypert5.training import trainer_setup

FLAGS = flags.FLAGS

GIB = 2 ** 30
# T5Config fields --size leaves as the config has them.
KEPT_BY_SIZE = ("vocab_size", "dtype", "scan_layers", "remat_policy", "attention_impl")


def _flag_value(argv, name):
  for i, arg in enumerate(argv):
    if arg.startswith(f"--{name}="):
      return arg.split("=", 1)[1]
    if arg == f"--{name}" and i + 1 < len(argv):
      return argv[i + 1]
  return None


def fake_device_count(argv) -> int:
  """--devices, else the product of --mesh_shape (which may not hold a -1 then)."""
  devices = _flag_value(argv, "devices")
  if devices:
    return int(devices)
  shape = _flag_value(argv, "mesh_shape")
  if not shape:
    raise SystemExit("error: --mesh_shape is required")
  sizes = [int(s) for s in shape.split(",")]
  if any(s <= 0 for s in sizes):
    raise SystemExit(f"error: --mesh_shape={shape} holds a -1 or 0; give --devices as well")
  return math.prod(sizes)


def use_fake_devices(count: int) -> None:
  """N host-platform devices: before JAX creates its backend (on first use, not on
  import), which reads XLA_FLAGS and the platform then."""
  flags_ = re.sub(r"--xla_force_host_platform_device_count=\S+", "",
                  os.environ.get("XLA_FLAGS", ""))
  os.environ["XLA_FLAGS"] = f"{flags_} --xla_force_host_platform_device_count={count}".strip()
  jax.config.update("jax_platforms", "cpu")


def apply_size(config, size: str) -> None:
  """config.model <- the architecture of T5 size `size`, keeping KEPT_BY_SIZE."""
  for key, value in get_size(size).to_dict().items():
    if key not in KEPT_BY_SIZE:
      config.model[key] = value


def shard_bytes(abstract, shardings) -> int:
  """Bytes one device holds of a tree of ShapeDtypeStructs under `shardings`."""
  return int(sum(math.prod(s.shard_shape(x.shape)) * x.dtype.itemsize
                 for x, s in zip(jax.tree.leaves(abstract), jax.tree.leaves(shardings))))


def total_bytes(abstract) -> int:
  return int(sum(math.prod(x.shape) * x.dtype.itemsize for x in jax.tree.leaves(abstract)))


def plan(config) -> dict:
  """Compiles the train step of `config` on the current devices; returns per-device bytes.

  The step is `trainer_setup.setup_train(config).step`, the one `hypert5.train`
  runs, lowered against the abstract arguments of the set-up (the shapes,
  dtypes and shardings train passes it).
  """


  setup = trainer_setup.setup_train(config)  # every mesh and batch check, before compiling
  start = time.time()
  compiled = setup.lower().compile()
  return memory_plan(setup, compiled, time.time() - start)


def memory_plan(setup, compiled, compile_s: float | None = None) -> dict:
  """Per-device bytes of `compiled`, a compile of `setup.step`: the shard sizes of
  its arguments and XLA's memory analysis."""

  config, models, mesh = setup.config, setup.models, setup.mesh
  trainable, opt_abstract, _, frozen, batch = setup.abstract_arguments()
  memory = compiled.memory_analysis()

  def per_device(tree):
    return shard_bytes(tree, jax.tree.map(lambda x: x.sharding, tree))

  return {
      "mesh": dict(mesh.shape), "devices": mesh.size, "experiment": config.experiment,
      "peft": config.peft.kind if models.hyper is not None or models.shared is not None else None,
      "model": {k: config.model[k] for k in ("d_model", "num_heads", "d_ff", "num_encoder_layers",
                                             "dtype", "scan_layers", "remat_policy")},
      "batch_size": config.batch_size,
      "lengths": [config.data.hyper_inputs_length, config.data.inputs_length,
                  config.data.targets_length],
      "optimizer": config.optimizer.name,
      "frozen_params": t5.count_params(frozen), "trainable_params": t5.count_params(trainable),
      "frozen_params_bytes_total": total_bytes(frozen),
      "trainable_params_bytes_total": total_bytes(trainable),
      "frozen_params_bytes": per_device(frozen),
      "trainable_params_bytes": per_device(trainable),
      "optimizer_state_bytes": per_device(opt_abstract),
      "batch_bytes": per_device(batch),
      "argument_bytes": memory.argument_size_in_bytes,
      "output_bytes": memory.output_size_in_bytes,
      "alias_bytes": memory.alias_size_in_bytes,
      "temp_bytes": memory.temp_size_in_bytes,
      "total_bytes": (memory.argument_size_in_bytes + memory.output_size_in_bytes
                      - memory.alias_size_in_bytes + memory.temp_size_in_bytes),
      "compile_s": compile_s,
  }


def format_table(result: dict) -> str:
  rows = [("frozen params", "frozen_params_bytes"), ("trainable params", "trainable_params_bytes"),
          ("optimizer state", "optimizer_state_bytes"), ("batch", "batch_bytes"),
          ("arguments (XLA)", "argument_bytes"), ("temporaries", "temp_bytes"),
          ("outputs", "output_bytes"), ("aliased (donated)", "alias_bytes"),
          ("total", "total_bytes")]
  mesh = " x ".join(f"{a}={n}" for a, n in result["mesh"].items())
  lines = [f"per-device memory, mesh {mesh} ({result['devices']} devices), "
           f"{result['experiment']} {result['peft'] or ''}, batch {result['batch_size']}, "
           f"lengths {result['lengths']}",
           f"{'':20s} {'GiB':>10s} {'bytes':>16s}"]
  for label, key in rows:
    lines.append(f"{label:20s} {result[key] / GIB:10.3f} {result[key]:16d}")
  return "\n".join(lines)


def define_flags() -> None:
  config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
  flags.DEFINE_list("mesh_shape", None, "Mesh sizes, e.g. 4,2.")
  flags.DEFINE_list("mesh_axes", ["data", "model"], "Mesh axis names.")
  flags.DEFINE_integer("devices", None, "Fake CPU devices (default: the mesh's size).")
  flags.DEFINE_string("size", None, "A T5 size (small ... xxl) replacing config.model's "
                      "architecture.")


def main(argv):
  del argv

  cli.quiet_logs()
  config = FLAGS.config
  if FLAGS.size:
    apply_size(config, FLAGS.size)
  try:
    config.mesh_shape = tuple(int(s) for s in FLAGS.mesh_shape)
  except ValueError:
    raise ConfigError(f"--mesh_shape={','.join(FLAGS.mesh_shape)}: expected integers, "
                      "e.g. 4,2") from None
  config.mesh_axes = tuple(FLAGS.mesh_axes)
  if config.model.attention_impl == "cudnn":  # traced only where there is a GPU
    raise ConfigError("config.model.attention_impl='cudnn' cannot be compiled on the CPU "
                      "devices the plan uses; pass --config.model.attention_impl=xla")
  result = plan(config)
  print(format_table(result))
  print(json.dumps(result), flush=True)


def run_command() -> None:
  """`python -m hypert5.plan`: fake devices first (read when JAX first creates its
  backend, after the imports), then the plan."""
  use_fake_devices(fake_device_count(sys.argv[1:]))
  cli.run(main, define_flags)


if __name__ == "__main__":
  run_command()
