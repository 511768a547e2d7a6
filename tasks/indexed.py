"""The training stream of a SeqIO mixture: any batch, computed directly from its position.

    stream = IndexedMixture("sni_def_train", split="train", seed=0,
                            lengths={"hyper_inputs": 1024, "inputs": 384, "targets": 128})
    batch = stream.batch(position=100_000, batch_size=256, shard_index=h, num_shards=H)

Row g of the stream (global batch b holds rows b*B ... b*B + B - 1) is an example
of one task, chosen by the mixing rates (sampling.Mixing), at that task's next
position (sampling.epoch_examples: every example once per epoch). A host computes
only its rows, reading them from the example cache (example_cache.py) by random
access: memory and start-up do not grow with the number of tasks mixed, a
resumed run starts at its position at once, and the global batches are the same
for any number of hosts. The cost of a batch is that of its own examples.

What runs at read time is what a task's SeqIO preprocessors do after its cache
point, done here in numpy with the semantics of their TensorFlow versions:

  fewshot.draw_within_task  the context of a record is up to `num_shots` other
                            records of its task_name: the next ones in that
                            task's order for the epoch (a fresh pseudo-random
                            order every epoch), never the record itself or a copy
                            of it; `leading` segments (a definition) come first
  forms.render              the hyper / concat / xonly forms and their truncation
                            rules (fewshot.fit_segments)
  lm.prefix_and_continuation, lm.drop_tokens   their random cut and drops, drawn
                            from (seed, task, position)
  append_eos_after_trim     trim to the length, then EOS

The cache point: SeqIO's CacheDatasetPlaceholder when a task has one (the steps
after it must be the ones above); otherwise the trailing run of the steps above,
so every step before it runs once, when the cache is built. A few-shot task
(forms.add_task) is cached as its source's records; a CACLM task as its spans
after `caclm_example`.

Packing (downstream forms only): rows are filled greedily in stream order, and
the next batch starts at the first example that did not fit; the stream's state
is then (batch, example) and is saved with the checkpoint.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import inspect
import json
import multiprocessing
import os
import re
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import seqio
import tensorflow as tf
from absl import logging
from tqdm import tqdm

import hypert5_tasks  # noqa: F401
from hypert5.errors import ConfigError, DataError
from hypert5_tasks import example_cache, fewshot, forms, lm, sampling

RATES_FOLDER = "_rates"
TASK_FEATURES = ("hyper_inputs", "inputs", "targets")


# ---------------------------------------------------------------------------
# Recipes: where a task is cached and what runs after.


def _unwrap(step) -> tuple[Callable, dict]:
  keywords = {}
  while isinstance(step, functools.partial):
    keywords = {**step.keywords, **keywords}
    step = step.func
  return step, keywords


def _defaults(function) -> dict:
  return {k: p.default for k, p in inspect.signature(function).parameters.items()
          if p.default is not inspect.Parameter.empty}


_READ_TIME = (fewshot.draw_within_task, forms.render, seqio.preprocessors.append_eos_after_trim,
              lm.prefix_and_continuation, lm.drop_tokens)


@dataclasses.dataclass(frozen=True)
class Recipe:
  """How a task's examples are made: the steps cached once, and what runs per read."""
  kind: str  # example_cache.RECORDS or TOKENS
  cached_steps: tuple  # preprocessors before the cache point
  form: str | None = None  # records: hyper, concat or xonly
  num_shots: int | None = None  # records: contexts drawn within the task
  leading: tuple[str, ...] = ()  # segments before a drawn context
  lm_step: tuple | None = None  # tokens: ("prefix", min, max) or ("drop", rate)
  eos: bool = False


def recipe_of(task: seqio.Task) -> Recipe:
  """The task's recipe, or ConfigError naming a step the stream cannot run."""
  steps = list(task.preprocessors)
  placeholders = [i for i, s in enumerate(steps) if isinstance(s, seqio.CacheDatasetPlaceholder)]
  if placeholders:
    cut = placeholders[0]
    after = steps[cut + 1:]
    unknown = [s for s in after if _unwrap(s)[0] not in _READ_TIME]
    if unknown:
      raise ConfigError(
          f"task {task.name}: preprocessor {example_cache.describe(unknown[0])} comes after its "
          "CacheDatasetPlaceholder, and the training stream runs only "
          f"{', '.join(f.__name__ for f in _READ_TIME)} after the cache point; move it "
          "before the placeholder (it then runs once, when the cache is built)")
    before = steps[:cut]
  else:
    cut = len(steps)
    while cut and _unwrap(steps[cut - 1])[0] in _READ_TIME:
      cut -= 1
    before, after = steps[:cut], steps[cut:]
  fields = {}
  for step in after:
    function, keywords = _unwrap(step)
    arguments = {**_defaults(function), **keywords}
    if function is fewshot.draw_within_task:
      fields.update(num_shots=int(arguments["num_shots"]),
                    leading=tuple(arguments.get("leading") or ()))
    elif function is forms.render:
      fields["form"] = arguments["form"]
    elif function is lm.prefix_and_continuation:
      fields["lm_step"] = ("prefix", int(arguments["min_prefix"]), int(arguments["max_prefix"]))
    elif function is lm.drop_tokens:
      fields["lm_step"] = ("drop", float(arguments["drop_rate"]))
    else:
      fields["eos"] = True
  kind = example_cache.RECORDS if "form" in fields else example_cache.TOKENS
  if kind == example_cache.TOKENS and "num_shots" in fields:
    raise ConfigError(f"task {task.name}: draw_within_task without forms.render")
  return Recipe(kind=kind, cached_steps=tuple(before), **fields)


def cache_spec(task: seqio.Task, split: str, recipe: Recipe) -> example_cache.CacheSpec:
  """A few-shot task's forms share one cache, kept under the hyper form's name."""
  base = task.name
  if recipe.form and recipe.form != "hyper" and base.endswith(forms.FORM_SUFFIX[recipe.form]):
    base = base[:-len(forms.FORM_SUFFIX[recipe.form])]
  return example_cache.CacheSpec(task=task, base=base, split=split, kind=recipe.kind,
                                 steps=recipe.cached_steps)


# ---------------------------------------------------------------------------
# One task's examples, by position.


def _fit(segments: Sequence[np.ndarray], budget: int | None, keep_first: bool) -> np.ndarray:
  """The leading segments that fit in `budget` tokens, joined (fewshot.fit_segments'
  rule: whole segments; only a first segment longer than the budget is cut, and only
  with keep_first). A Python loop: contexts hold at most a few dozen segments."""
  if budget is None:
    kept = len(segments)
  else:
    kept, used = 0, 0
    for segment in segments:
      used += len(segment)
      if used > budget:
        break
      kept += 1
    if keep_first and segments and not kept:
      return np.asarray(segments[0][:budget], np.int32)
  if not kept:
    return np.zeros(0, np.int32)
  return np.concatenate(segments[:kept]) if kept > 1 else np.asarray(segments[0])


class TaskStream:
  """A task's examples at task-local positions (every example once per epoch)."""

  # Slots, not a __dict__: a batch of a many-task mixture touches one stream per row,
  # and compact objects keep those touches in the CPU's caches.
  __slots__ = ("task", "recipe", "cache", "name", "size", "seed", "lengths", "features",
               "eos_id", "reads", "_eos_features", "_room", "_records", "_draws", "_epoch",
               "_order", "_leading", "_form", "_eos", "_num_shots")

  def __init__(self, task: seqio.Task, recipe: Recipe, cache: example_cache.CachedTask,
               lengths: Mapping[str, int], seed: int):
    self.task, self.recipe, self.cache = task, recipe, cache
    self.name = task.name
    self.size = cache.size
    self.seed = int(seed)
    self.lengths = dict(lengths)
    self.features = [k for k in TASK_FEATURES if k in task.output_features]
    self.eos_id = task.output_features["targets"].vocabulary.eos_id
    self._eos_features = {k for k in self.features if task.output_features[k].add_eos}
    # Tokens a feature keeps before its EOS (append_eos_after_trim); None: unbounded.
    self._room = {k: None if lengths.get(k) is None else max(lengths[k] - 1, 0)
                  for k in TASK_FEATURES}
    self.reads = 0  # examples assembled (tests count them)
    self._records = recipe.kind == example_cache.RECORDS
    # Contexts drawn within the task, unless its reader attached them (evaluation sets).
    self._draws = bool(self._records and recipe.num_shots
                       and not cache.manifest.get("attached_contexts"))
    self._epoch, self._order = -1, None  # the current epoch's order, kept here
    self._form, self._eos, self._num_shots = recipe.form, recipe.eos, recipe.num_shots
    self._leading = []
    if self._records:
      if self._draws and cache.manifest.get("min_distinct_pairs", 2) < 2:
        raise DataError(f"task {task.name}: a task_name of it has a single distinct example "
                        "(or copies of one), so no few-shot context can be drawn for it")
      self._leading = self._tokenize(recipe.leading)

  def _tokenize(self, texts: Sequence[str]) -> list[np.ndarray]:
    if not texts:
      return []
    vocabulary = self.task.output_features["inputs"].vocabulary
    ids = vocabulary.encode_tf(tf.constant(list(texts)))
    return [np.asarray(row, np.int32) for row in ids.to_list()]

  def examples(self, positions) -> list[dict[str, np.ndarray]]:
    """Task features ({hyper_inputs, inputs, targets}: int32 ids, EOS-terminated) of the
    examples at task-local `positions` [N], in order."""
    return [self.example(int(p)) for p in positions]

  def example(self, position: int) -> dict[str, np.ndarray]:
    """The example at one task-local position (one call per row: a batch of a mixture
    of many tasks holds one or two rows of each)."""
    epoch, offset = divmod(position, self.size)
    if epoch != self._epoch:  # a task's rows come in position order
      self._epoch, self._order = epoch, sampling.permutation(
          self.size, sampling.key(self.seed, "epoch", self.name, epoch))
    piece, row = self.cache.row(self._order.at(offset))
    self.reads += 1
    if self._records:
      return self._record(piece.columns, row, epoch)
    return self._tokens(piece.columns, row, position)

  # -- records ---------------------------------------------------------------

  def _context_records(self, columns, record: int, epoch: int) -> np.ndarray:
    """Up to num_shots other records of the record's task_name, for this epoch."""
    bounds = columns["subtask_offsets"]
    subtask = 0 if len(bounds) == 2 else int(np.searchsorted(bounds, record, side="right") - 1)
    first, size = int(bounds[subtask]), int(bounds[subtask + 1] - bounds[subtask])
    order = sampling.permutation(size, sampling.key(self.seed, "context", self.name, subtask,
                                                    epoch))
    at = int(order.inverse(record - first))
    keys = columns["pair_key"]
    for count in (min(self._num_shots, size - 1), size - 1):
      others = order((at + 1 + np.arange(count)) % size) + first
      others = others[keys[others] != keys[record]][:self._num_shots]
      if len(others):
        return others
    return others  # every other record is a copy: the cache check rules this out

  def _context(self, columns, spans: list[int], record: int, epoch: int) -> list[np.ndarray]:
    tokens = columns["tokens"]
    if self._draws:
      pairs = columns["records"][self._context_records(columns, record, epoch), 6:8].tolist()
      return self._leading + [tokens[a:b] for a, b in pairs]
    return [tokens[a:b] for a, b in columns["context_spans"][spans[8]:spans[9]].tolist()]

  def _ended(self, ids: np.ndarray, feature: str) -> np.ndarray:
    """`ids` as append_eos_after_trim leaves them (when the task appends EOS)."""
    if not self._eos or feature not in self._eos_features:
      return np.asarray(ids, np.int32)
    room = self._room[feature]
    ids = ids if room is None else ids[:room]
    out = np.empty(len(ids) + 1, np.int32)
    out[:-1] = ids
    out[-1] = self.eos_id
    return out

  def _record(self, columns, record: int, epoch: int) -> dict[str, np.ndarray]:
    spans = columns["records"][record].tolist()  # see example_cache.RECORD_COLUMNS
    tokens = columns["tokens"]
    form, room = self._form, self._room
    out = {"targets": self._ended(tokens[spans[2]:spans[3]], "targets")}
    if form == "hyper":
      context = _fit(self._context(columns, spans, record, epoch), room["hyper_inputs"],
                     keep_first=True)
      out["hyper_inputs"] = self._ended(context, "hyper_inputs")
      out["inputs"] = self._ended(tokens[spans[0]:spans[1]], "inputs")
    elif form == "concat":
      query = tokens[spans[4]:spans[5]]
      budget = None if room["inputs"] is None else max(room["inputs"] - len(query), 0)
      ids = _fit(self._context(columns, spans, record, epoch), budget, keep_first=False)
      out["inputs"] = self._ended(np.concatenate([ids, query]), "inputs")
    else:
      out["inputs"] = self._ended(tokens[spans[0]:spans[1]], "inputs")
    return out

  # -- tokens ----------------------------------------------------------------

  def _tokens(self, columns, row: int, position: int) -> dict[str, np.ndarray]:
    spans, tokens = columns["spans"][row].tolist(), columns["tokens"]
    values = {f: tokens[spans[2 * i]:spans[2 * i + 1]]
              for i, f in enumerate(self.cache.manifest["features"])}
    step = self.recipe.lm_step
    if step is not None:
      tokens = values["tokens"]
      if step[0] == "prefix":
        _, low, high = step
        cut = low + sampling.key(self.seed, "cut", self.name, position) % (high - low + 1)
        inputs, targets = tokens[:cut], tokens[cut:]
        if self.lengths.get("inputs"):
          inputs = inputs[len(inputs) - min(len(inputs), self.lengths["inputs"] - 1):]
        values = {"inputs": inputs, "targets": targets}
      else:
        base = sampling.key(self.seed, "drop", self.name, position)
        draws = sampling.uniform(np.uint64(base) ^ np.arange(len(tokens), dtype=np.uint64))
        values = {"inputs": tokens[draws >= step[1]], "targets": tokens}
    return {k: self._ended(v, k) for k, v in values.items() if k in self.features}


# ---------------------------------------------------------------------------
# Rates.


def _rates_path(root: str, mixture: str, split: str) -> str:
  return os.path.join(root, RATES_FOLDER, re.sub(r"[^\w.:#-]", "_", mixture) + f"-{split}.json")


def _data_key(spec: example_cache.CacheSpec) -> str:
  return json.dumps(example_cache.data_files(spec.task, spec.split), sort_keys=True)


def mixture_rates(provider, specs: Mapping[str, example_cache.CacheSpec], root: str,
                  split: str) -> dict[str, float]:
  """{task: rate}. Numbers come from the registry; rates that are functions of the data
  (sizes, filters) are computed once and kept beside the cache, keyed by what the
  task's examples are made from."""
  if not isinstance(provider, seqio.Mixture):
    return {provider.name: 1.0}
  direct = provider.rate_per_task_name
  path = _rates_path(root, provider.name, split)
  try:
    with open(path, encoding="utf-8") as f:
      memo = json.load(f)
  except (OSError, ValueError):
    memo = {}
  nested = any(name in seqio.MixtureRegistry.names() for name in direct)
  rates, changed = {}, False
  for task in provider.tasks:
    rate = direct.get(task.name)
    if isinstance(rate, (int, float)) and not isinstance(rate, bool) and not nested:
      rates[task.name] = float(rate)
      continue
    spec = specs[task.name]
    key = f"{spec.identity}|{_data_key(spec)}"
    entry = memo.get(task.name)
    if entry and entry.get("key") == key:
      rates[task.name] = float(entry["rate"])
      continue
    try:
      rates[task.name] = float(provider.get_rate(task))
    except DataError:
      raise
    except (ValueError, OSError, KeyError) as e:
      raise DataError(f"task {task.name} of mixture {provider.name}: its rate cannot be "
                      f"computed ({e})") from e
    memo[task.name] = {"rate": rates[task.name], "key": key}
    changed = True
  if changed:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    partial = f"{path}.partial-{os.getpid()}"
    with open(partial, "w", encoding="utf-8") as f:
      json.dump(memo, f)
    os.replace(partial, path)
  return rates


# ---------------------------------------------------------------------------
# The mixture.


@dataclasses.dataclass
class Plan:
  """What a mixture's stream reads: its tasks of nonzero rate, their recipes and
  caches, and which caches are missing."""
  name: str
  split: str
  root: str
  provider: seqio.DatasetProviderBase
  tasks: list  # of nonzero rate, in the mixture's order
  recipes: dict
  specs: dict
  rates: dict
  missing: list  # CacheSpecs not built (or built from other data files)

  @property
  def examples(self) -> int:
    return sum(example_cache.CachedTask(self.specs[t.name].folder(self.root)).size
               for t in self.tasks)


def plan(name: str, split: str, cache_dir: str | None = None) -> Plan:
  """Resolves a mixture (or task) into its tasks, recipes, caches and rates; reads no
  examples (rates that are functions of the data are computed once, see mixture_rates)."""
  root = example_cache.cache_root(cache_dir)
  provider = seqio.get_mixture_or_task(name)
  tasks = provider.tasks if isinstance(provider, seqio.Mixture) else [provider]
  recipes = {t.name: recipe_of(t) for t in tasks}
  specs = {t.name: cache_spec(t, split, recipes[t.name]) for t in tasks}
  rates = mixture_rates(provider, specs, root, split)
  kept = [t for t in tasks if rates[t.name] > 0]
  if not kept:
    raise DataError(f"mixture {name}: every task has rate 0")
  for task in kept:
    if split not in task.splits:
      raise ConfigError(f"task {task.name} of {name} has no split {split!r} "
                        f"(it has {list(task.splits)})")
  missing = [specs[t.name] for t in kept if not example_cache.is_current(specs[t.name], root)]
  return Plan(name, split, root, provider, kept, recipes, specs, rates, missing)


class IndexedMixture:
  """A mixture (or one task) as a random-access stream of examples and batches.

  lengths: task feature lengths {hyper_inputs, inputs, targets}.
  build_missing: build missing caches now (with a progress bar); otherwise a
    missing cache is a DataError saying which command builds it.
  """

  def __init__(self, name: str, *, split: str, lengths: Mapping[str, int], seed: int,
               cache_dir: str | None = None, build_missing: bool = True,
               preprocess_hint: str = "python -m hypert5.preprocess"):
    self.name, self.split, self.seed = name, split, int(seed)
    planned = plan(name, split, cache_dir)
    self.root = planned.root
    self.has_hyper_inputs = "hyper_inputs" in planned.provider.output_features
    self.lengths = {k: v for k, v in lengths.items()
                    if self.has_hyper_inputs or k != "hyper_inputs"}
    if planned.missing and not build_missing:
      raise DataError(
          f"mixture {name}: {len(planned.missing)} of its {len(planned.tasks)} tasks are not "
          f"preprocessed under {self.root} (first: {planned.missing[0].base}). Run once: "
          f"{preprocess_hint}")
    if planned.missing:
      build_caches(planned.missing, self.root)
    self.streams = [TaskStream(t, planned.recipes[t.name], example_cache.CachedTask(
        planned.specs[t.name].folder(self.root)), self.lengths, seed) for t in planned.tasks]
    self.rates = np.array([planned.rates[t.name] for t in planned.tasks])
    self.mixing = sampling.Mixing(self.rates, seed)

  @property
  def composition(self) -> dict:
    """What the stream is made of; a run resumed on another composition is refused."""
    return {"mixture": self.name, "split": self.split, "seed": self.seed,
            "tasks": [[s.name, float(r), s.size] for s, r in zip(self.streams, self.rates)]}

  def examples(self, rows) -> list[dict[str, np.ndarray]]:
    """Task features of stream rows [N] (any rows, in any order)."""
    tasks, positions = self.mixing.locate(rows)
    return [self.streams[t].example(p) for t, p in zip(tasks.tolist(), positions.tolist())]

  def batch(self, position: int, *, batch_size: int, shard_index: int = 0,
            num_shards: int = 1) -> dict[str, np.ndarray]:
    """This shard's rows of global batch `position` (batch_size rows in all), as model
    features (HyperFeatureConverter's, unpacked)."""
    if batch_size % num_shards:
      raise ConfigError(f"batch size {batch_size} does not divide over {num_shards} shards")
    local = batch_size // num_shards
    first = position * batch_size + shard_index * local
    return model_features(self.examples(np.arange(first, first + local)), self.lengths)

  def packed_batch(self, first_example: int, *, batch_size: int, shard_index: int = 0,
                   num_shards: int = 1) -> tuple[dict[str, np.ndarray], int]:
    """Rows packed greedily from stream row `first_example` on; returns this shard's
    rows and the row the next batch starts at. Every shard plans the whole batch."""
    if self.has_hyper_inputs:
      raise ConfigError(f"{self.name}: packing is for the downstream-only forms (_concat, "
                        "_xonly); each row of a hyper form carries its own phi")
    if batch_size % num_shards:
      raise ConfigError(f"batch size {batch_size} does not divide over {num_shards} shards")
    rows, next_row, pending = pack(self, first_example, batch_size, self.lengths)
    del pending
    local = batch_size // num_shards
    mine = rows[shard_index * local:(shard_index + 1) * local]
    return packed_features(mine, self.lengths), next_row


def _build_one(task_name: str, split: str, root: str, max_pieces: int | None) -> dict:
  """Builds one task's cache (in a worker process: everything by name)."""
  task = seqio.get_mixture_or_task(task_name)
  return example_cache.build(cache_spec(task, split, recipe_of(task)), root,
                             max_pieces=max_pieces)


def _worker_setup(environment: dict) -> None:
  os.environ.update(environment)
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def build_caches(specs: Sequence[example_cache.CacheSpec], root: str, *, workers: int = 1,
                 max_pieces: int | None = None, progress: bool = True) -> list[dict]:
  """Builds the caches of `specs` (their manifests, in order), with a progress bar;
  `workers` > 1 builds several tasks at once, in processes of their own."""
  logging.info("preprocessing %d task(s) into %s", len(specs), root)
  manifests: list[dict | None] = [None] * len(specs)
  with tqdm(total=len(specs), desc="preprocessing", unit="task", disable=not progress,
            mininterval=2.0) as bar:
    if workers <= 1:
      for i, spec in enumerate(specs):
        bar.set_postfix_str(spec.base[-40:], refresh=False)
        manifests[i] = example_cache.build(spec, root, max_pieces=max_pieces)
        bar.update()
      return manifests
    with concurrent.futures.ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_setup,
        initargs=(dict(os.environ),)) as pool:
      futures = {pool.submit(_build_one, spec.task.name, spec.split, root, max_pieces): i
                 for i, spec in enumerate(specs)}
      for future in concurrent.futures.as_completed(futures):
        manifests[futures[future]] = future.result()
        bar.set_postfix_str(specs[futures[future]].base[-40:], refresh=False)
        bar.update()
  return manifests


# ---------------------------------------------------------------------------
# Model features.


def model_features(examples: Sequence[Mapping[str, np.ndarray]],
                   lengths: Mapping[str, int]) -> dict[str, np.ndarray]:
  """Task features -> HyperFeatureConverter's model features, padded (unpacked)."""
  def padded(key):
    out = np.zeros((len(examples), lengths[key]), np.int32)
    for i, e in enumerate(examples):
      ids = e[key][:lengths[key]]
      out[i, :len(ids)] = ids
    return out

  targets = padded("targets")
  batch = {
      "encoder_input_tokens": padded("inputs"),
      "decoder_target_tokens": targets,
      "decoder_input_tokens": np.concatenate(
          [np.zeros((len(examples), 1), np.int32), targets[:, :-1]], axis=1),
      "decoder_loss_weights": (targets != 0).astype(np.float32),
  }
  if "hyper_inputs" in lengths:
    batch["hyper_encoder_input_tokens"] = padded("hyper_inputs")
  return batch


def pack(stream: IndexedMixture, first: int, rows: int, lengths: Mapping[str, int]):
  """Greedy packing: examples in stream order fill row after row while both their
  inputs and targets fit. Returns (rows of examples, next stream row, unused)."""
  keys = ("inputs", "targets")
  packed: list[list[dict]] = [[]]
  used = {k: 0 for k in keys}
  row, chunk = first, max(rows, 8)
  while True:
    for example in stream.examples(np.arange(row, row + chunk)):
      trimmed = {k: example[k][:lengths[k]] for k in keys}
      if any(used[k] + len(trimmed[k]) > lengths[k] for k in keys):
        if len(packed) == rows:
          return packed, row, trimmed
        packed.append([])
        used = {k: 0 for k in keys}
      packed[-1].append(trimmed)
      for k in keys:
        used[k] += len(trimmed[k])
      row += 1


def packed_features(rows: Sequence[Sequence[Mapping[str, np.ndarray]]],
                    lengths: Mapping[str, int]) -> dict[str, np.ndarray]:
  """Packed rows -> model features with segment ids (from 1) and positions (from 0)."""
  out = {}
  for key, name in (("inputs", "encoder"), ("targets", "decoder")):
    tokens = np.zeros((len(rows), lengths[key]), np.int32)
    segments, positions = np.zeros_like(tokens), np.zeros_like(tokens)
    for i, row in enumerate(rows):
      at = 0
      for s, example in enumerate(row, start=1):
        ids = example[key]
        tokens[i, at:at + len(ids)] = ids
        segments[i, at:at + len(ids)] = s
        positions[i, at:at + len(ids)] = np.arange(len(ids))
        at += len(ids)
    out[key], out[f"{name}_segment_ids"], out[f"{name}_positions"] = tokens, segments, positions
  targets = out.pop("targets")
  shifted = np.concatenate([np.zeros((len(rows), 1), np.int32), targets[:, :-1]], axis=1)
  starts = out["decoder_positions"] == 0  # each segment starts from 0, as SeqIO shifts
  return {"encoder_input_tokens": out.pop("inputs"), "decoder_target_tokens": targets,
          "decoder_input_tokens": np.where(starts, 0, shifted),
          "decoder_loss_weights": (targets != 0).astype(np.float32), **out}
