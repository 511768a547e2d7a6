"""Input pipeline cost of the training mixtures, by design and task count, beside what
the train step consumes.

  python -m hypert5.input_bench --mixture=caclm,p3,metaicl_hr_to_lr,sni_def \
      --replica_dir=/tmp/hypert5_replica --pipeline=tfdata,indexed,grain \
      --max_tasks=8,64,256,0 [--resume_positions=0,1000,100000] [--batch_size=32]

Each (mixture, pipeline, task count) is measured in a process of its own, so its
memory is its own: the mixture is cut to its first N tasks of nonzero rate (0:
all of them), read as `hypert5.train` reads it with the config of the paper's
run (configs/hyperpretrain.py for CACLM, configs/hypert5_mtf.py for the others)
at its lengths (CACLM 384 / 40 / 136, the few-shot benchmarks 1024 / 384 / 128),
and these are printed:

  preprocessing   building the example cache (indexed and grain; once per data)
  first batch     from building the stream to its first batch
  per core        examples per CPU-second of the process in the timed window
                  (every thread counted), after warm-up; and the wall-clock rate
  memory          peak resident memory of the process, and resident after timing
  resume          a fresh stream's first batch at each --resume_positions position

Pipelines (config.data.source):
  tfdata   SeqIO's tf.data pipeline (`seqio_tfdata`): a 1,000-example shuffle
           buffer per task, filled before the steady state (the warm-up draws
           1.25 x tasks x 1,000 examples untimed); resumes by replaying batches
           (--tfdata_resume_positions, default 0 and 300)
  indexed  the training stream (`seqio`): hypert5_tasks.indexed over the example
           cache, any batch computed from its position
  grain    the same example reads, mixed and shuffled by Grain
           (`grain.MapDataset.mix` by the rates, then `shuffle`), the loader
           MaxText uses: the design measured against ours (`pip install grain`)

Data. Without --replica_dir the real copies are read from the folders the
tasks read ($TFDS_DATA_DIR, $HYPERT5_P3_DIR, $HYPERT5_METAICL_DIR,
$HYPERT5_SNI_DIR) with T5's vocabulary ($HYPERT5_VOCAB). With --replica_dir,
copies in the real formats are written there first when absent
(hypert5/replicas.py) and read instead; their example caches go to DIR/cache
unless --cache_dir says otherwise.

Demand. What the train step consumes at `hypert5.bench`'s large preset
(T5-Large hypermodel and downstream model, bf16, prefix length 32, LoRA rank 32)
at the mixture's lengths, at 40% MFU, from the FLOPs formula of
`hypert5.bench.train_flops`: examples/s = 0.4 x peak / FLOPs per example (the
cheaper of prefix and LoRA, which consumes more), on one H100 SXM or H200
(989e12 dense bf16 FLOP/s) and on one TPU v4 host (4 chips x 275e12). The verdict:
cores per accelerator = that rate / the per-core rate; one host keeps its
accelerators fed when its cores cover all of them (an 8-GPU node, 112 cores; a
TPU v4 VM, 120) and any serial stage keeps up with the host's total (tfdata's
P3 reader, a Python generator per subset under one interpreter lock, is timed
alone for that).

Imports neither TensorFlow nor SeqIO until a pipeline is built.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import resource
import subprocess
import sys
import time
from collections.abc import Sequence

import numpy as np
from absl import flags

from hypert5 import cli, experiment
from hypert5.errors import BenchError
from hypert5.tools import bench, replicas
from hypert5.training import data

FLAGS = flags.FLAGS

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

ENV_VOCAB, DATA_OF, benchmark_of = replicas.ENV_VOCAB, replicas.DATA_OF, replicas.benchmark_of
PIPELINES = ("tfdata", "indexed", "grain")
SOURCE_OF = {"tfdata": "seqio_tfdata", "indexed": "seqio", "grain": "seqio"}
DEFAULT_PIPELINES = ("tfdata", "indexed")


def check_mixtures(names: Sequence[str]) -> list[str]:
  """The mixtures to measure, or BenchError naming the unknown one and the known ones."""
  names = [n.strip() for n in names if n.strip()]
  if not names:
    raise BenchError(f"--mixture is empty; pass some of: {', '.join(MIXTURES)}")
  for name in names:
    if name not in MIXTURES:
      raise BenchError(f"--mixture={name!r} is not a training mixture this bench knows; "
                     f"pass one or more (comma-separated) of: {', '.join(MIXTURES)}")
  return list(dict.fromkeys(names))


def check_pipelines(names: Sequence[str]) -> list[str]:
  """The pipelines to measure, or BenchError naming the known ones."""
  names = [n.strip() for n in names if n.strip()]
  if not names or any(n not in PIPELINES for n in names):
    raise BenchError(f"--pipeline={','.join(names)!r}: pass one or more (comma-separated) of "
                   f"{', '.join(PIPELINES)}")
  return list(dict.fromkeys(names))


def config_of(mixture: str, pipeline: str = "indexed"):
  """The paper's config that trains on `mixture` (its mixture name, lengths, seed),
  reading it through `pipeline`."""
  path, arg = MIXTURES[mixture]
  config = cli.load_config(cli.repository_config(path), arg)
  config.data.source = SOURCE_OF[pipeline]
  return config


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
  the environment's folders, which must hold the data; otherwise BenchError
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
      raise BenchError(f"no data for --mixture={mixture}: {where}. Point {env} at a copy of "
                     f"the benchmark, or pass --replica_dir=DIR to write (once) and read "
                     f"copies in the real formats there.")
    plan[env] = root
  vocab = os.environ.get(ENV_VOCAB)
  if not vocab or not os.path.isfile(vocab):
    raise BenchError(f"{ENV_VOCAB} is {'not set' if not vocab else repr(vocab) + ', not a file'}"
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
  startup_s: float  # building the stream and its first batch
  warmup_batches: int
  batches: int  # timed
  examples: int  # examples in the timed batches
  tokens: int  # their non-padding tokens (hypermodel input, input, target)
  wall_s: float
  cpu_s: float
  rss_gb: float = 0.0  # resident memory after the timed batches
  pipeline: str = "indexed"
  preprocess_s: float = 0.0  # building the example cache (0 when it was there)
  peak_rss_gb: float = 0.0  # the process's peak resident memory
  resume_s: dict[str, float] = dataclasses.field(default_factory=dict)  # position -> first batch
  # Records/s of a stage that runs under Python's GIL, on at most one core however
  # many the host has (tfdata's P3 parquet reader), by records handed to TensorFlow at
  # a time (1: before chunking); None where there is none.
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


def peak_resident_gb() -> float:
  """The process's peak resident memory, in GB (Linux reports KiB)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


def serial_ceiling(mixture: str, records: int = 8192) -> dict[int, float] | None:
  """Records/s of the first task's source where it is a Python generator (P3), handing
  records to TensorFlow one at a time and in chunks (`records.GENERATOR_CHUNK`); None
  where the source is not Python's.

  In the tfdata pipeline every P3 task's rows come from a Python generator
  (`records_from_generator`), and all of them share one interpreter lock: this rate
  bounds the whole mixture's. Read in batches of 512, so that the measuring loop's
  own Python is not counted. (The indexed pipeline runs that reader once, when it
  builds the cache.)
  """
  import seqio  # noqa: PLC0415  (TF: measuring process only)

  from hypert5_tasks import records as records_lib  # noqa: PLC0415  (TF: measuring process only)
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


def warmup_for(pipeline: str, tasks: int, batch_size: int) -> int:
  """Untimed batches before the steady state.

  tfdata: SeqIO shuffles each task after its preprocessing (1,000 examples,
  forms.py) and prefetches each task in the background from the start, so a
  mixture of T tasks preprocesses about T x 1,000 examples more than it yields
  before its steady state. The indexed streams have no buffers: a few batches.
  """
  if pipeline != "tfdata":
    return 2
  from hypert5_tasks import forms  # noqa: PLC0415  (TF: measuring process only)
  return math.ceil(1.25 * tasks * forms.SHUFFLE_BUFFER_SIZE / batch_size)


class GrainStream:
  """The indexed pipeline's example reads, mixed and shuffled by Grain instead of
  hypert5_tasks.sampling: `grain.MapDataset.mix` interleaves the tasks' position
  streams by the rates (deterministically), then `shuffle` permutes the mixture
  (Grain's index_shuffle), so row g is still a function of g."""

  EPOCHS = 1000  # positions per task: this many epochs of its examples

  def __init__(self, stream):
    try:
      import grain  # noqa: PLC0415  (Grain only for --pipeline=grain)
    except ImportError as e:
      raise BenchError("--pipeline=grain needs Grain: pip install grain") from e
    self.stream = stream
    parents = [grain.MapDataset.range(s.size * self.EPOCHS).map(
        lambda p, t=t: (t, p)) for t, s in enumerate(stream.streams)]
    self._mixed = grain.MapDataset.mix(parents, weights=[float(r) for r in stream.rates])
    self._mixed = self._mixed.shuffle(seed=stream.seed % 2**32)

  def batch(self, position: int, *, batch_size: int) -> dict[str, np.ndarray]:
    from hypert5_tasks import indexed  # noqa: PLC0415  (TF: measuring process only)
    pairs = [self._mixed[g] for g in range(position * batch_size, (position + 1) * batch_size)]
    tasks = np.array([t for t, _ in pairs])
    positions = np.array([p for _, p in pairs])
    examples = [None] * len(pairs)
    for t in np.unique(tasks):
      mine = np.nonzero(tasks == t)[0]
      for i, example in zip(mine, self.stream.streams[t].examples(positions[mine])):
        examples[i] = example
    return indexed.model_features(examples, self.stream.lengths)


def _batches(config, pipeline: str, features, batch_size: int, start: int):
  """The batches `pipeline` gives from position `start`."""
  form = experiment.data_form(config)
  if pipeline == "grain":
    grain_stream = GrainStream(data.open_stream(config, form))
    position = start
    while True:
      batch = grain_stream.batch(position, batch_size=batch_size)
      position += 1
      yield {k: batch[k] for k in features}
  yield from data.train_batches(config, features, local_batch_size=batch_size, shard_index=0,
                                num_shards=1, start_batch=start, form=form)


def measure(config, mixture: str, *, batches: int, batch_size: int,
            warmup_batches: int | None = None, min_seconds: float = 0.0,
            max_tasks: int = 0, pipeline: str | None = None,
            resume_positions: Sequence[int] = ()) -> Measurement:
  """Times the stream `hypert5.train` reads (`data.train_batches`) on one host's shard.

  pipeline: tfdata, indexed or grain (default: the config's data.source). The mixture
  is first cut to its first `max_tasks` tasks (0: all of them). The indexed and
  grain pipelines build what the example cache lacks first (timed apart). After the
  first batch and `warmup_batches` more (None: `warmup_for`), `batches` batches are
  timed, and more until `min_seconds` have passed. Then, for each position of
  `resume_positions`, a fresh stream's first batch there.
  """
  pipeline = pipeline or {"seqio_tfdata": "tfdata"}.get(config.data.source, "indexed")
  config = config.copy_and_resolve_references()
  config.data.source = SOURCE_OF[pipeline]
  form = experiment.data_form(config)
  from hypert5_tasks import forms  # noqa: PLC0415  (TF: measuring process only)
  name = forms.resolve_mixture(config.data.mixture, form)
  tasks = restrict(name, max_tasks or sys.maxsize)
  if warmup_batches is None:
    warmup_batches = warmup_for(pipeline, tasks, batch_size)
  serial = chunk = preprocess_s = None
  if pipeline == "tfdata":
    serial = serial_ceiling(name)  # before the pipeline's threads start
    from hypert5_tasks import records as records_lib  # noqa: PLC0415  (TF: measuring process only)
    chunk = records_lib.GENERATOR_CHUNK if serial else None
  else:
    from hypert5_tasks import indexed  # noqa: PLC0415  (TF: measuring process only)
    start = time.perf_counter()
    planned = indexed.plan(name, config.data.split, config.data.cache_dir or None)
    if planned.missing:
      indexed.build_caches(planned.missing, planned.root, progress=False)
    preprocess_s = time.perf_counter() - start
  features = experiment.batch_features(experiment.build_models(config), config.data.pack)
  start = time.perf_counter()
  stream = _batches(config, pipeline, features, batch_size, 0)
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
  resume = {}
  for position in resume_positions:
    if pipeline != "tfdata":
      from hypert5_tasks import sampling  # noqa: PLC0415  (TF: measuring process only)
      sampling.permutation.cache_clear()  # nothing computed for the earlier stream is reused
    start = time.perf_counter()
    fresh = _batches(config, pipeline, features, batch_size, int(position))
    next(fresh)
    resume[str(position)] = time.perf_counter() - start
    fresh.close()
  return Measurement(mixture, name, tasks, dict(data.feature_lengths(config)), batch_size,
                     startup, warmup_batches, timed, examples, tokens, wall, cpu, rss,
                     pipeline, preprocess_s or 0.0, peak_resident_gb(), resume, serial, chunk)


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
  print(f"\n{m.mixture} [{m.pipeline}]{chunk} ({m.registered_name}, {m.tasks} task(s), lengths "
        f"{lengths}, batch {m.batch_size}): preprocessing {m.preprocess_s:.1f} s, first batch "
        f"after {m.startup_s:.1f} s, {m.warmup_batches} warm-up batches, then {m.examples} "
        f"examples in {m.batches} batches timed: {m.wall_s:.2f} s wall, {m.cpu_s:.2f} s CPU",
        file=out)
  print(f"  measured     {m.examples_per_s:9.1f} examples/s {m.tokens_per_s:11.0f} tokens/s   "
        f"per core: {m.examples_per_core_s:8.1f} examples/s {m.tokens_per_core_s:10.0f} tokens/s",
        file=out)
  print(f"  memory: peak {m.peak_rss_gb:.2f} GB resident, {m.rss_gb:.2f} GB after timing",
        file=out)
  if m.resume_s:
    print("  resume: first batch of a fresh stream at position " + ", ".join(
        f"{p}: {s:.2f} s" for p, s in m.resume_s.items()), file=out)
  rows = verdict(m)
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
  import hypert5_tasks  # noqa: PLC0415  (TF: measuring process only)
  hypert5_tasks.register_all()


def restrict(mixture: str, max_tasks: int) -> int:
  """Re-registers `mixture` over its first `max_tasks` tasks of nonzero rate, at their
  rates; returns how many tasks of nonzero rate it had (counted up to the cut)."""
  import seqio  # noqa: PLC0415  (TF: measuring process only)
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


# ---------------------------------------------------------------------------
# One process per measurement.


def _measure_here(params: dict) -> dict:
  """A measurement in this process (the child's side of `run`); with "preprocess_only",
  only the building of the example cache, timed."""
  register(params["plan"])
  from hypert5_tasks import records as records_lib  # noqa: PLC0415  (TF: measuring process only)
  config = config_of(params["mixture"], params["pipeline"])
  if params.get("cache_dir"):
    config.data.cache_dir = params["cache_dir"]
  if params.get("preprocess_only"):
    from hypert5_tasks import forms, indexed  # noqa: PLC0415  (TF: measuring process only)
    name = forms.resolve_mixture(config.data.mixture, experiment.data_form(config))
    tasks = restrict(name, params["max_tasks"] or sys.maxsize)
    start = time.perf_counter()
    planned = indexed.plan(name, config.data.split, config.data.cache_dir or None)
    indexed.build_caches(planned.missing, planned.root, progress=False)
    result = {"preprocess_s": time.perf_counter() - start, "tasks": tasks,
              "built": len(planned.missing), "peak_rss_gb": peak_resident_gb()}
    print("  json: " + json.dumps(result))
    return result
  if params.get("generator_chunk"):
    records_lib.GENERATOR_CHUNK = params["generator_chunk"]
  return report(measure(config, params["mixture"], batches=params["batches"],
                        warmup_batches=params["warmup_batches"],
                        batch_size=params["batch_size"], min_seconds=params["min_seconds"],
                        max_tasks=params["max_tasks"], pipeline=params["pipeline"],
                        resume_positions=params["resume_positions"]))


def _measure_in_child(params: dict, quiet: bool = False) -> dict | None:
  """Runs one measurement in a fresh process (its memory is its own); None if it failed."""
  env = dict(os.environ, **params["plan"], TF_CPP_MIN_LOG_LEVEL="3")
  result = subprocess.run([sys.executable, "-m", "hypert5.input_bench",
                           "--child=" + json.dumps(params)],
                          capture_output=True, text=True, env=env, check=False)
  found = None
  for line in result.stdout.splitlines():
    if line.startswith("  json: "):
      found = json.loads(line[len("  json: "):])
    elif not quiet:
      print(line)
  if result.returncode or found is None:
    tail = "\n".join(result.stderr.strip().splitlines()[-5:])
    print(f"\n{params['mixture']} [{params['pipeline']}] {params['max_tasks'] or 'all'} tasks: "
          f"failed (exit {result.returncode}):\n{tail}")
    return None
  return found


def summary_table(results: Sequence[dict], out=sys.stdout) -> None:
  """One line per measurement: the figures the issue's targets are about."""
  print("\n| mixture | pipeline | tasks | preprocessing s | first batch s | examples/s per "
        "core | wall examples/s | peak GB | resume: position -> first batch s |", file=out)
  print("|---|---|---:|---:|---:|---:|---:|---:|---|", file=out)
  for r in results:
    resume = ", ".join(f"{p}: {s:.2f}" for p, s in r["resume_s"].items())
    print(f"| {r['mixture']} | {r['pipeline']} | {r['tasks']} | {r['preprocess_s']:.1f} | "
          f"{r['startup_s']:.1f} | {r['examples_per_core_s']:,.0f} | {r['examples_per_s']:,.0f} "
          f"| {r['peak_rss_gb']:.2f} | {resume} |", file=out)


def run(mixtures: Sequence[str], *, replica_dir: str | None, pipelines: Sequence[str] = (
        "indexed",), batches: int = 20, warmup_batches: int | None = None,
        batch_size: int = 32, min_seconds: float = 0.0, max_tasks: Sequence[int] = (8,),
        resume_positions: Sequence[int] = (), tfdata_resume_positions: Sequence[int] = (),
        p3_generator_chunks: Sequence[int] = (), cache_dir: str | None = None,
        size: replicas.ReplicaSize = replicas.ReplicaSize(),
        in_process: bool = False) -> list[dict]:
  """Checks everything, writes missing replicas, then measures each (mixture,
  pipeline, task count), each in a process of its own unless `in_process`."""
  mixtures = check_mixtures(mixtures)
  pipelines = check_pipelines(pipelines)
  max_tasks = list(max_tasks)
  if (batches < 1 or (warmup_batches or 0) < 0 or batch_size < 1 or not max_tasks
      or any(t < 0 for t in max_tasks) or any(c < 1 for c in p3_generator_chunks)
      or any(p < 0 for p in [*resume_positions, *tfdata_resume_positions])):
    raise BenchError(f"--batches={batches}, --warmup_batches={warmup_batches}, "
                   f"--batch_size={batch_size}, --max_tasks={max_tasks}, --p3_generator_chunks="
                   f"{list(p3_generator_chunks)}, resume positions {list(resume_positions)} "
                   f"{list(tfdata_resume_positions)}: need batches >= 1, warmup >= 0, batch "
                   ">= 1, task counts >= 0 (0: all), chunks >= 1, positions >= 0")
  plan = data_plan(mixtures, replica_dir)
  if replica_dir:
    os.environ.update(plan)
    for path in replicas.ensure_replicas(plan, mixtures, size):
      print(f"wrote {path}")
    cache_dir = cache_dir or os.path.join(replica_dir, "cache")
  print(f"host: {len(os.sched_getaffinity(0))} cores available to this process, "
        f"{os.cpu_count()} in the machine; data: "
        + ", ".join(f"{k}={v}" for k, v in sorted(plan.items()))
        + (f"; example cache: {cache_dir}" if cache_dir else ""))
  results = []
  for mixture in mixtures:
    for pipeline in pipelines:
      for count in max_tasks:
        # tfdata's P3 once per chunk asked for (before and after chunking, in one run).
        chunks = (p3_generator_chunks if mixture == "p3" and pipeline == "tfdata" else ()) or (
            None,)
        for chunk in chunks:
          params = {"mixture": mixture, "pipeline": pipeline, "max_tasks": count,
                    "batches": batches, "warmup_batches": warmup_batches,
                    "batch_size": batch_size, "min_seconds": min_seconds,
                    "resume_positions": list(tfdata_resume_positions if pipeline == "tfdata"
                                             else resume_positions),
                    "generator_chunk": chunk, "plan": plan, "cache_dir": cache_dir}
          built = None
          if pipeline != "tfdata" and not in_process:
            # The cache is built in a process of its own: the stream's memory is its own.
            built = _measure_in_child({**params, "preprocess_only": True}, quiet=True)
          found = _measure_here(params) if in_process else _measure_in_child(params)
          if found is not None:
            if built is not None:
              print(f"  preprocessing, in a process of its own: {built['preprocess_s']:.1f} s "
                    f"({built['built']} task(s) built), peak {built['peak_rss_gb']:.2f} GB")
              found["preprocess_s"] = built["preprocess_s"]
              found["preprocess_peak_rss_gb"] = built["peak_rss_gb"]
            results.append(found)
  summary_table(results)
  return results


def define_flags():
  flags.DEFINE_list("mixture", list(DEFAULT_MIXTURES),
                    f"Training mixtures to measure: {', '.join(MIXTURES)}.")
  flags.DEFINE_list("pipeline", list(DEFAULT_PIPELINES),
                    f"Input pipelines to measure: {', '.join(PIPELINES)}.")
  flags.DEFINE_string("replica_dir", None, "Write (when absent) and read copies of the "
                      "benchmarks in their real formats here; default: the real data "
                      "named by the environment variables.")
  flags.DEFINE_string("cache_dir", None, "The example cache (default: REPLICA_DIR/cache "
                      "with --replica_dir, else the config's).")
  flags.DEFINE_integer("batches", 20, "Timed batches per measurement.")
  flags.DEFINE_float("min_seconds", 20.0, "Time at least this long (more batches).")
  flags.DEFINE_integer("warmup_batches", None, "Untimed batches after the first (default: "
                       "tfdata: enough to fill every task's shuffle buffer once; else 2).")
  flags.DEFINE_list("max_tasks", ["8"], "Task counts to mix: the first N tasks of each "
                    "mixture (0: all). tfdata fills a 1,000-example shuffle buffer per task "
                    "before its steady state, so all of P3's or S-NI's tasks take long (and "
                    "more memory than a small machine has).")
  flags.DEFINE_list("resume_positions", ["0", "1000", "100000"],
                    "indexed and grain: the first batch of a fresh stream at these positions.")
  flags.DEFINE_list("tfdata_resume_positions", ["0", "300"],
                    "tfdata: the same, by replaying the batches before (about 0.1 s each).")
  flags.DEFINE_integer("batch_size", 32, "Examples per batch (one host's share).")
  flags.DEFINE_list("p3_generator_chunks", [], "tfdata: measure P3 once per value of "
                    "records.GENERATOR_CHUNK, e.g. 1,256 (before and after chunking); "
                    "default: once, as configured.")
  flags.DEFINE_integer("p3_rows", replicas.ReplicaSize.p3_rows, "Replica: rows per P3 subset.")
  flags.DEFINE_integer("metaicl_lines", replicas.ReplicaSize.metaicl_lines,
                       "Replica: lines per MetaICL training task.")
  flags.DEFINE_integer("c4_documents", replicas.ReplicaSize.c4_documents,
                       "Replica: C4 training documents.")
  flags.DEFINE_string("child", None, "(internal) one measurement, as JSON.")


def main(argv):
  del argv
  if FLAGS.child:
    _measure_here(json.loads(FLAGS.child))
    return
  ints = lambda values, flag: [_int(v, flag) for v in values]
  run(FLAGS.mixture, replica_dir=FLAGS.replica_dir, pipelines=FLAGS.pipeline,
      batches=FLAGS.batches, warmup_batches=FLAGS.warmup_batches,
      batch_size=FLAGS.batch_size, min_seconds=FLAGS.min_seconds,
      max_tasks=ints(FLAGS.max_tasks, "--max_tasks"),
      resume_positions=ints(FLAGS.resume_positions, "--resume_positions"),
      tfdata_resume_positions=ints(FLAGS.tfdata_resume_positions, "--tfdata_resume_positions"),
      p3_generator_chunks=ints(FLAGS.p3_generator_chunks, "--p3_generator_chunks"),
      cache_dir=FLAGS.cache_dir,
      size=replicas.ReplicaSize(p3_rows=FLAGS.p3_rows, metaicl_lines=FLAGS.metaicl_lines,
                                c4_documents=FLAGS.c4_documents))


def _int(value: str, flag: str) -> int:
  try:
    return int(value)
  except ValueError as e:
    raise BenchError(f"{flag}: {value!r} is not an integer") from e


def run_command() -> None:
  """`python -m hypert5.input_bench`."""
  cli.run(main, define_flags)


if __name__ == "__main__":
  run_command()
