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
(paper section 6; `init.peft=hyper` in a peft_finetune config).
"""

from __future__ import annotations

import json
import logging
import os
import sys

import jax
import ml_collections
import numpy as np
from absl import app, flags

from hypert5 import adapters, checkpoints, cli, experiment, prompts, t5
from hypert5.errors import CheckpointError, ConfigError, ExamplesError
from hypert5.vocab import Vocabulary

MAX_EXAMPLES = 16
FLAGS = flags.FLAGS
log = logging.getLogger("hypert5.adapt")


def define_flags() -> None:
  flags.DEFINE_string("checkpoint", None, "A HyperT5 training run.", required=True)
  flags.DEFINE_string("examples", None, "jsonl of {input, output} few-shot examples.",
                      required=True)
  flags.DEFINE_string("definition", None, "Task definition, read before the examples.")
  flags.DEFINE_string("out", None, "Adapter folder to write (must not exist).", required=True)
  flags.DEFINE_enum("format", "native", ["native", "peft"],
                    "native: HyperT5's adapter; peft: HuggingFace PEFT (LoRA only).")
  flags.DEFINE_integer("max_examples", MAX_EXAMPLES, "Examples used; later lines are ignored.")


def read_examples(path: str, max_examples: int = MAX_EXAMPLES) -> list[tuple[str, str]]:
  """[(input, output)] from a jsonl file; errors name the file and line."""
  examples = []
  for where, record in cli.read_jsonl(path, ("input", "output"), ExamplesError):
    for key in ("input", "output"):
      if not isinstance(record[key], str):
        raise ExamplesError(f"{where}: {key!r} must be a string")
    examples.append((record["input"], record["output"]))
  if not examples:
    raise ExamplesError(f"{path}: no examples (expected up to {max_examples} lines of "
                        '{"input": ..., "output": ...})')
  if len(examples) > max_examples:
    log.warning("%s has %d examples; using the first %d", path, len(examples), max_examples)
    examples = examples[:max_examples]
  return examples


# -- The run -----------------------------------------------------------------------


def find_run_dir(path: str) -> str:
  """A workdir, its checkpoints/ folder or a step folder -> the workdir (with config.json)."""
  path = os.path.abspath(path)
  for candidate in (path, os.path.dirname(path), os.path.dirname(os.path.dirname(path))):
    if os.path.isfile(os.path.join(candidate, "config.json")) and os.path.isdir(
        os.path.join(candidate, "checkpoints")):
      return candidate
  raise CheckpointError(
      f"{path}: not a training run (expected a workdir with config.json and checkpoints/)")


def load_run_config(run_dir: str) -> ml_collections.ConfigDict:
  with open(os.path.join(run_dir, "config.json")) as f:
    return ml_collections.ConfigDict(json.load(f))


class Hypermodel:
  """A trained hypermodel, ready to turn examples into phi."""

  def __init__(self, checkpoint: str):
    self.run_dir = find_run_dir(checkpoint)
    self.config = load_run_config(self.run_dir)
    self.models = experiment.build_models(self.config)
    if self.models.hyper is None:
      raise ConfigError(f"{self.run_dir}: experiment {self.config.experiment!r} has no "
                        "hypermodel to write phi (experiments hyper and hyper_plus have one)")
    abstract = t5.unbox_shapes(experiment.abstract_params(self.models, "hyper"))
    step_or_run = checkpoint if os.path.basename(os.path.abspath(checkpoint)).isdigit() else (
        self.run_dir)
    self.params = checkpoints.restore_part(step_or_run, "hyper", abstract)
    vocab_path = os.path.join(self.run_dir, "spiece.model")
    if not os.path.isfile(vocab_path):
      raise CheckpointError(f"{vocab_path}: missing (the run's vocabulary)")
    self.vocabulary = Vocabulary(vocab_path)
    self.length = self.config.data.hyper_inputs_length
    self._apply = jax.jit(lambda p, ids: self.models.hyper.apply({"params": p}, ids))

  @property
  def peft_config(self):
    return self.models.downstream.peft_config

  @property
  def downstream_config(self):
    return self.models.downstream.config

  def encode(self, examples, definition: str | None = None) -> tuple[np.ndarray, int]:
    """([1, length] hypermodel input ids, examples kept)."""
    segments = [prompts.format_pair(x, y) for x, y in examples]
    if definition is not None:
      if not definition.strip():
        raise ExamplesError("the definition is empty")
      segments = [prompts.format_definition(definition.strip())] + segments
    ids, kept = prompts.fit_segments(segments, self.vocabulary.encode, self.length,
                                     self.vocabulary.eos_id)
    kept_examples = kept - (definition is not None)
    if kept_examples < len(examples):
      log.warning("only the first %d of %d examples fit the hypermodel's %d input tokens",
                  kept_examples, len(examples), self.length)
    padded = np.zeros((1, self.length), np.int32)
    padded[0, :len(ids)] = ids
    return padded, kept_examples

  def phi(self, examples, definition: str | None = None):
    """phi (batch axis 1) for one task, in one forward pass."""
    ids, _ = self.encode(examples, definition)
    return self._apply(self.params, ids)


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
    hyper = Hypermodel(config.init.peft_checkpoint)
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
    hyper = Hypermodel(FLAGS.checkpoint)
    phi = hyper.phi(examples, FLAGS.definition)
    if FLAGS.format == "native":
      adapters.save_native(FLAGS.out, phi, hyper.peft_config, hyper.downstream_config)
    else:
      adapters.save_hf_peft(FLAGS.out, phi, hyper.peft_config, hyper.downstream_config,
                            hyper.config.init.downstream_checkpoint)
  except (ExamplesError, CheckpointError, ConfigError, adapters.AdapterError,
          FileExistsError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)
  print(f"wrote {FLAGS.format} adapter for {len(examples)} examples to {FLAGS.out}")


if __name__ == "__main__":
  define_flags()
  app.run(main)
