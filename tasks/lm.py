"""`embedded_lm`: prefix -> continuation over the embedded corpus, no hyper inputs.

Pretrains the small downstream T5 of the CPU demo, in the style of T5's LM
adaptation: a span of 128 consecutive tokens is split at a random point
(uniform in [16, 112], drawn from the pipeline seed) into inputs (the prefix)
and targets (the continuation). When the inputs are longer than the feature
length, their start is cut (the end, next to the continuation, is kept); long
targets lose their end. Downstream-only features, so the task can be packed.
"""

from __future__ import annotations

import functools
from typing import Mapping

import seqio
import tensorflow as tf

from hypert5_tasks import caclm
from hypert5_tasks import embedded_corpus
from hypert5_tasks import forms
from hypert5_tasks import sources
from hypert5_tasks import vocab as vocab_lib

TASK = "embedded_lm"
SPAN_LENGTH = 128
MIN_PREFIX, MAX_PREFIX = 16, 112


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
    target_text = vocabulary.decode_tf(targets)
    return {
        "inputs": inputs,
        "inputs_pretokenized": vocabulary.decode_tf(inputs),
        "targets": targets,
        "targets_pretokenized": target_text,
        "task_name": example["task_name"],
        "answer_choices": tf.zeros([0], tf.string),
        "label": tf.constant(-1, tf.int32),
        "references": tf.reshape(target_text, [1]),
    }

  return split(dataset)


def register() -> None:
  vocabulary = vocab_lib.embedded_vocabulary()
  seqio.TaskRegistry.remove(TASK)
  seqio.TaskRegistry.add(
      TASK,
      source=sources.ReaderSource(caclm.embedded_text_reader, splits=embedded_corpus.SPLITS,
                                  description="embedded corpus passages"),
      output_features=forms.output_features("xonly", vocabulary),
      preprocessors=[
          functools.partial(caclm.split_into_spans, span_length=SPAN_LENGTH, task_name=TASK),
          prefix_and_continuation,
          seqio.preprocessors.append_eos_after_trim,
      ],
      shuffle_buffer_size=forms.SHUFFLE_BUFFER_SIZE)
