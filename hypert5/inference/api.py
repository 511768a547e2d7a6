"""The Python API: a trained run, phi from a few examples, the downstream model under it.

  import hypert5
  run = hypert5.load("runs/tiny")                  # workdir, checkpoints/ or a step folder
  phi = run.phi([(x1, y1), (x2, y2)], definition="...")  # one hypermodel forward pass
  run.score(x, ["yes", "no"], phi)                 # log p(choice | x, phi) per choice
  run.generate(x, phi)                             # greedy decoding under phi
  run.save_adapter(phi, "my_adapter", format="native" | "peft")

Examples are written as the training data writes few-shot contexts
(text/prompts.py: "Input: x Output: y" segments, the definition first, trailing
segments dropped whole to fit the hypermodel's input), so phi here is the phi
`hypert5.eval` computes for the same examples.

The command-line tools are thin over this module: `hypert5.adapt` (phi from a
jsonl file, saved as an adapter), `hypert5.eval` (every parameter part of a
run; phi from a few-shot set's tokens) and `hypert5.score` (log-likelihoods).
Nothing here imports TensorFlow or SeqIO.
"""

from __future__ import annotations

import functools
import json
import logging
import os
from collections.abc import Iterable, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from hypert5 import experiment, files
from hypert5.errors import AdapterError, CheckpointError, ConfigError, ExamplesError
from hypert5.formats import adapters, checkpoints
from hypert5.inference import infer
from hypert5.model import t5
from hypert5.text import prompts
from hypert5.text.vocab import Vocabulary

MAX_EXAMPLES = 16  # the few-shot contexts of training hold up to 16 examples
EXAMPLE_FORMATS = ("pair", "positive")
log = logging.getLogger("hypert5.api")


# -- Examples ---------------------------------------------------------------------


def read_examples(path: str, max_examples: int = MAX_EXAMPLES) -> list[tuple[str, str]]:
  """[(input, output)] from a jsonl file of {"input", "output"}; errors name the file and line.

  Lines beyond `max_examples` are dropped, with a warning."""
  if isinstance(max_examples, bool) or not isinstance(max_examples, int) or max_examples < 1:
    raise ExamplesError(f"max_examples={max_examples!r}: must be a positive integer "
                        "(--max_examples for hypert5.adapt)")
  examples = []
  for where, record in files.read_jsonl(path, ("input", "output"), ExamplesError):
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


def _pair(example, index: int) -> tuple[str, str]:
  if isinstance(example, dict):
    missing = [k for k in ("input", "output") if k not in example]
    if missing:
      raise ExamplesError(f"examples[{index}]: missing key {missing[0]!r}")
    pair = (example["input"], example["output"])
  elif isinstance(example, (tuple, list)) and len(example) == 2:
    pair = tuple(example)
  else:
    raise ExamplesError(f"examples[{index}]: expected an (input, output) pair or a dict "
                        f"with 'input' and 'output', got {example!r}")
  for key, value in zip(("input", "output"), pair):
    if not isinstance(value, str):
      raise ExamplesError(f"examples[{index}]: {key!r} must be a string, got {value!r}")
  return pair


def context_segments(examples: Iterable, definition: str | None = None,
                     example_format: str = "pair") -> list[str]:
  """The text segments of a few-shot context, as the training data writes them.

  examples: (input, output) pairs or {"input", "output"} dicts. example_format:
  "pair" ("Input: x Output: y"; P3, MetaICL, the embedded benchmarks, jsonl
  benchmarks) or "positive" ("Positive Example 1: Input: x Output: y"; S-NI's
  Def+Pos). The definition, when given, is the first segment."""
  if example_format not in EXAMPLE_FORMATS:
    raise ExamplesError(f"example_format={example_format!r}; expected one of {EXAMPLE_FORMATS}")
  pairs = [_pair(e, i) for i, e in enumerate(examples)]
  if example_format == "pair":
    segments = [prompts.format_pair(x, y) for x, y in pairs]
  else:
    segments = [prompts.format_positive_example(i + 1, x, y) for i, (x, y) in enumerate(pairs)]
  if definition is not None:
    if not definition.strip():
      raise ExamplesError("the definition is empty")
    segments = [prompts.format_definition(definition.strip())] + segments
  if not segments:
    raise ExamplesError("no examples (and no definition) to make phi from")
  return segments


# -- Runs -------------------------------------------------------------------------


def find_run_dir(path: str) -> str:
  """A workdir, its checkpoints/ folder or a step folder -> the workdir (with config.json)."""
  path = os.path.abspath(path)
  if not os.path.isdir(path):
    raise CheckpointError(f"{path}: no such directory (expected a training "
                                         "workdir, its checkpoints/ or a step folder)")
  for candidate in (path, os.path.dirname(path), os.path.dirname(os.path.dirname(path))):
    if os.path.isfile(os.path.join(candidate, "config.json")):
      if not os.path.isdir(os.path.join(candidate, "checkpoints")):
        raise CheckpointError(
            f"{candidate}: config.json but no checkpoints/ (not a training workdir, or a run "
            "that has not saved a step yet)")
      return candidate
  raise CheckpointError(
      f"{path}: not a training run (expected a workdir with config.json and checkpoints/)")


def load_run_config(run_dir: str) -> ml_collections.ConfigDict:
  path = os.path.join(run_dir, "config.json")
  try:
    with open(path) as f:
      return ml_collections.ConfigDict(json.load(f))
  except json.JSONDecodeError as e:
    raise CheckpointError(f"{path}: invalid JSON ({e.msg})") from e


def load_part(config, checkpoint: str, models: experiment.Models, part: str):
  """One parameter part of a run: restored when the experiment trains it; otherwise
  (the frozen downstream T5) from config.init.downstream_checkpoint, or the run's
  own seeded initialization (see trainer_setup.initial_params)."""
  if part in models.trainable:
    abstract = t5.unbox_shapes(experiment.abstract_params(models, part))
    return checkpoints.restore_part(checkpoint, part, abstract)
  if part != "downstream":
    raise ValueError(f"experiment {config.experiment!r} does not train {part!r}")
  if config.init.downstream_checkpoint:
    return checkpoints.load_model(config.init.downstream_checkpoint)[1]
  return experiment.init_part(
      models, "downstream", jax.random.fold_in(jax.random.PRNGKey(config.seed), 1), None)


def load_params(config, checkpoint: str, models: experiment.Models) -> dict:
  """Every parameter part the experiment needs, from `checkpoint` and the config.

  checkpoint: a training run (workdir, checkpoints/ or a step folder), or, for an
  experiment with a downstream T5 alone, a model checkpoint (native or HuggingFace)."""
  if checkpoints.is_native_checkpoint(checkpoint) or checkpoints.hf.is_hf_checkpoint(checkpoint):
    if models.parts != ("downstream",):
      raise ConfigError(
          f"{checkpoint} is a T5 model, but experiment {config.experiment!r} also needs "
          f"{[p for p in models.parts if p != 'downstream']}; pass the run's workdir")
    _, params, _ = checkpoints.load_model(checkpoint)
    checkpoints.check_params_fit(params, models.downstream.config, checkpoint)
    return {"downstream": params}
  params = {part: load_part(config, checkpoint, models, part) for part in models.trainable}
  if "downstream" not in params:
    params["downstream"] = load_part(config, checkpoint, models, "downstream")
  return params


class Run:
  """A trained HyperT5 run: its hypermodel, downstream T5 and vocabulary.

  The hypermodel's parameters load at once; the downstream T5's when first used
  (writing adapters needs the hypermodel alone)."""

  def __init__(self, path: str):
    self.run_dir = find_run_dir(path)
    self.checkpoint = os.path.abspath(path)  # restore_part reads any of the three forms
    self.config = load_run_config(self.run_dir)
    try:
      self.models = experiment.build_models(self.config)
    except ValueError as e:
      raise ConfigError(f"{self.run_dir}/config.json: {e}") from None
    if self.models.hyper is None:
      raise ConfigError(
          f"{self.run_dir}: experiment {self.config.experiment!r} has no hypermodel to write "
          "phi (experiments hyper and hyper_plus have one)")
    self.hyper_params = load_part(self.config, self.checkpoint, self.models, "hyper")
    vocab_path = os.path.join(self.run_dir, "spiece.model")
    if not os.path.isfile(vocab_path):
      raise CheckpointError(f"{vocab_path}: missing (the run's vocabulary)")
    self.vocabulary = Vocabulary(vocab_path)
    data = self.config.data
    self.lengths = {"hyper_inputs": data.hyper_inputs_length, "inputs": data.inputs_length,
                    "targets": data.targets_length}
    self.inference = infer.Inference(
        self.models.downstream, self.models.hyper, self.vocabulary, self.lengths,
        batch_size=self.config.eval.batch_size,
        max_decode_length=self.config.eval.max_decode_length or data.targets_length)

  @property
  def batch_size(self) -> int:
    return self.inference.batch_size

  @property
  def max_decode_length(self) -> int:
    return self.inference.max_decode_length

  @property
  def peft_config(self):
    return self.models.downstream.peft_config

  @property
  def downstream_config(self):
    return self.models.downstream.config

  @functools.cached_property
  def downstream_params(self):
    return load_part(self.config, self.checkpoint, self.models, "downstream")

  # phi

  def encode(self, examples, definition: str | None = None,
             example_format: str = "pair") -> tuple[np.ndarray, int]:
    """([1, hyper_inputs_length] hypermodel input ids, number of examples kept): the
    examples written as the training data writes contexts, trailing ones dropped
    whole to fit."""
    ids, fit = self._fit(list(examples), definition, example_format)
    padded, _ = infer.pad_rows([ids], self.lengths["hyper_inputs"], 1)
    return padded, fit["examples_kept"]

  def context_fit(self, examples, definition: str | None = None,
                  example_format: str = "pair") -> dict:
    """How the examples fit the hypermodel's input: {"examples_given",
    "examples_kept" (whole), "first_example_cut", "definition_cut"}."""
    return self._fit(list(examples), definition, example_format)[1]

  def _fit(self, examples: list, definition: str | None, example_format: str
           ) -> tuple[list[int], dict]:
    segments = context_segments(examples, definition, example_format)
    length = self.lengths["hyper_inputs"]
    ids, kept = prompts.fit_segments(segments, self.vocabulary.encode, length,
                                     self.vocabulary.eos_id)
    first_cut = len(self.vocabulary.encode(segments[0])) + 1 > length
    has_definition = definition is not None
    fit = {"examples_given": len(examples),
           "examples_kept": 0 if first_cut else kept - has_definition,
           "first_example_cut": first_cut and not has_definition,
           "definition_cut": first_cut and has_definition}
    if fit["first_example_cut"]:
      log.warning("the first example alone is longer than the hypermodel's %d input tokens: "
                  "it is cut, so its output is lost, and no example fits whole", length)
    elif has_definition and examples and fit["examples_kept"] == 0:
      log.warning("the definition %s the hypermodel's %d input tokens: none of the %d "
                  "examples fit", "overflows" if first_cut else "fills", length, len(examples))
    elif fit["examples_kept"] < len(examples):
      log.warning("only the first %d of %d examples fit the hypermodel's %d input tokens",
                  fit["examples_kept"], len(examples), length)
    return ids, fit

  def phi(self, examples, definition: str | None = None, example_format: str = "pair"):
    """phi (the downstream model's PEFT parameters, batch axis 1) for a task, in one
    forward pass of the hypermodel. examples: (input, output) pairs or
    {"input", "output"} dicts, written as in training (see context_segments)."""
    ids, _ = self.encode(examples, definition, example_format)
    return self.inference.phi(self.hyper_params, ids)

  # The downstream model under phi

  def _query_ids(self, query: str) -> list[int]:
    if not isinstance(query, str):
      raise TypeError(f"a query is a string, got {query!r}")
    return self.inference.tokenize(query, "inputs")

  def score(self, query: str, choices: Sequence[str], phi) -> list[float]:
    """Summed log-likelihood of each answer choice given the query, under phi;
    the highest is the rank-classification answer (as hypert5.eval ranks)."""
    if isinstance(choices, str) or not choices:
      raise ValueError(f"choices: a non-empty list of strings, got {choices!r}")
    inputs = self._query_ids(query)
    rows = [(inputs, self.inference.tokenize(c, "targets")) for c in choices]
    return self.inference.score(self.downstream_params, rows, phi).tolist()

  def generate(self, queries: str | Sequence[str], phi) -> str | list[str]:
    """Greedy decoding under phi: a query -> its answer; a list -> a list."""
    single = isinstance(queries, str)
    queries = [queries] if single else list(queries)
    answers = self.inference.generate(self.downstream_params,
                                      [self._query_ids(q) for q in queries], phi)
    return answers[0] if single else answers

  # Adapters

  def save_adapter(self, phi, directory: str, format: str = "native",  # noqa: A002
                   overwrite: bool = False, context_fit: dict | None = None) -> None:
    """Writes phi as an adapter: "native" (HyperT5's, read by `hypert5.score
    --adapter`) or, for LoRA, "peft" (HuggingFace PEFT's, for
    `peft.PeftModel.from_pretrained` on the HuggingFace T5). An existing `directory`
    is an AdapterError naming it, unless `overwrite` (then it is replaced whole once
    the new adapter is written). context_fit (from `context_fit`) is written beside
    the weights, as adapters.CONTEXT_FILE."""
    if format == "native":
      adapters.save_native(directory, phi, self.peft_config, self.downstream_config,
                           overwrite=overwrite, context_fit=context_fit)
    elif format == "peft":
      adapters.save_hf_peft(directory, phi, self.peft_config, self.downstream_config,
                            self.config.init.downstream_checkpoint, overwrite=overwrite,
                            context_fit=context_fit)
    else:
      raise AdapterError(f"format={format!r}; expected 'native' or 'peft'")

  def load_adapter(self, directory: str):
    """phi (batch axis 1) from an adapter of either format written for this run's model."""
    peft, phi = adapters.load_adapter(directory, self.downstream_config)
    if peft != self.peft_config:
      raise AdapterError(f"{directory}: an adapter for {peft}, but this run writes "
                                  f"{self.peft_config}")
    return jax.tree.map(jnp.asarray, phi)


def load(path: str) -> Run:
  """A trained run from its workdir, its checkpoints/ folder or one step folder
  (the latest step unless a step folder is given)."""
  return Run(path)
