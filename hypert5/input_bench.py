"""Input pipeline throughput of the training mixtures, beside what the train step consumes.

  python -m hypert5.input_bench --mixture=caclm,p3,metaicl_hr_to_lr,sni_def \
      --replica_dir=/tmp/hypert5_replica [--max_tasks=8] [--batch_size=32]

Each mixture is read through `hypert5.data.train_batches`, the generator
`hypert5.train` draws its batches from, with the config of the paper's run
(configs/hyperpretrain.py for CACLM, configs/hypert5_mtf.py for the others) at
its lengths: CACLM hypermodel 384 / input 40 / target 136, the few-shot
benchmarks 1024 / 384 / 128.

Data. Without --replica_dir the real copies are read from the folders the
tasks read ($TFDS_DATA_DIR, $HYPERT5_P3_DIR, $HYPERT5_METAICL_DIR,
$HYPERT5_SNI_DIR) with T5's vocabulary ($HYPERT5_VOCAB). With --replica_dir,
copies in the real formats are written there first when absent (P3 parquet
shards of every T0 training subset, MetaICL jsonl of every training task of the
split, S-NI task files of the default split, a TFDS c4/en:3.1.0 folder) and
read instead. Their text is real English (Shakespeare, the embedded corpus) cut
to the benchmarks' typical lengths; without $HYPERT5_VOCAB, a SentencePiece
model trained on that text (about 24k pieces, 4.1 characters per token, near
T5's 32k model on English) stands in for T5's.

Rates. Each task of a SeqIO mixture shuffles 1,000 preprocessed examples and
prefetches in the background from the start, so a mixture of T tasks does about
T x 1,000 examples of extra work (and holds them in memory) before its steady
state. The mixture is therefore cut to its first --max_tasks tasks (default 8:
P3 has 300-odd, S-NI 756; --max_tasks=0 mixes them all), and by default enough
batches to fill every task's buffer are drawn untimed. Then --batches batches
(and more until --min_seconds) are timed: examples/s and tokens/s (non-padding
tokens of hypermodel input, input and target) on the wall clock, and per core:
examples per second of CPU time the process used (every thread counted), which
a host with more cores multiplies as far as the pipeline's stages run in
parallel. The one stage that cannot is P3's reader (a Python generator per
subset, all under one interpreter lock): its records/s alone is measured too.

Demand. What the train step consumes at `hypert5.bench`'s large preset
(T5-Large hypermodel and downstream model, bf16, prefix length 32, LoRA rank 32)
at the mixture's lengths, at 40% MFU, from the FLOPs formula of
`hypert5.bench.train_flops`: examples/s = 0.4 x peak / FLOPs per example (the
cheaper of prefix and LoRA, which consumes more), on one H100 SXM or H200
(989e12 dense bf16 FLOP/s) and on one TPU v4 host (4 chips x 275e12). The verdict:
cores per accelerator = that rate / the per-core rate; one host keeps its
accelerators fed when its cores cover all of them (an 8-GPU node, 112 cores; a
TPU v4 VM, 120) and P3's serial reader keeps up with the host's total.

Imports neither TensorFlow nor SeqIO until a pipeline is built.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
import resource
import sys
import time
from typing import Sequence

import numpy as np

REPO = pathlib.Path(__file__).resolve().parent.parent
CONFIGS = REPO / "configs"

# Mixture name -> (config file, its arg): the paper's run that trains on it.
MIXTURES = {
    "caclm": ("hyperpretrain.py", "prefix,large"),
    "p3": ("hypert5_mtf.py", "p3,prefix,large"),
    "metaicl_hr_to_lr": ("hypert5_mtf.py", "metaicl_hr_to_lr,prefix,large"),
    "metaicl_non_nli_to_nli": ("hypert5_mtf.py", "metaicl_non_nli_to_nli,prefix,large"),
    "metaicl_non_class_to_class": ("hypert5_mtf.py", "metaicl_non_class_to_class,prefix,large"),
    "sni_def": ("hypert5_mtf.py", "sni_def,prefix,large"),
    "sni_def_pos2": ("hypert5_mtf.py", "sni_def_pos2,prefix,large"),
}
DEFAULT_MIXTURES = ("caclm", "p3", "metaicl_hr_to_lr", "sni_def")

MFU = 0.40
# Dense bf16 FLOP/s. H100 SXM and H200 share the H100's tensor cores (989 TFLOP/s);
# the PCIe H100 is lower. A TPU v4 host drives 4 chips of 275 TFLOP/s.
TARGETS = {
    "H100 SXM / H200 (1 GPU)": 989e12,
    "TPU v4 host (4 chips)": 4 * 275e12,
}
# Host cores, for the verdict: a DGX H100 / HGX H200 node has 8 GPUs and 2 x 56
# cores (Xeon Platinum 8480C); a TPU v4 VM (ct4p-hightpu-4t) has 240 vCPUs, 120 cores,
# for its 4 chips (Google Cloud's machine type; not checked from here).
HOSTS = {
    "H100 SXM / H200 (1 GPU)": ("an 8-GPU DGX/HGX node", 8, 112),
    "TPU v4 host (4 chips)": ("a TPU v4 VM", 1, 120),
}

# Which benchmark copies a mixture reads: (environment variable, replica subfolder).
ENV_VOCAB = "HYPERT5_VOCAB"
DATA_OF = {"caclm": ("TFDS_DATA_DIR", "tfds"), "p3": ("HYPERT5_P3_DIR", "p3"),
           "metaicl": ("HYPERT5_METAICL_DIR", "metaicl"), "sni": ("HYPERT5_SNI_DIR", "sni")}


class BadInput(ValueError):
  """A flag or the data it names is wrong; raised before any pipeline is built."""


def benchmark_of(mixture: str) -> str:
  return mixture.split("_")[0]


def check_mixtures(names: Sequence[str]) -> list[str]:
  """The mixtures to measure, or BadInput naming the unknown one and the known ones."""
  names = [n.strip() for n in names if n.strip()]
  if not names:
    raise BadInput(f"--mixture is empty; pass some of: {', '.join(MIXTURES)}")
  for name in names:
    if name not in MIXTURES:
      raise BadInput(f"--mixture={name!r} is not a training mixture this bench knows; "
                     f"pass one or more (comma-separated) of: {', '.join(MIXTURES)}")
  return list(dict.fromkeys(names))


def config_of(mixture: str):
  """The paper's config that trains on `mixture` (its mixture name, lengths, seed)."""
  from hypert5 import cli  # pylint: disable=import-outside-toplevel
  path, arg = MIXTURES[mixture]
  return cli.load_config(str(CONFIGS / path), arg)


def _has_data(benchmark: str, root: str) -> bool:
  """A cheap look at the layout the readers expect (they say more when reading)."""
  if benchmark == "caclm":
    return os.path.isfile(os.path.join(root, "c4", "en", "3.1.0", "dataset_info.json"))
  if benchmark == "sni":
    return os.path.isdir(os.path.join(root, "tasks"))
  return os.path.isdir(root)


def data_plan(mixtures: Sequence[str], replica_dir: str | None) -> dict[str, str]:
  """{environment variable: folder} the mixtures will be read from.

  With a replica folder: its subfolders (written later when absent). Without:
  the environment's folders, which must hold the data; otherwise BadInput
  naming the variable and what to pass instead. Checked before any pipeline is built.
  """
  plan = {}
  if replica_dir:
    for mixture in mixtures:
      env, sub = DATA_OF[benchmark_of(mixture)]
      plan[env] = os.path.join(replica_dir, sub)
    plan[ENV_VOCAB] = os.environ.get(ENV_VOCAB) or os.path.join(replica_dir, "spiece.model")
    return plan
  for mixture in mixtures:
    env, _ = DATA_OF[benchmark_of(mixture)]
    root = os.environ.get(env)
    if not root or not _has_data(benchmark_of(mixture), root):
      where = f"{env} is not set" if not root else f"{env}={root} does not hold it"
      raise BadInput(f"no data for --mixture={mixture}: {where}. Point {env} at a copy of "
                     f"the benchmark, or pass --replica_dir=DIR to write (once) and read "
                     f"copies in the real formats there.")
    plan[env] = root
  vocab = os.environ.get(ENV_VOCAB)
  if not vocab or not os.path.isfile(vocab):
    raise BadInput(f"{ENV_VOCAB} is {'not set' if not vocab else repr(vocab) + ', not a file'}"
                   f": T5's SentencePiece model must be a local file for --mixture="
                   f"{','.join(mixtures)}; set {ENV_VOCAB}, or pass --replica_dir=DIR.")
  plan[ENV_VOCAB] = vocab
  return plan


# ---------------------------------------------------------------------------
# What the train step consumes.


def required_examples_per_s(lengths: dict[str, int], kind: str, peak_flops: float,
                            mfu: float = MFU) -> float:
  """Examples/s the large preset's training step consumes at `mfu` of `peak_flops`.

  lengths: {"hyper_inputs", "inputs", "targets"} tokens of one example.
  """
  from hypert5 import bench  # pylint: disable=import-outside-toplevel
  config = bench.preset_config("large", kind)  # configs/bench.py: what hypert5.bench times
  config.data.hyper_inputs_length = lengths["hyper_inputs"]
  config.data.inputs_length, config.data.targets_length = lengths["inputs"], lengths["targets"]
  per_example = bench.train_flops(config) / config.batch_size
  return mfu * peak_flops / per_example


def demand(lengths: dict[str, int]) -> dict[str, float]:
  """{target: examples/s} for the more demanding of prefix and LoRA (the cheaper step)."""
  return {target: max(required_examples_per_s(lengths, kind, peak)
                      for kind in ("prefix", "lora"))
          for target, peak in TARGETS.items()}


# ---------------------------------------------------------------------------
# Replicas of the real formats.


class Text:
  """Runs of real English words (the embedded corpus), by length in words."""

  def __init__(self, seed: int):
    from hypert5_tasks import embedded_corpus  # pylint: disable=import-outside-toplevel
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
  import io  # pylint: disable=import-outside-toplevel
  import sentencepiece as spm  # pylint: disable=import-outside-toplevel
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
  import pyarrow as pa  # pylint: disable=import-outside-toplevel
  import pyarrow.parquet as pq  # pylint: disable=import-outside-toplevel
  from hypert5_tasks import p3  # pylint: disable=import-outside-toplevel
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
  from hypert5_tasks import metaicl  # pylint: disable=import-outside-toplevel
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
  from hypert5_tasks import sni  # pylint: disable=import-outside-toplevel
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
  import tensorflow as tf  # pylint: disable=import-outside-toplevel
  import tensorflow_datasets as tfds  # pylint: disable=import-outside-toplevel
  from tensorflow_datasets.core import example_serializer  # pylint: disable=import-outside-toplevel
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


# ---------------------------------------------------------------------------
# Measuring.


def cpu_seconds() -> float:
  """User + system CPU seconds of this process, all threads."""
  usage = resource.getrusage(resource.RUSAGE_SELF)
  return usage.ru_utime + usage.ru_stime


TOKEN_FEATURES = ("hyper_encoder_input_tokens", "encoder_input_tokens", "decoder_target_tokens")


@dataclasses.dataclass
class Measurement:
  mixture: str
  registered_name: str
  tasks: int  # tasks of nonzero rate the measured mixture mixed
  lengths: dict
  batch_size: int
  startup_s: float  # building the pipeline and its first batch
  warmup_batches: int
  batches: int  # timed
  examples: int  # examples in the timed batches
  tokens: int  # their non-padding tokens (hypermodel input, input, target)
  wall_s: float
  cpu_s: float
  rss_gb: float = 0.0  # resident memory after the timed batches
  # Records/s of a stage that runs under Python's GIL, on at most one core however
  # many the host has (P3's parquet reader), by records handed to TensorFlow at a
  # time (1: before chunking); None where every stage is TensorFlow's.
  serial_records_per_s: dict[int, float] | None = None
  generator_chunk: int | None = None  # P3: records.GENERATOR_CHUNK of this measurement

  @property
  def examples_per_s(self) -> float:
    return self.examples / self.wall_s

  @property
  def tokens_per_s(self) -> float:
    return self.tokens / self.wall_s

  @property
  def examples_per_core_s(self) -> float:
    """Examples per CPU-second: the rate of one fully busy core."""
    return self.examples / self.cpu_s

  @property
  def tokens_per_core_s(self) -> float:
    return self.tokens / self.cpu_s


def resident_gb() -> float:
  """Resident memory of this process now, in GB (Linux)."""
  with open("/proc/self/statm") as f:
    return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e9


def serial_ceiling(mixture: str, records: int = 8192) -> dict[int, float] | None:
  """Records/s of the first task's source where it is a Python generator (P3), handing
  records to TensorFlow one at a time and in chunks (`records.GENERATOR_CHUNK`); None
  where the source is not Python's.

  Every P3 task's rows come from a Python generator (`records_from_generator`), and
  all of them share one interpreter lock: this rate bounds the whole mixture's. Read
  in batches of 512, so that the measuring loop's own Python is not counted.
  """
  import seqio  # pylint: disable=import-outside-toplevel
  from hypert5_tasks import records as records_lib  # pylint: disable=import-outside-toplevel
  provider = seqio.get_mixture_or_task(mixture)
  task = provider.tasks[0] if isinstance(provider, seqio.Mixture) else provider
  if not task.name.startswith("p3."):
    return None
  rates, default = {}, records_lib.GENERATOR_CHUNK
  try:
    for chunk in dict.fromkeys((1, default)):
      records_lib.GENERATOR_CHUNK = chunk
      dataset = task.source.get_dataset(split="train", shuffle=True, seed=0)
      iterator = dataset.repeat().batch(512).as_numpy_iterator()
      next(iterator)
      start = time.perf_counter()
      for _ in range(records // 512):
        next(iterator)
      rates[chunk] = records // 512 * 512 / (time.perf_counter() - start)
  finally:
    records_lib.GENERATOR_CHUNK = default
  return rates


def warmup_for(tasks: int, batch_size: int) -> int:
  """Batches after which every task's shuffle buffer has been filled once.

  SeqIO shuffles each task after its preprocessing (1,000 examples, forms.py) and
  prefetches each task in the background from the start, so a mixture of T tasks
  preprocesses about T x 1,000 examples more than it yields before its steady state.
  """
  from hypert5_tasks import forms  # pylint: disable=import-outside-toplevel
  return math.ceil(1.25 * tasks * forms.SHUFFLE_BUFFER_SIZE / batch_size)


def measure(config, mixture: str, *, batches: int, batch_size: int,
            warmup_batches: int | None = None, min_seconds: float = 0.0,
            max_tasks: int = 0) -> Measurement:
  """Times `data.train_batches` (what hypert5.train iterates) on one host's shard.

  The mixture is first cut to its first `max_tasks` tasks (0: all of them). After
  the first batch and `warmup_batches` more (None: `warmup_for` the tasks), `batches`
  batches are timed, and more until `min_seconds` have passed.
  """
  from hypert5 import data, experiment  # pylint: disable=import-outside-toplevel
  form = experiment.data_form(config)
  name = data.resolve_mixture(config.data.mixture, form)
  tasks = restrict(name, max_tasks or sys.maxsize)
  if warmup_batches is None:
    warmup_batches = warmup_for(tasks, batch_size)
  serial = serial_ceiling(name)  # before the pipeline's threads start
  from hypert5_tasks import records as records_lib  # pylint: disable=import-outside-toplevel
  chunk = records_lib.GENERATOR_CHUNK if serial else None
  features = experiment.batch_features(experiment.build_models(config), config.data.pack)
  start = time.perf_counter()
  stream = data.train_batches(config, features, local_batch_size=batch_size, shard_index=0,
                              num_shards=1, form=form)
  next(stream)
  startup = time.perf_counter() - start
  for _ in range(warmup_batches):
    next(stream)
  examples = tokens = timed = 0
  start, start_cpu = time.perf_counter(), cpu_seconds()
  while timed < batches or time.perf_counter() - start < min_seconds:
    batch = next(stream)
    examples += len(batch[features[0]])
    tokens += sum(int(np.count_nonzero(batch[k])) for k in TOKEN_FEATURES if k in batch)
    timed += 1
  wall, cpu = time.perf_counter() - start, cpu_seconds() - start_cpu
  rss = resident_gb()
  stream.close()
  return Measurement(mixture, name, tasks, dict(data.feature_lengths(config)), batch_size,
                     startup, warmup_batches, timed, examples, tokens, wall, cpu, rss,
                     serial, chunk)


def verdict(measurement: Measurement) -> list[dict]:
  """Per target: examples/s needed, the cores that takes per accelerator and per host,
  and whether the host keeps up (enough cores, and any serial stage fast enough)."""
  m, rows = measurement, []
  for target, needed in demand(m.lengths).items():
    host, accelerators, host_cores = HOSTS[target]
    host_needed = needed * accelerators
    cores = math.ceil(host_needed / m.examples_per_core_s)
    serial = m.serial_records_per_s and m.serial_records_per_s.get(m.generator_chunk)
    serial_ok = not serial or serial >= host_needed
    rows.append({"target": target, "examples_per_s_needed": needed,
                 "tokens_per_s_needed": needed * m.tokens / m.examples,
                 "cores_per_accelerator": needed / m.examples_per_core_s,
                 "host": host, "host_examples_per_s_needed": host_needed,
                 "host_cores_needed": cores, "host_cores": host_cores,
                 "serial_stage_fast_enough": serial_ok,
                 "fed": cores <= host_cores and serial_ok})
  return rows


def report(measurement: Measurement, out=sys.stdout) -> dict:
  m = measurement
  lengths = "/".join(str(m.lengths[k]) for k in ("hyper_inputs", "inputs", "targets"))
  chunk = f", records handed over {m.generator_chunk} at a time" if m.generator_chunk else ""
  print(f"\n{m.mixture}{chunk} ({m.registered_name}, {m.tasks} task(s), lengths {lengths}, "
        f"batch {m.batch_size}): first batch after {m.startup_s:.1f} s, {m.warmup_batches} "
        f"warm-up batches, then {m.examples} examples in {m.batches} batches timed: "
        f"{m.wall_s:.2f} s wall, {m.cpu_s:.2f} s CPU", file=out)
  print(f"  measured     {m.examples_per_s:9.1f} examples/s {m.tokens_per_s:11.0f} tokens/s   "
        f"per core: {m.examples_per_core_s:8.1f} examples/s {m.tokens_per_core_s:10.0f} tokens/s",
        file=out)
  rows = verdict(m)
  print(f"  resident memory {m.rss_gb:.1f} GB", file=out)
  if m.serial_records_per_s:
    print("  serial stage (P3's Python reader, one core at most): " + ", ".join(
        f"{rate:.0f} records/s handing {chunk} at a time" + (" (this run)" if chunk ==
                                                             m.generator_chunk else "")
        for chunk, rate in m.serial_records_per_s.items()), file=out)
  for row in rows:
    print(f"  needed at {MFU:.0%} MFU, {row['target']}: {row['examples_per_s_needed']:7.1f} "
          f"examples/s {row['tokens_per_s_needed']:9.0f} tokens/s = "
          f"{row['cores_per_accelerator']:.2f} cores", file=out)
    serial = "" if row["serial_stage_fast_enough"] else "; its serial stage is too slow"
    print(f"    one host keeps its accelerators fed: {'yes' if row['fed'] else 'no'} "
          f"({row['host']}: {row['host_examples_per_s_needed']:.0f} examples/s, needs "
          f"{row['host_cores_needed']} of its {row['host_cores']} cores{serial})", file=out)
  result = {**dataclasses.asdict(m), "examples_per_s": m.examples_per_s,
            "tokens_per_s": m.tokens_per_s, "examples_per_core_s": m.examples_per_core_s,
            "tokens_per_core_s": m.tokens_per_core_s, "verdict": rows}
  print("  json: " + json.dumps(result), file=out)
  return result


def register(plan: dict[str, str]) -> None:
  """Registers the tasks and mixtures over the folders of `plan`."""
  os.environ.update(plan)  # the tasks read them when they register
  import hypert5_tasks  # pylint: disable=import-outside-toplevel
  hypert5_tasks.register_all()


def restrict(mixture: str, max_tasks: int) -> int:
  """Re-registers `mixture` over its first `max_tasks` tasks of nonzero rate, at their
  rates; returns how many tasks of nonzero rate it had (counted up to the cut)."""
  import seqio  # pylint: disable=import-outside-toplevel
  provider = seqio.get_mixture_or_task(mixture)
  if not isinstance(provider, seqio.Mixture):
    return 1
  kept = []
  for task in provider.tasks:
    rate = provider.get_rate(task)
    if rate > 0:
      kept.append((task.name, rate))
    if len(kept) == max_tasks:
      break
  seqio.MixtureRegistry.remove(mixture)
  seqio.MixtureRegistry.add(mixture, kept)
  return len(kept)


def run(mixtures: Sequence[str], *, replica_dir: str | None, batches: int = 20,
        warmup_batches: int | None = None, batch_size: int = 32, min_seconds: float = 0.0,
        max_tasks: int = 0, p3_generator_chunks: Sequence[int] = (),
        size: ReplicaSize = ReplicaSize()) -> list[dict]:
  """Checks everything, writes missing replicas, then measures each mixture."""
  mixtures = check_mixtures(mixtures)
  if (batches < 1 or (warmup_batches or 0) < 0 or batch_size < 1 or max_tasks < 0
      or any(c < 1 for c in p3_generator_chunks)):
    raise BadInput(f"--batches={batches}, --warmup_batches={warmup_batches}, "
                   f"--batch_size={batch_size}, --max_tasks={max_tasks}, --p3_generator_chunks="
                   f"{list(p3_generator_chunks)}: need batches >= 1, warmup >= 0, batch >= 1, "
                   "max_tasks >= 0, chunks >= 1")
  plan = data_plan(mixtures, replica_dir)
  configs = {m: config_of(m) for m in mixtures}
  if replica_dir:
    os.environ.update(plan)
    for path in ensure_replicas(plan, mixtures, size):
      print(f"wrote {path}")
  register(plan)
  print(f"host: {len(os.sched_getaffinity(0))} cores available to this process, "
        f"{os.cpu_count()} in the machine; data: "
        + ", ".join(f"{k}={v}" for k, v in sorted(plan.items())))
  from hypert5_tasks import records as records_lib  # pylint: disable=import-outside-toplevel
  default_chunk, results = records_lib.GENERATOR_CHUNK, []
  for mixture in mixtures:
    # P3 once per chunk asked for (before and after chunking, in one run).
    for chunk in (p3_generator_chunks if mixture == "p3" else ()) or (default_chunk,):
      records_lib.GENERATOR_CHUNK = chunk
      try:
        results.append(report(measure(configs[mixture], mixture, batches=batches,
                                      warmup_batches=warmup_batches, batch_size=batch_size,
                                      min_seconds=min_seconds, max_tasks=max_tasks)))
      finally:
        records_lib.GENERATOR_CHUNK = default_chunk
  return results


def define_flags():
  from absl import flags  # pylint: disable=import-outside-toplevel
  flags.DEFINE_list("mixture", list(DEFAULT_MIXTURES),
                    f"Training mixtures to measure: {', '.join(MIXTURES)}.")
  flags.DEFINE_string("replica_dir", None, "Write (when absent) and read copies of the "
                      "benchmarks in their real formats here; default: the real data "
                      "named by the environment variables.")
  flags.DEFINE_integer("batches", 20, "Timed batches per mixture.")
  flags.DEFINE_float("min_seconds", 20.0, "Time at least this long (more batches).")
  flags.DEFINE_integer("warmup_batches", None, "Untimed batches after the first (default: "
                       "enough to fill every task's shuffle buffer once).")
  flags.DEFINE_integer("max_tasks", 8, "Mix only the first N tasks of a mixture (0: all). "
                       "Each task fills a 1,000-example shuffle buffer before the steady "
                       "state, so all of P3's or S-NI's tasks take long on a small machine.")
  flags.DEFINE_integer("batch_size", 32, "Examples per batch (one host's share).")
  flags.DEFINE_list("p3_generator_chunks", [], "Measure P3 once per value of "
                    "records.GENERATOR_CHUNK, e.g. 1,256 (before and after chunking); "
                    "default: once, as configured.")
  flags.DEFINE_integer("p3_rows", ReplicaSize.p3_rows, "Replica: rows per P3 subset.")
  flags.DEFINE_integer("metaicl_lines", ReplicaSize.metaicl_lines,
                       "Replica: lines per MetaICL training task.")
  flags.DEFINE_integer("c4_documents", ReplicaSize.c4_documents,
                       "Replica: C4 training documents.")


def main(argv):
  from absl import flags  # pylint: disable=import-outside-toplevel
  del argv
  FLAGS = flags.FLAGS  # pylint: disable=invalid-name
  try:
    run(FLAGS.mixture, replica_dir=FLAGS.replica_dir, batches=FLAGS.batches,
        warmup_batches=FLAGS.warmup_batches, batch_size=FLAGS.batch_size,
        min_seconds=FLAGS.min_seconds, max_tasks=FLAGS.max_tasks,
        p3_generator_chunks=[int(c) for c in FLAGS.p3_generator_chunks],
        size=ReplicaSize(p3_rows=FLAGS.p3_rows, metaicl_lines=FLAGS.metaicl_lines,
                         c4_documents=FLAGS.c4_documents))
  except BadInput as e:
    sys.exit(f"hypert5.input_bench: {e}")


if __name__ == "__main__":
  from absl import app  # pylint: disable=import-outside-toplevel
  define_flags()
  app.run(main)
