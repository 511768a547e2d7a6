"""Forms: the three ways a few-shot record reaches the models, and task registration.

  hyper   (HyperT5)           hyper_inputs = the context (few-shot pairs, or an
                              S-NI definition), inputs = the query x.
  concat  (T5-MTF-Few-shot)   no hyper_inputs; inputs = the context, then
                              "Input: x Output:". Trailing context segments are
                              dropped until the query fits; the query is never cut
                              for the context's sake.
  xonly   (T5-MTF)            no hyper_inputs; inputs = x.

A task registered under base name B exists as B (hyper), B_concat and B_xonly,
each scored as the task declares (`metric_fns`, `postprocess_fn`; scoring.py);
each mixture M likewise as M, M_concat, M_xonly (`pipeline.get_dataset(...,
form=...)` picks one). The downstream-only forms have no hyper_inputs feature,
so their mixtures can be packed.

Task features (every task, every form; `task_name`, `answer_choices`, `label`
and `references` also for CACLM and LM tasks so that any of them can be mixed):
  hyper_inputs, inputs, targets            int32 [L] token ids, EOS-terminated
  hyper_inputs_pretokenized, inputs_pretokenized, targets_pretokenized   strings
  task_name string [], answer_choices string [C], label int32 [], references string [R]
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping, Sequence

import seqio
import tensorflow as tf

from hypert5.errors import ConfigError
from hypert5.text import prompts
from hypert5_tasks import fewshot, scoring
from hypert5_tasks import records as records_lib

FORMS = ("hyper", "concat", "xonly")
FORM_SUFFIX = {"hyper": "", "concat": "_concat", "xonly": "_xonly"}
FORMAT_WORDS = ("Input", "Output", "Options")
SHUFFLE_BUFFER_SIZE = 1000

_METADATA = seqio.PassThroughVocabulary(size=0)
METADATA_FEATURES = {
    "task_name": seqio.Feature(_METADATA, add_eos=False, dtype=tf.string, rank=0),
    "answer_choices": seqio.Feature(_METADATA, add_eos=False, dtype=tf.string, rank=1),
    "label": seqio.Feature(_METADATA, add_eos=False, dtype=tf.int32, rank=0),
    "references": seqio.Feature(_METADATA, add_eos=False, dtype=tf.string, rank=1),
}


def safe_name(text: str) -> str:
  """`text` with the characters SeqIO task names may not contain replaced by '_'."""
  return re.sub(r"[^\w.:#]", "_", text)


def name_for(base: str, form: str) -> str:
  """Registered name of a task or mixture in a form."""
  if form not in FORMS:
    raise ValueError(f"unknown form {form!r}; expected one of {FORMS}")
  return base + FORM_SUFFIX[form]


def resolve_mixture(mixture: str, form: str) -> str:
  """The registered name of `mixture` in `form` (few-shot mixtures have _concat and
  _xonly variants; LM and CACLM mixtures exist in one form only)."""
  names = set(seqio.MixtureRegistry.names()) | set(seqio.TaskRegistry.names())
  if form != "hyper" and not mixture.endswith(FORM_SUFFIX[form]):
    variant = name_for(mixture, form)
    if variant in names:
      return variant
  if mixture not in names:
    raise ConfigError(f"config.data.mixture={mixture!r} is not a registered SeqIO mixture "
                      "or task")
  return mixture


# A key of the hyper form beside its features (as the _pretokenized ones are): [examples
# in hyper_inputs, examples in the context], so that evaluation can say when the
# hypermodel's input cut examples off (a definition always comes first).
CONTEXT_FIT = "hyper_inputs_examples"


def output_features(form: str, vocabulary: seqio.Vocabulary) -> dict[str, seqio.Feature]:
  """Task output features of a form: token features plus the metadata."""
  tokens = {"inputs": seqio.Feature(vocabulary), "targets": seqio.Feature(vocabulary)}
  if form == "hyper":
    tokens["hyper_inputs"] = seqio.Feature(vocabulary)
  return {**tokens, **METADATA_FEATURES}


def _budget(sequence_length: Mapping[str, int] | None, key: str):
  """Tokens available for `key` before its EOS, or None when unbounded."""
  if not sequence_length or sequence_length.get(key) is None:
    return None
  return max(sequence_length[key] - 1, 0)


def metadata(record) -> dict[str, tf.Tensor]:
  return {k: record[k] for k in METADATA_FEATURES}


def render(dataset: tf.data.Dataset, output_features: Mapping[str, seqio.Feature],
           sequence_length: Mapping[str, int] | None = None, *, form: str) -> tf.data.Dataset:
  """Records (with a context, except for xonly) -> task features of `form`, without EOS."""
  vocabulary = output_features["inputs"].vocabulary

  @tf.autograph.experimental.do_not_convert
  def fn(record):
    out = metadata(record)
    out["targets"] = vocabulary.encode_tf(record["target"])
    out["targets_pretokenized"] = record["target"]
    context = record.get(records_lib.CONTEXT)
    if form == "hyper":
      segment_ids = vocabulary.encode_tf(context)  # [S, None]
      ids, kept = fewshot.fit_segments(
          segment_ids, _budget(sequence_length, "hyper_inputs"), keep_first=True)
      out["hyper_inputs"] = ids
      out["hyper_inputs_pretokenized"] = tf.strings.reduce_join(
          context[:kept], separator=prompts.SEGMENT_SEPARATOR)
      definitions = tf.reduce_sum(tf.cast(tf.strings.regex_full_match(
          context, "(?s)" + prompts.DEFINITION + ".*"), tf.int32))
      out[CONTEXT_FIT] = tf.stack([tf.cast(kept, tf.int32) - definitions,
                                   tf.size(context) - definitions])
      out["inputs"] = vocabulary.encode_tf(record["input"])
      out["inputs_pretokenized"] = record["input"]
    elif form == "concat":
      query = fewshot.format_query(record["input"])
      query_ids = vocabulary.encode_tf(query)
      budget = _budget(sequence_length, "inputs")
      if budget is not None:
        budget = tf.maximum(budget - tf.size(query_ids), 0)
      ids, kept = fewshot.fit_segments(vocabulary.encode_tf(context), budget, keep_first=False)
      out["inputs"] = tf.concat([ids, query_ids], axis=0)
      out["inputs_pretokenized"] = tf.strings.reduce_join(
          tf.concat([context[:kept], [query]], axis=0), separator=prompts.SEGMENT_SEPARATOR)
    elif form == "xonly":
      out["inputs"] = vocabulary.encode_tf(record["input"])
      out["inputs_pretokenized"] = record["input"]
    else:
      raise ValueError(f"unknown form {form!r}")
    return out

  return dataset.map(fn, num_parallel_calls=tf.data.AUTOTUNE)


def _replace_task(name: str, **kwargs) -> None:
  # Re-registering a name (e.g. pointing a benchmark at another folder) replaces it.
  seqio.TaskRegistry.remove(name)
  seqio.TaskRegistry.add(name, **kwargs)


def add_task(base_name: str, source: seqio.DataSource, vocabulary: seqio.Vocabulary, *,
             context_preprocessors: Sequence[Callable] = (), forms: Sequence[str] = FORMS,
             shuffle_buffer_size: int = SHUFFLE_BUFFER_SIZE,
             metric_fns: Sequence[Callable] = (),
             postprocess_fn: Callable | None = None) -> None:
  """Registers a records task in each form.

  context_preprocessors attach contexts (e.g. `fewshot.draw_within_task`); the
  xonly form skips them, it needs no context. metric_fns and postprocess_fn:
  how the task is scored, SeqIO's way (scoring.py); every form is scored alike.
  """
  for form in forms:
    preprocessors = list(context_preprocessors) if form != "xonly" else []
    preprocessors += [functools.partial(render, form=form),
                      seqio.preprocessors.append_eos_after_trim]
    _replace_task(name_for(base_name, form), source=source,
                  output_features=output_features(form, vocabulary),
                  preprocessors=preprocessors, shuffle_buffer_size=shuffle_buffer_size,
                  metric_fns=list(metric_fns), postprocess_fn=postprocess_fn)


Rate = float | Callable[[str], float]


def add_mixture(name: str, base_task_names: Sequence[str], rate: Rate = 1.0, *,
                forms: Sequence[str] = FORMS,
                benchmark: scoring.Benchmark | None = None) -> None:
  """Registers mixture `name` (and its form variants) over tasks registered by `add_task`.

  rate: a number, or a function of the task's base name evaluated lazily when the
  mixture's dataset is built (used for size-proportional rates and for filters
  that need the data, which give rate 0). No tasks, no mixture.
  benchmark: how an evaluation mixture's results add up (scoring.Benchmark).
  """
  if not base_task_names:
    return  # e.g. a split file listing no task

  def task_rate(base):
    if callable(rate):
      return lambda _task: rate(base)
    return rate

  for form in forms:
    mixture = name_for(name, form)
    seqio.MixtureRegistry.remove(mixture)
    seqio.MixtureRegistry.add(mixture, [(name_for(b, form), task_rate(b)) for b in base_task_names])
    if benchmark is not None:
      scoring.set_benchmark(mixture, benchmark)
