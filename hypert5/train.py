"""`python -m hypert5.train`: trains one stage of the paper (the loop: training/loop.py).

  python -m hypert5.train --config=configs/NAME.py[:ARG] --workdir=DIR [--config.KEY=VALUE ...]

On a pod or cluster every host runs the same command; --multihost (on by default
on a TPU pod, a multi-task SLURM job or with --coordinator_address) joins them
with jax.distributed.
"""

from __future__ import annotations

import os

import jax
from absl import flags
from ml_collections import config_flags

from hypert5 import cli
from hypert5.errors import ConfigError
from hypert5.training import loop

FLAGS = flags.FLAGS


def define_flags() -> None:
  config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
  flags.DEFINE_string("workdir", None, "Where checkpoints, logs and metrics go.")
  flags.DEFINE_string("coordinator_address", None,
                      "host:port of process 0 for multi-process runs; on TPU pods and SLURM "
                      "jax.distributed finds everything itself (see --multihost).")
  flags.DEFINE_integer("num_processes", None, "Processes in a multi-process run.")
  flags.DEFINE_integer("process_id", None, "This process's index in a multi-process run.")
  flags.DEFINE_bool("multihost", None, "Call jax.distributed.initialize() (default: when on a "
                    "TPU pod, a multi-task SLURM job, or given a coordinator address).")


def initialize_distributed(coordinator_address=None, num_processes=None, process_id=None,
                           multihost=None) -> None:
  """jax.distributed.initialize() when this is one process of several."""
  if multihost is None:
    multihost = bool(coordinator_address) or int(os.environ.get("SLURM_NTASKS", "1")) > 1 or (
        "TPU_WORKER_HOSTNAMES" in os.environ
        and "," in os.environ.get("TPU_WORKER_HOSTNAMES", ""))
  if multihost:
    jax.distributed.initialize(coordinator_address=coordinator_address,
                               num_processes=num_processes, process_id=process_id)


def main(argv) -> None:
  del argv
  cli.quiet_logs()
  if not FLAGS.workdir:
    raise ConfigError("--workdir is required")
  initialize_distributed(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id,
                         FLAGS.multihost)
  loop.train(FLAGS.config, FLAGS.workdir)  # Preempted: cli.run exits with EXIT_PREEMPTED


if __name__ == "__main__":
  cli.run(main, define_flags, required=["config"])
