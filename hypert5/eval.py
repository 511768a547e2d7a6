"""Evaluates a trained hypermodel, or any baseline, on a benchmark mixture.

  python -m hypert5.eval --config=configs/NAME.py --checkpoint=DIR [--output=DIR]
      [--config.eval.mixture=p3_heldout_score_eval] [--save_phi=DIR] [--load_phi=DIR]

DIR is a training workdir (or its checkpoints/ or one step folder) of the
config's experiment, or, for a plain downstream T5, a model checkpoint
(native or HuggingFace). The hypermodel generates phi once per task (per
few-shot set) and reuses it for every query of that task (the paper's
inference mode, section 3.1); --save_phi writes those phi as adapters and
--load_phi reuses them.

Each task is scored as it declares (its SeqIO `metric_fns` and `postprocess_fn`,
hypert5_tasks/scoring.py): metric functions of (targets, scores) by rank
classification (summed answer log-likelihood per choice, argmax), those of
(targets, predictions) by greedy generation. The mixture's declared benchmark
says how task scores add up (P3: ANLI rounds, then datasets; MetaICL: seeds,
then tasks; S-NI: ROUGE-L with exact match; otherwise the mean over tasks) and
which split is read. A newly registered mixture is evaluated the same way.
Writes results.json, results.md and predictions.jsonl under --output, all at
once at the end (no partial results).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import shutil
import sys
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from hypert5 import adapters, api, cli, decoding, experiment
from hypert5.errors import CheckpointError, ConfigError, EvalError



def define_flags() -> None:
  config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
  flags.DEFINE_string("checkpoint", None, "Workdir / checkpoint of the run, or a T5 model dir.")
  flags.DEFINE_string("output", None, "Results folder (default: CHECKPOINT/eval_<mixture>).")
  flags.DEFINE_string("save_phi", None, "Write each task's phi as an adapter under this folder.")
  flags.DEFINE_string("load_phi", None, "Use the phi adapters saved under this folder.")


FLAGS = flags.FLAGS


# Every parameter part of a run, or a T5 model for a downstream-only experiment.
load_params = api.load_params


# -- Data -----------------------------------------------------------------------


def mixture_tasks(mixture: str, form: str) -> list:
  import seqio  # pylint: disable=import-outside-toplevel
  from hypert5 import data  # pylint: disable=import-outside-toplevel
  try:
    name = data.resolve_mixture(mixture, form)
    provider = seqio.get_mixture_or_task(name)
  except ValueError:
    from hypert5_tasks import forms  # pylint: disable=import-outside-toplevel
    name = mixture if form == "hyper" else forms.name_for(mixture, form)
    known = sorted(n for n in seqio.MixtureRegistry.names() if "test" in n or "eval" in n)
    raise EvalError(f"unknown mixture {name!r}; evaluation mixtures include "
                    f"{', '.join(k for k in known if not k.endswith(('_concat', '_xonly')))}"
                    ) from None
  return list(getattr(provider, "tasks", [provider]))


_truncate = api.truncate  # the API cuts queries and choices alike


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
    examples.append(example)
    if max_examples and len(examples) >= max_examples:
      break
  if not examples:
    raise EvalError(f"task {task.name!r}: the {split!r} split is empty")
  return examples


# -- Scoring --------------------------------------------------------------------


@dataclasses.dataclass
class Evaluator:
  """Runs one experiment's models over examples with a fixed batch shape."""
  models: experiment.Models
  params: dict
  vocabulary: object
  lengths: dict
  batch_size: int
  max_decode_length: int
  per_query_phi: bool = False  # regenerate phi for every query (testing the cache)
  phi_cache: dict = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    self.eos = self.models.downstream.config.eos_token_id

  def phi_for(self, hyper_inputs: list[int] | None):
    """phi (batch axis 1) for one few-shot set: generated once, then cached."""
    if self.models.hyper is None:
      return experiment.compute_phi(self.models, self.params, {}, deterministic=True)
    key = tuple(hyper_inputs)
    if key not in self.phi_cache:
      ids, _ = decoding.pad_batch([_truncate(hyper_inputs, self.lengths["hyper_inputs"],
                                             self.eos)], self.lengths["hyper_inputs"])
      self.phi_cache[key] = api.generate_phi(self.models, self.params["hyper"], ids)
    return self.phi_cache[key]

  def _batch_phi(self, group: list[dict]):
    if self.per_query_phi and self.models.hyper is not None:
      ids, _ = decoding.pad_batch(
          [_truncate(e["hyper_inputs"], self.lengths["hyper_inputs"], self.eos) for e in group]
          + [[self.eos]] * (self.batch_size - len(group)), self.lengths["hyper_inputs"])
      return api.generate_phi(self.models, self.params["hyper"], ids)
    return self.phi_for(group[0].get("hyper_inputs"))

  def _groups(self, examples):
    """Batches of examples sharing one few-shot set."""
    by_set = collections.OrderedDict()
    for i, e in enumerate(examples):
      by_set.setdefault(tuple(e.get("hyper_inputs", ())), []).append(i)
    for indices in by_set.values():
      for start in range(0, len(indices), self.batch_size):
        yield indices[start:start + self.batch_size]

  def rank(self, examples: list[dict]) -> list[dict]:
    """Rank classification: the answer choice with the highest summed log-likelihood."""
    rows = [(i, c) for i, e in enumerate(examples) for c in range(len(e["answer_choices"]))]
    if any(not e["answer_choices"] for e in examples):
      raise EvalError("rank classification needs answer choices on every example")
    choice_ids = {}
    for i, c in rows:
      text = examples[i]["answer_choices"][c]
      choice_ids[(i, c)] = _truncate(self.vocabulary.encode(text) + [self.eos],
                                     self.lengths["targets"], self.eos)
    scores = collections.defaultdict(dict)
    model = self.models.downstream
    row_batch = self.batch_size
    for group in self._groups(examples):
      group_rows = [(i, c) for i in group for c in range(len(examples[i]["answer_choices"]))]
      for start in range(0, len(group_rows), row_batch):
        chunk = group_rows[start:start + row_batch]
        pad = row_batch - len(chunk)
        inputs, _ = decoding.pad_batch(
            [_truncate(examples[i]["inputs"], self.lengths["inputs"], self.eos) for i, _ in chunk]
            + [[self.eos]] * pad, self.lengths["inputs"])
        targets, weights = decoding.pad_batch([choice_ids[r] for r in chunk] + [[]] * pad,
                                              self.lengths["targets"])
        if self.per_query_phi and self.models.hyper is not None:
          phi = self._batch_phi([examples[i] for i, _ in chunk])
        else:
          phi = self.phi_for(examples[group[0]].get("hyper_inputs"))
        ll = np.asarray(decoding.log_likelihood(model, self.params["downstream"], inputs,
                                                targets, weights, phi))
        for (i, c), value in zip(chunk, ll):
          scores[i][c] = float(value)
    out = []
    for i, e in enumerate(examples):
      per_choice = [scores[i][c] for c in range(len(e["answer_choices"]))]
      best = int(np.argmax(per_choice))  # ties go to the first choice
      out.append({"prediction": e["answer_choices"][best], "prediction_index": best,
                  "scores": per_choice})
    return out

  def generate(self, examples: list[dict]) -> list[dict]:
    """Greedy decoding, one fixed-shape batch at a time."""
    predictions = [None] * len(examples)
    model = self.models.downstream
    for group in self._groups(examples):
      pad = self.batch_size - len(group)
      inputs, _ = decoding.pad_batch(
          [_truncate(examples[i]["inputs"], self.lengths["inputs"], self.eos) for i in group]
          + [[self.eos]] * pad, self.lengths["inputs"])
      phi = self._batch_phi([examples[i] for i in group])
      tokens = np.asarray(decoding.generate(model, self.params["downstream"], inputs,
                                            max_length=self.max_decode_length, phi=phi))
      for row, i in enumerate(group):
        predictions[i] = {"prediction": self.vocabulary.decode(
            [int(t) for t in _until_eos(tokens[row], self.eos)])}
    return predictions


def _until_eos(tokens, eos: int):
  out = []
  for t in tokens:
    if t == eos:
      break
    out.append(t)
  return [t for t in out if t > 0]


# -- Metrics ----------------------------------------------------------------------


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
  from hypert5_tasks import forms  # pylint: disable=import-outside-toplevel
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
  from hypert5_tasks import scoring  # pylint: disable=import-outside-toplevel
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
  models = experiment.build_models(config)
  # Unknown mixtures and tasks without metrics fail before loading.
  declared(mixture_tasks(eval_mixture(config), experiment.data_form(config)))
  params = load_params(config, checkpoint, models)
  results, predictions = evaluate_params(config, models, params, name=name,
                                         per_query_phi=per_query_phi, save_phi=save_phi,
                                         load_phi=load_phi, progress=progress,
                                         context_of=context_of)
  results["checkpoint"] = os.path.abspath(checkpoint)
  return results, predictions


def declared(tasks: list) -> list:
  """`tasks`, each checked to declare how it is scored."""
  from hypert5_tasks import scoring  # pylint: disable=import-outside-toplevel
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
  from tqdm import tqdm  # pylint: disable=import-outside-toplevel
  from hypert5_tasks import scoring  # pylint: disable=import-outside-toplevel
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
  per_task, predictions, seconds_per_query = {}, [], []
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
                                     models.downstream.config)
      evaluator.phi_cache[tuple(examples[0]["hyper_inputs"])] = jax.tree.map(jnp.asarray, phi)
    start = time.perf_counter()
    outputs = {}
    if task.score_metric_fns:
      outputs["rank"] = evaluator.rank(examples)
    if task.predict_metric_fns:
      outputs["generate"] = evaluator.generate(examples)
    seconds_per_query.append((time.perf_counter() - start) / len(examples))
    per_task[task.name] = score_task(task, examples, outputs)
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
  return results, predictions


def write_results(output: str, results: dict, predictions: list[dict]) -> None:
  """results.json, results.md, predictions.jsonl: written together, or not at all."""
  output = os.path.abspath(output)
  staging = output + ".partial"
  shutil.rmtree(staging, ignore_errors=True)
  os.makedirs(staging)
  with open(os.path.join(staging, "predictions.jsonl"), "w") as f:
    for p in predictions:
      f.write(json.dumps(p) + "\n")
  with open(os.path.join(staging, "results.md"), "w") as f:
    f.write(f"# {results['mixture']} ({results['benchmark']})\n\n")
    f.write(format_table(results["benchmark"], {results["name"]: results}) + "\n")
  with open(os.path.join(staging, "results.json"), "w") as f:
    json.dump(results, f, indent=2)
  if os.path.exists(output):
    old = f"{output}.old-{int(time.time())}"
    os.rename(output, old)
    os.rename(staging, output)
    shutil.rmtree(old, ignore_errors=True)
  else:
    os.rename(staging, output)


def main(argv):
  del argv
  cli.quiet_logs()
  config = FLAGS.config
  try:
    results, predictions = evaluate(config, FLAGS.checkpoint, save_phi=FLAGS.save_phi,
                                    load_phi=FLAGS.load_phi)
  except (EvalError, CheckpointError, ConfigError, adapters.AdapterError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)
  output = FLAGS.output or os.path.join(FLAGS.checkpoint, f"eval_{results['mixture']}")
  write_results(output, results, predictions)
  print(format_table(results["benchmark"], {results["name"]: results}))
  print(f"wrote {output}/results.json")


if __name__ == "__main__":
  define_flags()
  flags.mark_flags_as_required(["config", "checkpoint"])
  app.run(main)
