"""Pretraining the demo's downstream T5 on the embedded corpus (no hyper inputs).

`embedded_lm`, in the style of T5's LM adaptation: a span of 128 consecutive
tokens is split at a random point (uniform in [16, 112], drawn from the
pipeline seed) into inputs (the prefix) and targets (the continuation). When
the inputs are longer than the feature length, their start is cut (the end,
next to the continuation, is kept); long targets lose their end.

`embedded_denoise`: a span of 32 tokens with each token dropped with
probability 0.15 is the input, the whole span the target. A real T5 learned
to reproduce its input during its span-corruption pretraining, before LM
adaptation; a model trained on continuation alone rarely does, and a frozen
downstream model that cannot copy words from its input cannot be steered by
a prefix to answer with one of the options it is shown.

`embedded_lm_mix` mixes the two equally. Downstream-only features, so the
tasks can be packed.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import seqio
import tensorflow as tf

from hypert5_tasks import caclm, embedded_corpus, forms, sources
from hypert5_tasks import vocab as vocab_lib

TASK = "embedded_lm"
DENOISE_TASK = "embedded_denoise"
MIXTURE = "embedded_lm_mix"
SPAN_LENGTH = 128
MIN_PREFIX, MAX_PREFIX = 16, 112
DENOISE_SPAN_LENGTH = 32
DROP_RATE = 0.15


def _example(inputs: tf.Tensor, targets: tf.Tensor, task_name: tf.Tensor,
             vocabulary) -> dict[str, tf.Tensor]:
  """The task features of a downstream-only LM example (no answer choices)."""
  target_text = vocabulary.decode_tf(targets)
  return {
      "inputs": inputs,
      "inputs_pretokenized": vocabulary.decode_tf(inputs),
      "targets": targets,
      "targets_pretokenized": target_text,
      "task_name": task_name,
      "answer_choices": tf.zeros([0], tf.string),
      "label": tf.constant(-1, tf.int32),
      "references": tf.reshape(target_text, [1]),
  }


def prefix_and_continuation(dataset: tf.data.Dataset, output_features,
                            sequence_length: Mapping[str, int] | None = None,
                            min_prefix: int = MIN_PREFIX,
                            max_prefix: int = MAX_PREFIX) -> tf.data.Dataset:
  """Spans -> inputs (prefix), targets (continuation), strings and metadata (no EOS yet)."""
  vocabulary = output_features["inputs"].vocabulary
  lengths = sequence_length or {}

  @seqio.map_over_dataset(num_seeds=1)
  @tf.autograph.experimental.do_not_convert
  def split(example, seed):
    tokens = example["tokens"]
    cut = tf.random.stateless_uniform([], seed, minval=min_prefix, maxval=max_prefix + 1,
                                      dtype=tf.int32)
    inputs, targets = tokens[:cut], tokens[cut:]
    if lengths.get("inputs"):
      inputs = inputs[-(lengths["inputs"] - 1):]  # keep the end, next to the continuation
    return _example(inputs, targets, example["task_name"], vocabulary)

  return split(dataset)


def drop_tokens(dataset: tf.data.Dataset, output_features, sequence_length=None,
                drop_rate: float = DROP_RATE) -> tf.data.Dataset:
  """Spans -> inputs (the span with tokens dropped at random), targets (the span)."""
  del sequence_length
  vocabulary = output_features["inputs"].vocabulary

  @seqio.map_over_dataset(num_seeds=1)
  @tf.autograph.experimental.do_not_convert
  def corrupt(example, seed):
    tokens = example["tokens"]
    keep = tf.random.stateless_uniform(tf.shape(tokens), seed) >= drop_rate
    return _example(tf.boolean_mask(tokens, keep), tokens, example["task_name"], vocabulary)

  return corrupt(dataset)


def register() -> None:
  vocabulary = vocab_lib.embedded_vocabulary()
  source = sources.ReaderSource(caclm.embedded_text_reader, splits=embedded_corpus.SPLITS,
                                description="embedded corpus passages")
  for name, span_length, make_example in ((TASK, SPAN_LENGTH, prefix_and_continuation),
                                          (DENOISE_TASK, DENOISE_SPAN_LENGTH, drop_tokens)):
    seqio.TaskRegistry.remove(name)
    seqio.TaskRegistry.add(
        name, source=source, output_features=forms.output_features("xonly", vocabulary),
        preprocessors=[
            functools.partial(caclm.split_into_spans, span_length=span_length, task_name=name),
            make_example,
            seqio.preprocessors.append_eos_after_trim,
        ],
        shuffle_buffer_size=forms.SHUFFLE_BUFFER_SIZE)
  seqio.MixtureRegistry.remove(MIXTURE)
  seqio.MixtureRegistry.add(MIXTURE, [TASK, DENOISE_TASK], default_rate=1.0)
