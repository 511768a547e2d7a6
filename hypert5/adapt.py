"""Adapting to a new task without backpropagation: phi from a few examples.

  python -m hypert5.adapt --checkpoint=RUN --examples=FILE.jsonl [--definition=TEXT]
      --out=DIR [--format=native|peft]

RUN is a HyperT5 training run (its workdir, checkpoints/ folder or one step).
FILE holds up to 16 lines of {"input": ..., "output": ...}; more are allowed,
and only the first 16 are used (a warning says so). The examples are written
as the hypermodel saw them in training (hypert5.prompts), phi is generated in
one forward pass and written as an adapter: HyperT5's own format, or for
HyperT5-LoRA also HuggingFace PEFT's, which `peft.PeftModel.from_pretrained`
loads on the HuggingFace T5.

The same machinery gives ordinary PEFT fine-tuning its "hyper" initialization
(paper section 6; `init.peft=hyper` in a peft_finetune config). The work is
done by the Python API (hypert5.api: load, Run.phi, Run.save_adapter).
"""

from __future__ import annotations

import sys

import jax
import numpy as np
from absl import app, flags

from hypert5 import adapters, api, checkpoints, cli, experiment
from hypert5.errors import CheckpointError, ConfigError
# The work is hypert5.api's; these names stay importable from here.
from hypert5.api import MAX_EXAMPLES, ExamplesError, read_examples  # noqa: F401

Hypermodel = api.Run
FLAGS = flags.FLAGS


def define_flags() -> None:
  flags.DEFINE_string("checkpoint", None, "A HyperT5 training run.", required=True)
  flags.DEFINE_string("examples", None, "jsonl of {input, output} few-shot examples.",
                      required=True)
  flags.DEFINE_string("definition", None, "Task definition, read before the examples.")
  flags.DEFINE_string("out", None, "Adapter folder to write (must not exist).", required=True)
  flags.DEFINE_enum("format", "native", ["native", "peft"],
                    "native: HyperT5's adapter; peft: HuggingFace PEFT (LoRA only).")
  flags.DEFINE_integer("max_examples", MAX_EXAMPLES, "Examples used; later lines are ignored.")


def phi_to_shared_params(phi) -> dict:
  """phi (batch 1) -> SharedPeft parameters (the same tensors, named by their path)."""
  flat = {}

  def visit(tree, path):
    if isinstance(tree, dict):
      for k, v in tree.items():
        visit(v, path + (k,))
    else:
      flat["/".join(path)] = tree[0]

  visit(phi, ())
  return flat


def initial_shared_peft(config, models, params, abstract, shardings, mesh, rules, rng):
  """The starting phi of PEFT training (paper section 6): random, the shared
  multi-task PEFT parameters of a shared_peft run, or a hypermodel's phi for a
  few training examples of the task."""
  del params, mesh, rules
  if config.experiment == "shared_peft" or config.init.peft == "random":
    return experiment.init_part(models, "shared", rng, shardings)
  if config.init.peft == "shared":
    return checkpoints.restore_part(config.init.peft_checkpoint, "shared", abstract)
  if config.init.peft == "hyper":
    hyper = api.load(config.init.peft_checkpoint)
    if (hyper.peft_config != models.downstream.peft_config
        or hyper.downstream_config.replace(dtype="float32") != models.downstream.config.replace(
            dtype="float32")):
      raise ValueError(f"{config.init.peft_checkpoint}: the hypermodel writes phi for another "
                       "downstream model or PEFT config than this run's")
    shared = phi_to_shared_params(hyper.phi(read_examples(config.init.peft_examples)))
    return jax.tree.map(lambda x, s: jax.device_put(np.asarray(x), s), shared, shardings)
  raise ValueError(f"config.init.peft={config.init.peft!r}: expected random, shared or hyper")


def main(argv):
  del argv
  cli.quiet_logs()
  try:
    examples = read_examples(FLAGS.examples, FLAGS.max_examples)
    run = api.load(FLAGS.checkpoint)
    run.save_adapter(run.phi(examples, FLAGS.definition), FLAGS.out, FLAGS.format)
  except (ExamplesError, CheckpointError, ConfigError, adapters.AdapterError,
          FileExistsError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)
  print(f"wrote {FLAGS.format} adapter for {len(examples)} examples to {FLAGS.out}")


if __name__ == "__main__":
  define_flags()
  app.run(main)
