"""Small benchmark copies in their real on-disk formats, written by tests into tmp_path.

Formats follow the distributed files: P3 parquet (HF layout) and TFRecord
(seqio cache layout: int64/bytes/float lists, info.{split}.json, stats.{split}.json),
MetaICL jsonl, and Super-NaturalInstructions task JSON plus split lists.

Tests on the real samples (small copies of the public files) find them at
`SHARED_DATA` and carry `@needs_shared(...)`.
"""

from __future__ import annotations

import json
import os
import pathlib

import pytest

REPO = pathlib.Path(os.path.abspath(__file__)).parent.parent
SHARED_DATA_VARIABLE = "HYPERT5_SHARED_DATA"


def shared_data_root() -> pathlib.Path:
  """The real data samples: $HYPERT5_SHARED_DATA, else shared/data beside the
  repository root (../shared/data, where CI lays them out)."""
  return pathlib.Path(os.environ.get(SHARED_DATA_VARIABLE) or REPO.parent / "shared" / "data")


SHARED_DATA = shared_data_root()


def needs_shared(relative: str):
  """Decorates a test that reads SHARED_DATA/`relative`: it is marked `shared_data`
  (conftest counts those that ran) and skipped, naming the folder, when that is absent."""
  path = SHARED_DATA / relative
  skip = pytest.mark.skipif(
      not path.exists(), reason=f"no {path} (real data samples; set {SHARED_DATA_VARIABLE} to "
      "the folder holding sni/, metaicl/ and p3/)")
  return lambda test: skip(pytest.mark.shared_data(test))


# ---------------------------------------------------------------------------
# P3


def p3_train_rows(subset: str, count: int, input_words: int = 5, choices=("yes", "no")):
  """Rows of a training subset; `inputs` holds fake ids of `input_words` tokens."""
  rows = []
  for i in range(count):
    target = choices[i % len(choices)]
    rows.append({
        "inputs": list(range(10, 10 + input_words)),
        "inputs_pretokenized": f"{subset} question {i} " + "word " * (input_words - 3),
        "targets": [20 + i % len(choices)],
        "targets_pretokenized": target,
        "answer_choices": list(choices),
    })
  return rows


def p3_score_eval_rows(count: int, choices=("True", "False", "Neither"), prefix: str = "premise"):
  """Rows of a *_score_eval subset: one per (example, choice)."""
  rows = []
  for i in range(count):
    for j, choice in enumerate(choices):
      rows.append({
          "idx": [i, j],
          "inputs": [5, 6, 7],
          "inputs_pretokenized": f"{prefix} {i} Question: true, false or neither?",
          "targets": [8],
          "targets_pretokenized": choice,
          "is_correct": j == i % len(choices),
          "weight": 1.0,
      })
  return rows


def write_p3_parquet(root, subset: str, split: str, rows, row_group_size: int = 64) -> str:
  import pyarrow as pa
  import pyarrow.parquet as pq

  folder = os.path.join(root, "data", subset)
  os.makedirs(folder, exist_ok=True)
  path = os.path.join(folder, f"{split}.parquet")
  types = {"inputs": pa.list_(pa.int32()), "targets": pa.list_(pa.int32()),
           "idx": pa.list_(pa.int32()), "answer_choices": pa.list_(pa.string()),
           "inputs_pretokenized": pa.string(), "targets_pretokenized": pa.string(),
           "is_correct": pa.bool_(), "weight": pa.float32()}
  columns = list(rows[0])
  table = pa.table({c: pa.array([r[c] for r in rows], type=types[c]) for c in columns})
  pq.write_table(table, path, row_group_size=row_group_size)
  return path


def _tf_feature(value):
  import tensorflow as tf

  values = value if isinstance(value, list) else [value]
  if values and isinstance(values[0], str):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[v.encode() for v in values]))
  if values and isinstance(values[0], float):
    return tf.train.Feature(float_list=tf.train.FloatList(value=values))
  return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))


def write_p3_tfrecord(root, subset: str, split: str, rows, with_stats: bool = True) -> str:
  """The older layout: {split}.tfrecord-00000-of-00001 with info and stats JSON."""
  import tensorflow as tf

  folder = os.path.join(root, "data", subset)
  os.makedirs(folder, exist_ok=True)
  path = os.path.join(folder, f"{split}.tfrecord-00000-of-00001")
  with tf.io.TFRecordWriter(path) as writer:
    for row in rows:
      example = tf.train.Example(features=tf.train.Features(
          feature={k: _tf_feature(v) for k, v in row.items()}))
      writer.write(example.SerializeToString())
  dtypes = {"inputs": "int32", "targets": "int32", "idx": "int32", "is_correct": "bool",
            "weight": "float32"}
  features = {k: {"dtype": dtypes.get(k, "string"),
                  "shape": [None] if isinstance(v, list) else []} for k, v in rows[0].items()}
  with open(os.path.join(folder, f"info.{split}.json"), "w") as f:
    json.dump({"features": features, "num_shards": 1, "seqio_version": "0.0.6"}, f)
  if with_stats:
    tokens = sum(len(r["inputs"]) for r in rows)
    with open(os.path.join(folder, f"stats.{split}.json"), "w") as f:
      json.dump({"examples": len(rows), "inputs_tokens": tokens,
                 "inputs_max_tokens": max(len(r["inputs"]) for r in rows)}, f)
  return path


# ---------------------------------------------------------------------------
# MetaICL


def metaicl_lines(task: str, count: int, options=("positive", "negative"), tag: str = "x"):
  return [{"task": task, "input": f"{task} {tag} sentence {i}", "output": options[i % len(options)],
           "options": list(options)} for i in range(count)]


def write_metaicl(root, task: str, k: int, seed: int, split: str, lines) -> str:
  folder = os.path.join(root, task)
  os.makedirs(folder, exist_ok=True)
  path = os.path.join(folder, f"{task}_{k}_{seed}_{split}.jsonl")
  with open(path, "w") as f:
    for line in lines:
      f.write((line if isinstance(line, str) else json.dumps(line)) + "\n")
  return path


# ---------------------------------------------------------------------------
# Super-NaturalInstructions


def sni_task(definition="Answer the question.", num_positives: int = 2, num_instances: int = 120,
             language="English", references: int = 1):
  return {
      "Contributors": ["Test"],
      "Source": ["test"],
      "URL": [float("nan")],  # real files have a bare NaN here
      "Categories": ["Misc."],
      "Reasoning": [],
      "Definition": [definition],
      "Input_language": [language],
      "Output_language": [language],
      "Instruction_language": [language],
      "Domains": ["Test"],
      "Positive Examples": [{"input": f"positive input {i}", "output": f"positive output {i}",
                             "explanation": "because"} for i in range(num_positives)],
      "Negative Examples": [{"input": "bad", "output": "worse", "explanation": "no"}],
      "Instances": [{"id": f"task-{i}", "input": f"instance input {i}",
                     "output": [f"answer {i} v{r}" for r in range(references)]}
                    for i in range(num_instances)],
      "Instance License": ["Unknown"],
  }


def write_sni(root, tasks: dict, train=(), test=(), extra_train_names=()) -> str:
  """Writes tasks/{name}.json (json.dump writes NaN bare, as the originals) and split lists."""
  os.makedirs(os.path.join(root, "tasks"), exist_ok=True)
  for name, content in tasks.items():
    path = os.path.join(root, "tasks", f"{name}.json")
    with open(path, "w") as f:
      if isinstance(content, str):
        f.write(content)
      else:
        json.dump(content, f, indent=4)
  split_dir = os.path.join(root, "splits", "default")
  os.makedirs(split_dir, exist_ok=True)
  for split, names in (("train", list(train) + list(extra_train_names)), ("test", test)):
    with open(os.path.join(split_dir, f"{split}_tasks.txt"), "w") as f:
      f.write("".join(f"{n}\n" for n in names))
  return split_dir
