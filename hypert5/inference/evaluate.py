"""Evaluates a trained hypermodel, or any baseline, on a benchmark mixture
(`python -m hypert5.eval` is its command).

  results, predictions = evaluate(config, checkpoint, save_phi=None, load_phi=None)
  write_results(output, results, predictions)

checkpoint is a training workdir (or its checkpoints/ or one step folder) of the
config's experiment, or, for a plain downstream T5, a model checkpoint (native
or HuggingFace). The hypermodel generates phi once per task (per few-shot set)
and reuses it for every query of that task (the paper's inference mode, section
3.1); `save_phi` writes those phi as adapters and `load_phi` reuses them.

Each task is scored as it declares (its SeqIO `metric_fns` and `postprocess_fn`,
tasks/scoring.py): metric functions of (targets, scores) by rank classification
(summed answer log-likelihood per choice, argmax), those of (targets,
predictions) by greedy generation, both through the one inference path
(infer.py) that the Python API uses. The mixture's declared benchmark says how
task scores add up (P3: ANLI rounds, then datasets; MetaICL: seeds, then tasks;
S-NI: ROUGE-L with exact match; otherwise the mean over tasks) and which split is
read. A newly registered mixture is evaluated the same way. write_results writes
results.json, results.md and predictions.jsonl together, or not at all.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
import shutil
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import seqio
import tensorflow as tf
from tqdm import tqdm

import hypert5_tasks  # noqa: F401  (registers the tasks)
from hypert5 import experiment, files
from hypert5.errors import AdapterError, DataError, EvalError, HyperT5Error
from hypert5.formats import adapters
from hypert5.inference import api, infer
from hypert5.text import vocab
from hypert5_tasks import forms, scoring

log = logging.getLogger("hypert5.eval")

# -- Data -----------------------------------------------------------------------


def mixture_tasks(mixture: str, form: str) -> list:
  try:
    name = forms.resolve_mixture(mixture, form)
    provider = seqio.get_mixture_or_task(name)
  except ValueError:
    name = mixture if form == "hyper" else forms.name_for(mixture, form)
    known = sorted(n for n in seqio.MixtureRegistry.names() if "test" in n or "eval" in n)
    raise EvalError(f"unknown mixture {name!r}; evaluation mixtures include "
                    f"{', '.join(k for k in known if not k.endswith(('_concat', '_xonly')))}"
                    ) from None
  return list(getattr(provider, "tasks", [provider]))


def _strings(value) -> list[str]:
  if isinstance(value, (bytes, str)):
    value = [value]
  return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in value]


_READ_CACHE: dict = {}  # (task, split, lengths, max_examples) -> examples


def read_task(task, split: str, lengths: dict, max_examples: int) -> list[dict]:
  """A task's evaluation examples, in order, as plain Python values (read once
  per process: evaluating several models reuses them; do not modify them)."""
  lengths = {k: v for k, v in lengths.items() if k in task.output_features}
  key = (task.name, split, tuple(sorted(lengths.items())), max_examples)
  if key not in _READ_CACHE:
    _READ_CACHE[key] = _read_task(task, split, lengths, max_examples)
  return _READ_CACHE[key]


def _read_task(task, split: str, lengths: dict, max_examples: int) -> list[dict]:
  if split not in task.splits:
    others = [s for s in ("test", "validation") if s in task.splits]
    if not others:
      raise EvalError(f"task {task.name!r} has no {split!r} split (it has {list(task.splits)})")
    split = others[0]
  try:
    return _read_examples(task, split, lengths, max_examples)
  except HyperT5Error:
    raise
  except (tf.errors.OpError, ValueError, OSError, KeyError) as e:  # a reader's, through TF
    message = (getattr(e, "message", None) or str(e)).strip().splitlines()
    raise DataError(f"task {task.name!r} ({split}): {type(e).__name__}: "
                    f"{message[-1] if message else ''}") from None


def _read_examples(task, split: str, lengths: dict, max_examples: int) -> list[dict]:
  dataset = task.get_dataset(sequence_length=lengths, split=split, shuffle=False,
                             num_epochs=1, use_cached=False)
  examples = []
  for raw in dataset.as_numpy_iterator():
    example = {
        "inputs": list(raw["inputs"]), "targets": list(raw["targets"]),
        "inputs_pretokenized": _strings(raw["inputs_pretokenized"])[0],
        "targets_pretokenized": _strings(raw["targets_pretokenized"])[0],
        "references": _strings(raw.get("references", raw["targets_pretokenized"])),
        "answer_choices": _strings(raw.get("answer_choices", [])),
        "label": int(raw.get("label", -1)),
    }
    if "hyper_inputs" in raw:
      example["hyper_inputs"] = list(raw["hyper_inputs"])
      example["context_fit"] = [int(v) for v in raw[forms.CONTEXT_FIT]]
    examples.append(example)
    if max_examples and len(examples) >= max_examples:
      break
  if not examples:
    raise EvalError(f"task {task.name!r}: the {split!r} split is empty")
  return examples


# -- Scoring --------------------------------------------------------------------


@dataclasses.dataclass
class Evaluator:
  """Ranks and decodes a task's examples with one experiment's models, through the
  one inference path (infer.Inference), phi generated once per few-shot set."""
  models: experiment.Models
  params: dict
  vocabulary: object  # text.vocab.Vocabulary, or a SeqIO SentencePieceVocabulary
  lengths: dict
  batch_size: int
  max_decode_length: int
  per_query_phi: bool = False  # regenerate phi for every query (testing the cache)
  phi_cache: dict = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    self.vocabulary = vocab.as_vocabulary(self.vocabulary)
    self.inference = infer.Inference(self.models.downstream, self.models.hyper,
                                     self.vocabulary, self.lengths, self.batch_size,
                                     self.max_decode_length)

  def phi_for(self, hyper_inputs: list[int] | None):
    """phi (batch axis 1) for one few-shot set: generated once, then cached."""
    if self.models.hyper is None:
      return experiment.compute_phi(self.models, self.params, {}, deterministic=True)
    key = tuple(hyper_inputs)
    if key not in self.phi_cache:
      self.phi_cache[key] = self.inference.phi(self.params["hyper"], [hyper_inputs])
    return self.phi_cache[key]

  def _by_context(self, examples) -> list[list[int]]:
    """Indices of the examples that share a few-shot set, set by set."""
    by_set = collections.OrderedDict()
    for i, e in enumerate(examples):
      by_set.setdefault(tuple(e.get("hyper_inputs", ())), []).append(i)
    return list(by_set.values())

  def _phi_args(self, examples, row_examples: list[int]) -> dict:
    """How the rows of one few-shot set get phi: shared, or each its own."""
    if self.per_query_phi and self.models.hyper is not None:
      return {"hyper_params": self.params["hyper"],
              "contexts": [examples[i]["hyper_inputs"] for i in row_examples]}
    return {"phi": self.phi_for(examples[row_examples[0]].get("hyper_inputs"))}

  def rank(self, examples: list[dict]) -> list[dict]:
    """Rank classification: the answer choice with the highest summed log-likelihood."""
    if any(not e["answer_choices"] for e in examples):
      raise EvalError("rank classification needs answer choices on every example")
    scores = [[0.0] * len(e["answer_choices"]) for e in examples]
    for group in self._by_context(examples):
      keys = [(i, c) for i in group for c in range(len(examples[i]["answer_choices"]))]
      rows = [(examples[i]["inputs"],
               self.inference.tokenize(examples[i]["answer_choices"][c], "targets"))
              for i, c in keys]
      values = self.inference.score(self.params["downstream"], rows,
                                    **self._phi_args(examples, [i for i, _ in keys]))
      for (i, c), value in zip(keys, values):
        scores[i][c] = float(value)
    out = []
    for e, per_choice in zip(examples, scores):
      best = int(np.argmax(per_choice))  # ties go to the first choice
      out.append({"prediction": e["answer_choices"][best], "prediction_index": best,
                  "scores": per_choice})
    return out

  def generate(self, examples: list[dict]) -> list[dict]:
    """Greedy decoding, one fixed-shape batch at a time."""
    predictions = [None] * len(examples)
    for group in self._by_context(examples):
      answers = self.inference.generate(self.params["downstream"],
                                        [examples[i]["inputs"] for i in group],
                                        **self._phi_args(examples, group))
      for i, answer in zip(group, answers):
        predictions[i] = {"prediction": answer}
    return predictions


# -- Metrics ----------------------------------------------------------------------


def context_fit(examples: list[dict]) -> dict | None:
  """{"examples_kept", "examples_given"}: how many few-shot examples of a task's
  contexts the hypermodel's input holds (the fewest kept, the most given), or None
  for a form without contexts."""
  fits = [e["context_fit"] for e in examples if "context_fit" in e]
  if not fits:
    return None
  return {"examples_kept": min(k for k, _ in fits), "examples_given": max(n for _, n in fits)}


def score_task(task, examples: list[dict], outputs: dict[str, list[dict]]) -> dict:
  """{metric: value} for one task from its declared metric functions.

  outputs: "rank" (Evaluator.rank) for score metrics, "generate"
  (Evaluator.generate) for prediction metrics."""
  targets = [task.postprocess_fn(e["targets_pretokenized"], example=e, is_target=True)
             for e in examples]
  values = {}
  if task.score_metric_fns:
    scores = [o["scores"] for o in outputs["rank"]]
    for fn in task.score_metric_fns:
      values.update(fn(targets, scores))
  if task.predict_metric_fns:
    predictions = [task.postprocess_fn(o["prediction"], example=e, is_target=False)
                   for e, o in zip(examples, outputs["generate"])]
    for fn in task.predict_metric_fns:
      values.update(fn(targets, predictions))
  return values


def base_task_name(task_name: str) -> str:
  """The task's name without its form suffix (_concat, _xonly)."""
  for suffix in forms.FORM_SUFFIX.values():
    if suffix and task_name.endswith(suffix):
      return task_name[:-len(suffix)]
  return task_name


def aggregate(benchmark, per_task: dict[str, dict]) -> dict:
  """The benchmark's headline numbers (groups and average) from per-task scores."""
  return benchmark.aggregate({base_task_name(k): v for k, v in per_task.items()})


def format_table(benchmark: str, rows: dict[str, dict]) -> str:
  """Markdown table in the shape of the paper's Tables 1 (P3), 3 (MetaICL) and 4 (S-NI):
  one row per model, one column per dataset/task group, then the average.

  benchmark: its name (results["benchmark"]); its declaration says whether groups
  get columns and what stands beside the average."""
  spec = scoring.find(benchmark)
  columns = []
  for result in rows.values():
    for group in result["groups"]:
      if group not in columns:
        columns.append(group)
  if not spec.table_groups or len(columns) > 12:  # too many tasks: averages only
    columns = []
  header = ["Model"] + columns + ["Avg"]
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" + "---:|" * (len(header) - 1)]
  for name, result in rows.items():
    cells = [f"{result['groups'].get(c, float('nan')):.1f}" for c in columns]
    cells.append(f"{result['average']:.1f}")
    for label, key in spec.table_extras:
      cells[-1] += f" ({label} {result.get(key, float('nan')):.1f})"
    lines.append("| " + " | ".join([name] + cells) + " |")
  return "\n".join(lines)


# -- Driver -----------------------------------------------------------------------


def evaluate(config, checkpoint: str, *, name: str | None = None, per_query_phi: bool = False,
             save_phi: str | None = None, load_phi: str | None = None,
             progress: bool = True,
             context_of: Callable[[str], str] | None = None) -> tuple[dict, list[dict]]:
  """(results, predictions) of one model on config.eval.mixture (see evaluate_params)."""
  experiment.validate(config)
  # Unknown mixtures and tasks without metrics fail before loading.
  tasks = declared(mixture_tasks(eval_mixture(config), experiment.data_form(config)))
  experiment.size_vocabulary(config, tasks[0].output_features["targets"].vocabulary.vocab_size)
  models = experiment.build_models(config)
  params = api.load_params(config, checkpoint, models)
  results, predictions = evaluate_params(config, models, params, name=name,
                                         per_query_phi=per_query_phi, save_phi=save_phi,
                                         load_phi=load_phi, progress=progress,
                                         context_of=context_of)
  results["checkpoint"] = os.path.abspath(checkpoint)
  return results, predictions


def declared(tasks: list) -> list:
  """`tasks`, each checked to declare how it is scored."""
  try:
    scoring.check_declared(tasks)
  except ValueError as e:
    raise EvalError(str(e)) from None
  return tasks


def eval_mixture(config) -> str:
  return config.eval.mixture or config.data.mixture.replace("_train", "_test")


def evaluate_params(config, models: experiment.Models, params: dict, *,
                    name: str | None = None, per_query_phi: bool = False,
                    save_phi: str | None = None, load_phi: str | None = None,
                    progress: bool = True,
                    context_of: Callable[[str], str] | None = None) -> tuple[dict, list[dict]]:
  """(results, predictions) of given parameters (host arrays or fully addressable
  device arrays) on config.eval.mixture; also used during training.

  context_of: a control. Maps a task's name to another task of the mixture whose
  few-shot examples the hypermodel reads instead of the task's own.

  results["seconds_per_query"]: the median over tasks (the first, which compiles,
  left out) of the time spent scoring a task's queries, phi generation included,
  divided by their number."""

  mixture = eval_mixture(config)
  form = experiment.data_form(config)
  tasks = declared(mixture_tasks(mixture, form))
  benchmark = scoring.benchmark_of(mixture)
  by_name = {task.name: task for task in tasks}
  if config.eval.max_tasks:
    tasks = tasks[:config.eval.max_tasks]
  lengths = {"hyper_inputs": config.data.hyper_inputs_length,
             "inputs": config.data.inputs_length, "targets": config.data.targets_length}
  vocabulary = tasks[0].output_features["targets"].vocabulary
  evaluator = Evaluator(models, params, vocabulary, lengths, config.eval.batch_size,
                        config.eval.max_decode_length or config.data.targets_length,
                        per_query_phi=per_query_phi)
  if models.hyper is not None:
    check_phi_folders(tasks, models, save_phi, load_phi)
  per_task, predictions, seconds_per_query, fits = {}, [], [], {}
  split = config.eval.split or benchmark.split
  for task in tqdm(tasks, desc=f"eval {mixture}", disable=not progress, unit="task"):
    examples = read_task(task, split, lengths, config.eval.max_examples)
    if context_of is not None and models.hyper is not None:
      other = by_name[context_of(task.name)]
      # The same read as the other task's own turn: cached, not read twice.
      other_context = read_task(other, split, lengths,
                                config.eval.max_examples)[0]["hyper_inputs"]
      examples = [dict(e, hyper_inputs=other_context) for e in examples]
    if load_phi and models.hyper is not None:
      _, phi = adapters.load_adapter(os.path.join(load_phi, task.name),
                                     models.downstream.config)  # checked: check_phi_folders
      evaluator.phi_cache[tuple(examples[0]["hyper_inputs"])] = jax.tree.map(jnp.asarray, phi)
    start = time.perf_counter()
    outputs = {}
    if task.score_metric_fns:
      outputs["rank"] = evaluator.rank(examples)
    if task.predict_metric_fns:
      outputs["generate"] = evaluator.generate(examples)
    seconds_per_query.append((time.perf_counter() - start) / len(examples))
    per_task[task.name] = score_task(task, examples, outputs)
    fit = context_fit(examples)
    if fit is not None:
      fits[task.name] = fit
      if fit["examples_kept"] < fit["examples_given"]:
        log.warning("%s: %d of %d few-shot examples fit the hypermodel's %d input tokens "
                    "(--config.data.hyper_inputs_length)", task.name, fit["examples_kept"],
                    fit["examples_given"], lengths["hyper_inputs"])
    if save_phi and models.hyper is not None:
      adapters.save_native(os.path.join(save_phi, task.name),
                           evaluator.phi_for(examples[0]["hyper_inputs"]),
                           models.downstream.peft_config, models.downstream.config)
    shown = outputs.get("generate") or outputs["rank"]
    for e, o in zip(examples, shown):
      predictions.append({"task": task.name, "inputs": e["inputs_pretokenized"],
                          "references": e["references"], "prediction": o["prediction"]})
  results = {"name": name or config.experiment, "benchmark": benchmark.name,
             "mixture": mixture, "experiment": config.experiment,
             "tasks": per_task, **aggregate(benchmark, per_task),
             "seconds_per_query": float(np.median(seconds_per_query[1:] or seconds_per_query))}
  if fits:
    results["context_fit"] = fits
  return results, predictions


def check_phi_folders(tasks: list, models: experiment.Models, save_phi: str | None,
                      load_phi: str | None) -> None:
  """Before any work: --save_phi writes SAVE_PHI/TASK, so none may exist yet;
  --load_phi reads LOAD_PHI/TASK, each an adapter of this model's PEFT."""
  if save_phi:
    existing = [t.name for t in tasks if os.path.exists(os.path.join(save_phi, t.name))]
    if existing:
      raise EvalError(f"--save_phi={save_phi} already holds {len(existing)} of this "
                      f"mixture's tasks' phi (e.g. {os.path.join(save_phi, existing[0])}); "
                      "pass another folder, or remove them")
  if load_phi:
    for task in tasks:
      path = os.path.join(load_phi, task.name)
      peft, _ = adapters.load_adapter(path, models.downstream.config)
      if peft != models.downstream.peft_config:
        raise AdapterError(f"{path}: phi for {peft}, but this run's model reads "
                           f"{models.downstream.peft_config}; --load_phi needs phi saved "
                           "by a run of the same PEFT kind and size")


def write_results(output: str, results: dict, predictions: list[dict]) -> None:
  """results.json, results.md, predictions.jsonl: written together, or not at all. A
  NaN or infinite number in them is an EvalError naming where (JSON cannot hold it)."""
  output = os.path.abspath(output)
  results_json = files.to_json(results, EvalError, "results", indent=2)
  prediction_lines = [files.to_json(p, EvalError, "predictions") + "\n" for p in predictions]
  staging = output + ".partial"
  shutil.rmtree(staging, ignore_errors=True)
  os.makedirs(staging)
  with open(os.path.join(staging, "predictions.jsonl"), "w") as f:
    f.writelines(prediction_lines)
  with open(os.path.join(staging, "results.md"), "w") as f:
    f.write(f"# {results['mixture']} ({results['benchmark']})\n\n")
    f.write(format_table(results["benchmark"], {results["name"]: results}) + "\n")
  with open(os.path.join(staging, "results.json"), "w") as f:
    f.write(results_json)
  if os.path.exists(output):
    old = f"{output}.old-{int(time.time())}"
    os.rename(output, old)
    os.rename(staging, output)
    shutil.rmtree(old, ignore_errors=True)
  else:
    os.rename(staging, output)
