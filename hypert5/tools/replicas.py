"""Copies of the benchmarks in their real formats, written where the real ones are absent.

`python -m hypert5.input_bench --replica_dir=DIR` writes them (once) and reads
them through the same readers as the real data: P3 parquet shards of every T0
training subset, MetaICL jsonl of every training task, S-NI task files and
splits of the default split, and a prepared TFDS c4/en:3.1.0 folder. Their
text is real English (Shakespeare, the embedded corpus) cut to the benchmarks'
typical lengths; without $HYPERT5_VOCAB, a SentencePiece model trained on that
text (about 24k pieces, 4.1 characters per token, near T5's 32k model on
English) stands in for T5's.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
from collections.abc import Sequence

import numpy as np
import sentencepiece as spm

ENV_VOCAB = "HYPERT5_VOCAB"
# Which benchmark copies a mixture reads: (environment variable, replica subfolder).
DATA_OF = {"caclm": ("TFDS_DATA_DIR", "tfds"), "p3": ("HYPERT5_P3_DIR", "p3"),
           "metaicl": ("HYPERT5_METAICL_DIR", "metaicl"), "sni": ("HYPERT5_SNI_DIR", "sni")}


def benchmark_of(mixture: str) -> str:
  return mixture.split("_")[0]


class Text:
  """Runs of real English words (the embedded corpus), by length in words."""

  def __init__(self, seed: int):
    from hypert5_tasks import embedded_corpus  # noqa: PLC0415  (TF: writing replicas only)
    self.words = " ".join(embedded_corpus.passages("train")).split()
    self.rng = np.random.default_rng(seed)

  def words_of(self, count: int) -> str:
    count = max(1, min(int(count), len(self.words) - 1))
    start = int(self.rng.integers(0, len(self.words) - count))
    return " ".join(self.words[start:start + count])

  def lognormal(self, median: float, sigma: float, cap: int) -> str:
    return self.words_of(min(cap, max(1, round(median * math.exp(sigma * self.rng.normal())))))

  def sentences(self) -> list[str]:
    text = " ".join(self.words)
    return [text[i:i + 2000] for i in range(0, len(text), 2000)]


# Median words (about 1.3 tokens each) of the texts the replicas hold, after the
# real benchmarks: T0 prompts, MetaICL's short classification inputs, S-NI
# definitions and instances, C4 documents (about 400 tokens on average).
LENGTHS = {"p3_input": (80, 0.6, 700), "p3_target": (3, 0.8, 40),
           "metaicl_input": (40, 0.7, 400), "metaicl_target": (4, 0.6, 30),
           "sni_definition": (60, 0.5, 300), "sni_input": (60, 0.7, 500),
           "sni_target": (4, 0.8, 60), "c4_document": (300, 0.8, 5000)}


@dataclasses.dataclass(frozen=True)
class ReplicaSize:
  p3_rows: int = 400  # per T0 training subset (real: thousands to 500,000)
  metaicl_lines: int = 1000  # per training task (real: up to 16,384)
  sni_instances: int = 100  # per task (the training split keeps 100)
  c4_documents: int = 16_000  # training documents, in 8 shards
  c4_shards: int = 8
  only: int = 0  # >0: only the first `only` tasks of each benchmark (tests)


def write_vocabulary(path: str, text: Text) -> None:
  """A SentencePiece model in T5's conventions (pad 0, EOS 1, unk 2), from `text`."""

  spm.set_random_generator_seed(0)
  model = io.BytesIO()
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(text.sentences()), model_writer=model, vocab_size=32000,
      hard_vocab_limit=False, model_type="unigram", character_coverage=1.0, pad_id=0,
      eos_id=1, unk_id=2, bos_id=-1, num_threads=1, input_sentence_size=0,
      shuffle_input_sentence=False, max_sentence_length=4192, minloglevel=2)
  _write_bytes(path, model.getvalue())


def _write_bytes(path: str, payload: bytes) -> None:
  with open(path + ".partial", "wb") as f:
    f.write(payload)
  os.replace(path + ".partial", path)


def _first(items, size: ReplicaSize):
  # SeqIO orders a mixture's tasks by name; `restrict` keeps the first ones.
  return sorted(items)[:size.only] if size.only else list(items)


def write_p3(root: str, text: Text, size: ReplicaSize) -> None:
  """data/{subset}/train.parquet for every T0 training subset (HF's parquet layout)."""
  import pyarrow as pa  # noqa: PLC0415  (TF: writing replicas only)
  import pyarrow.parquet as pq  # noqa: PLC0415  (TF: writing replicas only)

  from hypert5_tasks import p3  # noqa: PLC0415  (TF: writing replicas only)
  subsets = _first(p3.t0_train_subsets(), size)
  for i, subset in enumerate(subsets):
    choices = [text.words_of(2) for _ in range(int(text.rng.integers(2, 5)))] if i % 2 else None
    inputs, targets = [], []
    for _ in range(size.p3_rows):
      inputs.append(text.lognormal(*LENGTHS["p3_input"]))
      targets.append(choices[int(text.rng.integers(len(choices)))] if choices
                     else text.lognormal(*LENGTHS["p3_target"]))
    columns = {
        # Stored ids (read only for the average-length filter): about 1.3 tokens a word.
        "inputs": pa.array([list(range(round(1.3 * len(x.split())))) for x in inputs],
                           pa.list_(pa.int32())),
        "inputs_pretokenized": pa.array(inputs, pa.string()),
        "targets": pa.array([list(range(round(1.3 * len(y.split())) + 1)) for y in targets],
                            pa.list_(pa.int32())),
        "targets_pretokenized": pa.array(targets, pa.string()),
    }
    if choices:
      columns["answer_choices"] = pa.array([choices] * size.p3_rows, pa.list_(pa.string()))
    folder = os.path.join(root, "data", subset)
    os.makedirs(folder, exist_ok=True)
    pq.write_table(pa.table(columns), os.path.join(folder, "train.parquet"),
                   row_group_size=1000)
  return subsets


def write_metaicl(root: str, text: Text, size: ReplicaSize) -> None:
  """{task}/{task}_16384_100_train.jsonl for the training tasks of every split."""
  from hypert5_tasks import metaicl  # noqa: PLC0415  (TF: writing replicas only)
  tasks = list(dict.fromkeys(t for s in metaicl.SPLITS
                             for t in _first(metaicl.split_config(s)["train"], size)))
  for task in tasks:
    config = metaicl.task_configs().get(task, {})
    kind = config.get("task_type")
    lines = []
    for _ in range(size.metaicl_lines):
      if kind == "classification":
        options = list(config["options"])
      elif kind == "multi-choice":
        options = [text.lognormal(*LENGTHS["metaicl_target"]) for _ in range(4)]
      else:
        options = []
      output = (options[int(text.rng.integers(len(options)))] if options
                else text.lognormal(*LENGTHS["metaicl_target"]))
      lines.append(json.dumps({"task": task, "input": text.lognormal(*LENGTHS["metaicl_input"]),
                               "output": output, "options": options}))
    folder = os.path.join(root, task)
    os.makedirs(folder, exist_ok=True)
    _write_bytes(os.path.join(folder, f"{task}_{metaicl.TRAIN_K}_{metaicl.TRAIN_SEED}_train.jsonl"),
                 ("\n".join(lines) + "\n").encode())
  return tasks


def write_sni(root: str, text: Text, size: ReplicaSize) -> None:
  """tasks/{task}.json for the default split's tasks, and splits/default/*_tasks.txt."""
  from hypert5_tasks import sni  # noqa: PLC0415  (TF: writing replicas only)
  os.makedirs(os.path.join(root, "tasks"), exist_ok=True)
  os.makedirs(os.path.join(root, "splits", "default"), exist_ok=True)
  written = []
  for split in ("train", "test"):
    names = _first((e.name for e in sni.packaged_split(split)), size)
    with open(os.path.join(root, "splits", "default", f"{split}_tasks.txt"), "w") as f:
      f.write("".join(f"{n}\n" for n in names))
    written += names
    for name in names:
      task = {
          "Contributors": ["replica"], "Source": ["replica"], "URL": [float("nan")],
          "Categories": ["Misc."], "Reasoning": [],
          "Definition": [text.lognormal(*LENGTHS["sni_definition"])],
          "Input_language": ["English"], "Output_language": ["English"],
          "Instruction_language": ["English"], "Domains": ["Fiction"],
          "Positive Examples": [{"input": text.lognormal(*LENGTHS["sni_input"]),
                                 "output": text.lognormal(*LENGTHS["sni_target"]),
                                 "explanation": text.words_of(12)} for _ in range(3)],
          "Negative Examples": [{"input": text.words_of(20), "output": text.words_of(3),
                                 "explanation": text.words_of(12)}],
          "Instances": [{"id": f"{name}-{i}", "input": text.lognormal(*LENGTHS["sni_input"]),
                         "output": [text.lognormal(*LENGTHS["sni_target"])]}
                        for i in range(size.sni_instances)],
          "Instance License": ["Public Domain"],
      }
      _write_bytes(os.path.join(root, "tasks", f"{name}.json"),
                   json.dumps(task, indent=4).encode())
  return written


def write_c4(root: str, text: Text, size: ReplicaSize) -> None:
  """A prepared TFDS c4/en:3.1.0 (text, timestamp, url), read by tfds.builder as C4 is."""
  import tensorflow as tf  # noqa: PLC0415  (TF: writing replicas only)
  import tensorflow_datasets as tfds  # noqa: PLC0415  (TF: writing replicas only)
  from tensorflow_datasets.core import example_serializer  # noqa: PLC0415  (TF: writing replicas only)
  folder = os.path.join(root, "c4", "en", "3.1.0")
  os.makedirs(folder, exist_ok=True)
  features = tfds.features.FeaturesDict({"text": tfds.features.Text(),
                                         "timestamp": tfds.features.Text(),
                                         "url": tfds.features.Text()})
  serializer = example_serializer.ExampleSerializer(features.get_serialized_info())
  for split, documents, shards in (("train", size.c4_documents, size.c4_shards),
                                   ("validation", max(size.c4_documents // 100, 1), 1)):
    for shard in range(shards):
      path = os.path.join(folder, f"c4-{split}.tfrecord-{shard:05d}-of-{shards:05d}")
      with tf.io.TFRecordWriter(path) as writer:
        for i in range(shard * documents // shards, (shard + 1) * documents // shards):
          writer.write(serializer.serialize_example(features.encode_example({
              "text": text.lognormal(*LENGTHS["c4_document"]),
              "timestamp": "2019-04-20T00:00:00Z", "url": f"https://replica.example/{split}/{i}"})))
  tfds.folder_dataset.write_metadata(data_dir=folder, features=features, check_data=True)
  return ["c4/en:3.1.0"]


WRITERS = {"p3": write_p3, "metaicl": write_metaicl, "sni": write_sni, "caclm": write_c4}


def ensure_replicas(plan: dict[str, str], mixtures: Sequence[str], size: ReplicaSize,
                    seed: int = 0) -> list[str]:
  """Writes the replicas `plan` names that are not there yet; returns what was written."""
  text, written = None, []
  vocab = plan[ENV_VOCAB]
  wanted = [(DATA_OF[b][0], b) for b in dict.fromkeys(benchmark_of(m) for m in mixtures)]
  for env, benchmark in wanted:
    root = plan[env]
    done = os.path.join(root, "REPLICA.json")
    if os.path.exists(done):
      continue
    text = text or Text(seed)
    os.makedirs(root, exist_ok=True)
    tasks = WRITERS[benchmark](root, text, size)
    with open(done, "w") as f:
      json.dump({"benchmark": benchmark, "size": dataclasses.asdict(size), "seed": seed,
                 "partial": bool(size.only), "tasks": tasks}, f)
    written.append(root)
  if not os.path.exists(vocab):
    write_vocabulary(vocab, text or Text(seed))
    written.append(vocab)
  return written
