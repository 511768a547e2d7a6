"""Context-augmented conditional language modeling (CACLM, paper section 4.2).

Hyperpretraining objective. A span of consecutive tokens is cut into four
consecutive segments A, B, C, D:

    | A (context) | B (32 tokens) | C (target) | D (context) |

  downstream input  inputs       = B
  downstream target targets      = C
  hypermodel input  hyper_inputs = A + <extra_id_0> + D

The separator is T5's first sentinel, which in span corruption marks "text
missing here", which is what it marks here (B and C are cut out). The
hypermodel must therefore turn the surrounding document into a phi that helps
the frozen downstream model continue B into C.

Spans. Each document is tokenized and cut into consecutive, non-overlapping
spans of exactly A+B+C+D tokens; the remainder (and any document shorter than
one span) is dropped, so A and D always come from the same document as B and C.

Defaults: C4 (`caclm_c4`, TFDS c4/en:3.1.0 under $TFDS_DATA_DIR)
A=176, B=32, C=128, D=176 (512 tokens; hyper input 353 + EOS); the embedded
corpus (`embedded_caclm.shakespeare`, mixture `embedded_caclm`) A=64, B=32,
C=32, D=64 (192 tokens), sized for CPU. `register_caclm_task` builds other variants.
"""

from __future__ import annotations

import dataclasses
import functools

import seqio
import tensorflow as tf
import tensorflow_datasets as tfds

from hypert5_tasks import embedded_corpus, forms, locations, sources
from hypert5_tasks import vocab as vocab_lib

C4_TFDS_NAME = "c4/en:3.1.0"
C4_TASK = "caclm_c4"
EMBEDDED_TASK = "embedded_caclm.shakespeare"
EMBEDDED_MIXTURE = "embedded_caclm"
SEPARATOR_TEXT = " <extra_id_0> "


@dataclasses.dataclass(frozen=True)
class SpanLayout:
  """Segment lengths, in tokens, of A (context), B (input), C (target), D (context)."""
  a: int
  b: int
  c: int
  d: int

  def __post_init__(self):
    if min(self.a, self.b, self.c, self.d) < 1:
      raise ValueError(f"every CACLM segment needs at least one token: {self}")

  @property
  def span(self) -> int:
    return self.a + self.b + self.c + self.d


C4_LAYOUT = SpanLayout(a=176, b=32, c=128, d=176)
EMBEDDED_LAYOUT = SpanLayout(a=64, b=32, c=32, d=64)


def split_into_spans(dataset: tf.data.Dataset, output_features, span_length: int,
                     task_name: str) -> tf.data.Dataset:
  """{"text"} documents -> {"tokens": [span_length], "task_name"}, consecutive spans."""
  vocabulary = output_features["inputs"].vocabulary

  @tf.autograph.experimental.do_not_convert
  def spans_of(example):
    tokens = vocabulary.encode_tf(example["text"])  # [n]
    count = tf.size(tokens) // span_length
    spans = tf.reshape(tokens[:count * span_length], [count, span_length])
    return tf.data.Dataset.from_tensor_slices({"tokens": spans})

  spans = dataset.flat_map(spans_of)
  return spans.map(tf.autograph.experimental.do_not_convert(
      lambda s: {**s, "task_name": tf.constant(task_name)}))


def caclm_example(dataset: tf.data.Dataset, output_features,
                  layout: SpanLayout) -> tf.data.Dataset:
  """Spans -> hyper_inputs (A <sep> D), inputs (B), targets (C), their strings, metadata."""
  vocabulary = output_features["inputs"].vocabulary
  separator = vocab_lib.first_sentinel_id(vocabulary)

  @tf.autograph.experimental.do_not_convert
  def fn(example):
    tokens = example["tokens"]  # [span]
    a = tokens[:layout.a]
    b = tokens[layout.a:layout.a + layout.b]
    c = tokens[layout.a + layout.b:layout.a + layout.b + layout.c]
    d = tokens[layout.a + layout.b + layout.c:]
    target_text = vocabulary.decode_tf(c)
    return {
        "hyper_inputs": tf.concat([a, [separator], d], axis=0),
        "hyper_inputs_pretokenized": tf.strings.join(
            [vocabulary.decode_tf(a), SEPARATOR_TEXT, vocabulary.decode_tf(d)]),
        "inputs": b,
        "inputs_pretokenized": vocabulary.decode_tf(b),
        "targets": c,
        "targets_pretokenized": target_text,
        "task_name": example["task_name"],
        "answer_choices": tf.zeros([0], tf.string),
        "label": tf.constant(-1, tf.int32),
        "references": tf.reshape(target_text, [1]),
    }

  return dataset.map(fn, num_parallel_calls=tf.data.AUTOTUNE)


def register_caclm_task(name: str, source: seqio.DataSource, vocabulary: seqio.Vocabulary,
                        layout: SpanLayout) -> None:
  """Registers a CACLM task over a source of {"text"} documents."""
  seqio.TaskRegistry.remove(name)
  seqio.TaskRegistry.add(
      name, source=source,
      output_features=forms.output_features("hyper", vocabulary),
      preprocessors=[
          functools.partial(split_into_spans, span_length=layout.span, task_name=name),
          functools.partial(caclm_example, layout=layout),
          seqio.preprocessors.append_eos_after_trim,
      ],
      shuffle_buffer_size=forms.SHUFFLE_BUFFER_SIZE)


def embedded_text_reader(split: str, shuffle: bool, seed: int | None,
                         shard: sources.Shard) -> tf.data.Dataset:
  """Passages of this shard's part of the embedded corpus, as {"text"}."""
  passages = shard.slice(embedded_corpus.passages(split))
  dataset = tf.data.Dataset.from_tensor_slices({"text": tf.constant(passages, tf.string)})
  if shuffle:
    dataset = dataset.shuffle(max(len(passages), 1), seed=seed, reshuffle_each_iteration=True)
  return dataset


def c4_reader(root: str | None):
  """Reader of TFDS c4/en:3.1.0 under `root`; each host opens only its shard's files."""

  def read(split: str, shuffle: bool, seed: int | None, shard: sources.Shard):

    version_dir = f"{root}/c4/en/3.1.0" if root else None
    if version_dir is None or not tf.io.gfile.isdir(version_dir):
      raise locations.C4.missing(root, f"no folder {version_dir}")
    read_config = tfds.ReadConfig(
        shuffle_seed=seed,
        input_context=tf.distribute.InputContext(num_input_pipelines=shard.count,
                                                 input_pipeline_id=shard.index))
    builder = tfds.builder(C4_TFDS_NAME, data_dir=root)
    dataset = builder.as_dataset(split=split, shuffle_files=shuffle, read_config=read_config)
    return dataset.map(tf.autograph.experimental.do_not_convert(lambda ex: {"text": ex["text"]}))

  return read


def c4_files(root: str | None, split: str) -> list[str]:
  """The TFDS files of a C4 split (its TFRecord shards and dataset_info.json)."""
  version_dir = f"{root}/c4/en/3.1.0" if root else None
  if version_dir is None or not tf.io.gfile.isdir(version_dir):
    raise locations.C4.missing(root, f"no folder {version_dir}")
  shards = sorted(tf.io.gfile.glob(f"{version_dir}/c4-{split}.tfrecord-*"))
  return [f"{version_dir}/dataset_info.json"] + shards


def c4_pieces(root: str | None, split: str) -> int:
  """C4 is cached one TFRecord shard at a time (1,024 in the real train split)."""
  return max(len(c4_files(root, split)) - 1, 1)


def register(c4_root: str | None = None) -> None:
  """Registers caclm_c4 (C4 under `c4_root`, default $TFDS_DATA_DIR) and the embedded CACLM."""
  c4_root = c4_root or locations.C4.root()
  register_caclm_task(
      C4_TASK,
      sources.ReaderSource(c4_reader(c4_root), splits=("train", "validation"),
                           description=f"C4 {C4_TFDS_NAME} under {c4_root}",
                           files=functools.partial(c4_files, c4_root),
                           pieces=functools.partial(c4_pieces, c4_root)),
      vocab_lib.default_vocabulary(), C4_LAYOUT)
  register_caclm_task(
      EMBEDDED_TASK,
      sources.ReaderSource(embedded_text_reader, splits=embedded_corpus.SPLITS,
                           description="embedded corpus passages"),
      vocab_lib.embedded_vocabulary(), EMBEDDED_LAYOUT)
  seqio.MixtureRegistry.remove(EMBEDDED_MIXTURE)
  seqio.MixtureRegistry.add(EMBEDDED_MIXTURE, [(EMBEDDED_TASK, 1.0)])
