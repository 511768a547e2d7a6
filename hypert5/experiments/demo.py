"""The main job on the embedded default: hypertuning end to end, on a CPU, in minutes.

  python -m hypert5.demo --workdir=workdir/demo [--seeds=3] [--quick] [--control|--rules]
      [--workers=1]

Runs the paper's pipeline at toy scale (stages in configs/demo.py): pretrain a
small downstream T5, hyperpretrain HyperT5-Prefix and HyperT5-LoRA with CACLM,
multi-task fine-tune them and the baselines on the embedded in-context
benchmark (tasks/embedded_icl.py; --rules: the rules benchmark, --control: its
constant-family control; tasks/embedded_benchmarks.py names them), evaluating
the held-out tasks along the way, then evaluate everything and write the
results table, the learning curves and the plots (analogues of the paper's
Table 1 and Figure 4) to the workdir. Each stage resumes where it stopped; a
finished stage is skipped.

After the downstream model, the stages are independent but for hyperpretraining
before MTF, so two worker processes train them side by side (make_plan says
which): a small model's step keeps about one core busy, and tracing and
compiling hold Python's lock, so one process leaves the second core mostly idle.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
from absl import app, flags

from hypert5 import cli, experiment
from hypert5.errors import ConfigError, Preempted
from hypert5.formats import checkpoints
from hypert5.inference import evaluate as eval_lib
from hypert5.model import t5
from hypert5.training import loop as train
from hypert5_tasks import embedded, embedded_benchmarks, vocab

FLAGS = flags.FLAGS
# The jitted train steps of this process's stages: stages with the same step (the
# same models, optimizer, mesh) share it instead of tracing it again.
STEP_CACHE: dict = {}

# Rows of the results table: name -> (stage whose checkpoint is evaluated, eval config stage).
SYSTEMS = collections.OrderedDict([
    ("T5 zero-shot", ("downstream", "lm")),
    ("Shared prefix", ("shared_prefix", "shared_prefix")),
    ("Shared LoRA", ("shared_lora", "shared_lora")),
    ("T5-MTF", ("t5_mtf", "t5_mtf")),
    ("T5-MTF-Few-shot", ("t5_mtf_fewshot", "t5_mtf_fewshot")),
    ("HyperT5-Prefix", ("mtf_prefix", "mtf_prefix")),
    ("HyperT5-LoRA", ("mtf_lora", "mtf_lora")),
    ("HyperT5-Prefix, no hyperpretraining", ("mtf_prefix_nohp", "mtf_prefix_nohp")),
])


# Controls and a reference (in-context benchmark): name -> (system whose model is
# evaluated, what it reads instead: another task's or the mirror task's examples,
# or the task's rule said outright in its input, which shows what the frozen
# downstream model can do when told the task, the most that steering it can give).
CONTROLS = collections.OrderedDict([
    ("HyperT5-Prefix, another task's examples", ("HyperT5-Prefix", "another task")),
    ("HyperT5-Prefix, the mirror task's examples", ("HyperT5-Prefix", "mirror")),
    ("T5 told the rule (instruction in its input)", ("T5 zero-shot", "instructed")),
])


# The flags that pick another benchmark than the default: each is the `flag` of a row of
# tasks/embedded_benchmarks.py, and the same word in configs/demo.py's arg.
BENCHMARK_FLAGS = ("control", "rules")


def benchmark_flag() -> str:
  """The benchmark flag given on the command line, or "" for the default."""
  given = [name for name in BENCHMARK_FLAGS if FLAGS[name].value]
  if len(given) > 1:
    raise app.UsageError(f"{' and '.join('--' + name for name in given)} name two "
                         "benchmarks; pass one")
  return given[0] if given else ""


@dataclasses.dataclass(frozen=True)
class Mode:
  quick: bool = False  # the test suite's smoke version
  flag: str = ""  # the benchmark's flag (BENCHMARK_FLAGS); "": the default

  @property
  def flags(self) -> list[str]:
    return (["quick"] if self.quick else []) + ([self.flag] if self.flag else [])

  @property
  def config_flags(self) -> str:
    """What follows the stage in configs/demo.py's arg, e.g. ",quick,rules"."""
    return "".join(f",{flag}" for flag in self.flags)

  @property
  def command_flags(self) -> str:
    return "".join(f" --{flag}" for flag in self.flags)

  @property
  def benchmark(self) -> embedded_benchmarks.Spec:
    return embedded_benchmarks.by_flag(self.flag)

  @property
  def controls(self) -> tuple[str, ...]:
    return tuple(CONTROLS) if self.benchmark.curves_and_controls else ()


def define_flags() -> None:
  flags.DEFINE_string("workdir", "workdir/demo", "Where every stage writes.")
  flags.DEFINE_integer("seeds", 1, "Seeds to run (the figures use 3); results are averaged.")
  flags.DEFINE_bool("quick", False, "A minutes-long smoke version (tiny model, 3 steps a stage).")
  flags.DEFINE_bool("control", False, "Run on the control benchmark (the constant family "
                    "with fixed answer words) instead of the embedded in-context benchmark.")
  flags.DEFINE_bool("rules", False, "Run on the rules benchmark (embedded_fewshot: rules over "
                    "lines of verse) instead of the embedded in-context benchmark.")
  flags.DEFINE_integer("workers", None, "Processes that train independent stages side by "
                       "side: 1 or 2 (default: 2 where the machine has 2 cores or more).")
  flags.DEFINE_integer("worker", 0, "Internal: 1 in the second worker's process, which the "
                       "first starts.")


@dataclasses.dataclass(frozen=True)
class Job:
  """One item of the plan: train a stage, or evaluate systems of one seed."""
  label: str
  weight: int  # in steps, for the estimate of the time left
  seed: int
  stage: str | None = None
  systems: tuple[str, ...] = ()
  worker: int = 0  # 0: the demo's own process; 1: the second worker (SecondWorker)

  def done(self, workdir: str) -> bool:
    if self.stage is not None:
      return train.is_finished(stage_dir(self.stage, self.seed, workdir))
    return all(os.path.exists(results_path(system, self.seed, workdir))
               for system in self.systems)


# With two workers the second takes these stages and evaluates their systems. Stages
# that share a compiled step or a checkpoint (hyperpretrain_x -> mtf_x, mtf_prefix ->
# mtf_prefix_nohp) stay in one worker; the split balances the two workers' time.
SECOND_WORKER_STAGES = ("hyperpretrain_lora", "mtf_lora", "shared_lora", "t5_mtf",
                        "t5_mtf_fewshot")


def make_plan(seeds: int, mode: Mode, workers: int) -> list[Job]:
  """Every job in the order the workers run theirs: the downstream model first (every
  other stage starts from it), then each seed's stages, then each seed's evaluations."""
  config_file = cli.repository_config("demo.py")
  stages = cli.load_config_module(config_file).STAGES
  steps = {s: cli.load_config(config_file, s + mode.config_flags).total_steps for s in stages}
  worker_of = lambda stage: int(workers == 2 and stage in SECOND_WORKER_STAGES)
  plan = [Job("pretrain the downstream T5", steps["lm"], 0, stage="lm")]
  for seed in range(seeds):
    plan += [Job(f"seed {seed}: {s}", steps[s], seed, stage=s, worker=worker_of(s))
             for s in stages if s != "lm"]
  eval_weight = max(steps["mtf_prefix"] // 4, 1)
  for seed in range(seeds):
    for worker in range(workers):
      systems = tuple(name for name, (stage, _) in SYSTEMS.items()
                      if worker_of(stage) == worker)
      if worker == 0:
        systems += mode.controls
      plan.append(Job(f"seed {seed}: evaluate {len(systems)} systems on the held-out tasks",
                      eval_weight * len(systems) // len(SYSTEMS), seed, systems=systems,
                      worker=worker))
  return plan


class Progress:
  """Headers for one worker's jobs: the job's place in the plan, the time since the
  demo started, and this worker's time left at its pace so far."""

  def __init__(self, plan: list[Job], worker: int, workers: int):
    self.plan, self.worker, self.workers = plan, worker, workers
    self.left_weight = sum(j.weight for j in plan if j.worker == worker)
    self.done_weight = 0
    self.start = time.time()  # the second worker takes the first's (SecondWorker.go)
    self.pace_start = None  # when this worker began its first job

  def begin(self, index: int) -> None:
    now = time.time()
    self.pace_start = self.pace_start or now
    tag = f"worker {self.worker + 1}, " if self.workers > 1 else ""
    eta = ""
    if self.done_weight:
      left = (now - self.pace_start) / self.done_weight * self.left_weight
      eta = f", about {left / 60:.1f} min left"
    print(f"\n[{index + 1}/{len(self.plan)}] {self.plan[index].label} "
          f"({tag}{(now - self.start) / 60:.1f} min elapsed{eta})", flush=True)

  def end(self, index: int) -> None:
    self.done_weight += self.plan[index].weight
    self.left_weight -= self.plan[index].weight


class SecondWorker:
  """The second worker: the same command with --worker=1, started at once so its imports
  overlap the first stage; it starts its jobs when go() says the downstream model is
  there. Its output shares the terminal (lines tagged "worker 2", no progress bar).
  It stops, saving its current step, when this process's end of its stdin closes:
  whatever way this process ends, the worker does not run on alone."""

  def __init__(self, command: list[str]):
    env = dict(os.environ, HYPERT5_PROGRESS="0")
    self.process = subprocess.Popen(command, stdin=subprocess.PIPE, env=env, text=True)

  def go(self, demo_start: float) -> None:
    self.process.stdin.write(f"go {demo_start!r}\n")
    self.process.stdin.flush()

  def check(self) -> None:
    """Raises if the worker has stopped before its end."""
    code = self.process.poll()
    if code == cli.EXIT_PREEMPTED:
      raise Preempted("worker 2 was stopped; its stage is saved")
    if code not in (None, 0):
      raise WorkerFailed(f"the demo's worker 2 failed (exit code {code}); its error is above")

  def finish(self) -> None:
    self.process.wait()
    self.check()

  def stop(self) -> None:
    """Closes its stdin (it stops; a train loop saves its step first) and waits for it."""
    if self.process.poll() is None:
      self.process.stdin.close()
      self.process.wait()


class WorkerFailed(Exception):
  """The second worker exited with an error (printed above, on the shared stderr)."""


def prepare(mode: Mode) -> None:
  """What a worker can do before the downstream model exists: its imports (TensorFlow,
  SeqIO and the task registry take seconds) and generating the benchmark."""
  mode.benchmark.generate()


def wait_for_go_then_watch_stdin() -> float | None:
  """Worker 2: blocks until the first worker says go (returns the demo's start time) or
  has gone (None). Then a thread watches stdin: when it closes, SIGTERM (the train loop
  saves and exits)."""
  line = sys.stdin.readline().split()
  if len(line) != 2 or line[0] != "go":
    return None

  def watch():
    sys.stdin.read()
    os.kill(os.getpid(), signal.SIGTERM)

  threading.Thread(target=watch, daemon=True, name="hypert5-demo-parent").start()
  return float(line[1])


def stage_config(stage: str, seed: int, mode: Mode, workdir: str):
  config = cli.load_config(cli.repository_config("demo.py"), stage + mode.config_flags)
  config.seed = seed
  downstream = os.path.join(workdir, "downstream")
  if stage != "lm":
    config.init.downstream_checkpoint = downstream
  if stage in ("mtf_prefix", "mtf_lora"):
    config.init.hyper_checkpoint = os.path.join(
        workdir, f"seed{seed}", "hyperpretrain_" + stage.split("_")[1])
  return config


def run_stage(stage: str, seed: int, mode: Mode, workdir: str) -> None:
  """Trains one stage (resuming if interrupted); the LM stage also exports the model."""
  config = stage_config(stage, seed, mode, workdir)
  run_dir = stage_dir(stage, seed, workdir)
  train.train_to_completion(config, run_dir, step_cache=STEP_CACHE)
  if stage == "lm" and not os.path.exists(os.path.join(workdir, "downstream")):
    export_downstream(config, run_dir, os.path.join(workdir, "downstream"))


def stage_dir(stage: str, seed: int, workdir: str) -> str:
  return os.path.join(workdir, "lm") if stage == "lm" else os.path.join(
      workdir, f"seed{seed}", stage)


def export_downstream(config, run_dir: str, destination: str) -> None:
  """The pretrained LM becomes a native model checkpoint (with its vocabulary)."""
  models = experiment.build_models(config)
  abstract = t5.unbox_shapes(experiment.abstract_params(models, "downstream"))
  params = checkpoints.restore_part(run_dir, "downstream", abstract)
  checkpoints.save_model(destination, params, models.downstream.config,
                         str(vocab.EMBEDDED_VOCAB_PATH))


def other_task(name: str, kind: str, benchmark: embedded_benchmarks.Spec) -> str:
  """A control's source of examples for held-out task `name` of `benchmark`: its mirror,
  or the task in the same place (rule index and orientation) of the next family."""
  if kind == "mirror":
    return embedded.mirror_name(name)
  family_of = benchmark.heldout_families()
  of_family = collections.defaultdict(list)
  for task, family in family_of.items():
    of_family[family].append(task)
  families = benchmark.families
  next_family = families[(families.index(family_of[name]) + 1) % len(families)]
  return of_family[next_family][of_family[family_of[name]].index(name)]


def evaluate_system(system: str, seed: int, mode: Mode, workdir: str) -> dict:
  context_of, kind = None, None
  if system in CONTROLS:
    model_system, kind = CONTROLS[system]
    if kind != "instructed":
      context_of = lambda name: other_task(name, kind, mode.benchmark)
    stage, config_stage = SYSTEMS[model_system]
  else:
    stage, config_stage = SYSTEMS[system]
  path = results_path(system, seed, workdir)
  if os.path.exists(path):
    with open(path) as f:
      return json.load(f)
  config = stage_config(config_stage, seed, mode, workdir)
  if config_stage == "lm":  # the zero-shot model reads the held-out tasks as the baselines do
    baseline = stage_config("t5_mtf", seed, mode, workdir).data
    config.data.inputs_length, config.data.targets_length = (baseline.inputs_length,
                                                             baseline.targets_length)
  if kind == "instructed":
    config.eval.mixture = mode.benchmark.instructed_mixture
    # The instructed inputs are as long as the downstream model's pretraining read.
    config.data.inputs_length = stage_config("lm", seed, mode, workdir).data.inputs_length
  if mode.quick:  # a smoke test: the first two mirrored pairs of the test mixture
    config.eval.max_examples, config.eval.max_tasks = 4, 4
  checkpoint = (os.path.join(workdir, "downstream") if stage == "downstream"
                else stage_dir(stage, seed, workdir))
  results, predictions = eval_lib.evaluate(config, checkpoint, name=system, progress=False,
                                           context_of=context_of)
  eval_lib.write_results(os.path.dirname(path), results, predictions)
  return results


def results_path(system: str, seed: int, workdir: str) -> str:
  if system in CONTROLS:
    model_system, kind = CONTROLS[system]
    return os.path.join(workdir, f"seed{seed}", "eval",
                        f"{SYSTEMS[model_system][0]}_{kind.replace(' ', '_')}", "results.json")
  return os.path.join(workdir, f"seed{seed}", "eval", SYSTEMS[system][0], "results.json")


# -- Report ---------------------------------------------------------------------


def heldout_task_of(task: str) -> str:
  """The held-out task a result is for: its name without form or instructed variant."""
  return task.replace("_xonly", "").replace("_concat", "").replace(".instructed_", ".")


def summarize(per_seed: dict[int, dict[str, dict]], mode: Mode = Mode()) -> dict[str, dict]:
  """system -> {"families": {family: mean acc}, "average", "std" (over seeds), "seeds",
  "ms_per_query"}, for the systems and then the controls."""
  families = mode.benchmark.heldout_families()
  order = list(dict.fromkeys(families.values()))
  out = {}
  for system in list(SYSTEMS) + list(mode.controls):
    by_family = collections.defaultdict(list)
    averages, seconds = [], []
    for results in per_seed.values():
      res = results[system]
      averages.append(res["average"])
      if "seconds_per_query" in res:
        seconds.append(res["seconds_per_query"])
      for task, values in res["tasks"].items():
        by_family[families.get(heldout_task_of(task), "?")].append(values["accuracy"])
    out[system] = {"families": {f: float(np.mean(by_family[f]))
                                for f in order + ["?"] if f in by_family},
                   "average": float(np.mean(averages)), "std": float(np.std(averages)),
                   "seeds": averages, "num_tasks": len(res["tasks"]),
                   "ms_per_query": float(np.mean(seconds)) * 1e3 if seconds else None}
  return out


def table(summary: dict[str, dict]) -> str:
  families = list(next(iter(summary.values()))["families"])
  timed = any(s.get("ms_per_query") is not None for s in summary.values())
  header = ["Model"] + families + ["Avg"] + (["ms/query"] if timed else [])
  lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
  for system, s in summary.items():
    cells = [f"{s['families'][f]:.1f}" for f in families]
    avg = f"{s['average']:.1f}" + (f" ± {s['std']:.1f}" if len(s["seeds"]) > 1 else "")
    cells.append(avg)
    if timed:
      cells.append("" if s.get("ms_per_query") is None else f"{s['ms_per_query']:.2f}")
    lines.append("| " + " | ".join([system] + cells) + " |")
  return "\n".join(lines)


# Systems whose training evaluates the held-out tasks along the way (configs/demo.py
# eval_every): the learning curves.
CURVE_SYSTEMS = ("Shared prefix", "Shared LoRA", "T5-MTF", "T5-MTF-Few-shot", "HyperT5-Prefix",
                 "HyperT5-LoRA", "HyperT5-Prefix, no hyperpretraining")


def learning_curves(workdir: str, seeds: int, mode: Mode) -> dict[str, dict]:
  """system -> {"steps": [...], "average": [...], "families": {family: [...]}}: held-out
  accuracy along MTF (mean over seeds), read from each stage's metrics.jsonl."""
  families = mode.benchmark.heldout_families()
  curves = {}
  for system in CURVE_SYSTEMS:
    by_step = collections.defaultdict(lambda: collections.defaultdict(list))
    for seed in range(seeds):
      path = os.path.join(stage_dir(SYSTEMS[system][0], seed, workdir), "metrics.jsonl")
      if not os.path.exists(path):
        continue
      entries = {}
      with open(path) as f:
        for line in f:
          entry = json.loads(line)
          if "eval_tasks" in entry:
            entries[entry["step"]] = entry  # a resumed run's repeat replaces the first
      for step, entry in entries.items():
        by_step[step]["average"].append(entry["eval_average"])
        per_family = collections.defaultdict(list)
        for task, values in entry["eval_tasks"].items():
          per_family[families.get(heldout_task_of(task), "?")].append(values["accuracy"])
        for family, values in per_family.items():
          by_step[step][family].append(float(np.mean(values)))
    if by_step:
      steps = sorted(by_step)
      order = list(dict.fromkeys(families.values())) + ["?"]
      names = [f for f in order if any(f in by_step[step] for step in steps)]
      curves[system] = {"steps": steps,
                        "average": [float(np.mean(by_step[s]["average"])) for s in steps],
                        "families": {f: [float(np.mean(by_step[s][f])) for s in steps]
                                     for f in names}}
  return curves


def curves_table(curves: dict[str, dict]) -> str:
  """Held-out average accuracy against MTF steps, one row per system."""
  steps = sorted({s for c in curves.values() for s in c["steps"]})
  lines = ["| Model | " + " | ".join(f"step {s}" for s in steps) + " |",
           "|---|" + "---:|" * len(steps)]
  for system, c in curves.items():
    at = dict(zip(c["steps"], c["average"]))
    lines.append(f"| {system} | " + " | ".join(f"{at[s]:.1f}" if s in at else "" for s in steps)
                 + " |")
  return "\n".join(lines)


def plot_curves(curves: dict[str, dict], path: str, title: str) -> None:
  """Held-out accuracy against MTF steps: the average, then each family."""
  matplotlib.use("Agg")
  families = list(next(iter(curves.values()))["families"])
  panels = ["average"] + families
  fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.2), sharey=True)
  for ax, panel in zip(axes, panels):
    for system, c in curves.items():
      values = c["average"] if panel == "average" else c["families"][panel]
      style = "-" if system.startswith("HyperT5") else "--"
      ax.plot(c["steps"], values, style, label=system, linewidth=1.5)
    ax.axhline(50, color="black", linestyle=":", linewidth=1)
    ax.set_title(panel)
    ax.set_xlabel("MTF step")
  axes[0].set_ylabel("held-out accuracy (%)")
  handles, labels = axes[0].get_legend_handles_labels()
  fig.legend(handles, labels, fontsize=7, loc="center right")
  fig.suptitle(title)
  fig.tight_layout(rect=(0, 0, 0.82, 1))
  fig.savefig(path, dpi=110)
  plt.close(fig)


def plot(summary: dict[str, dict], path: str, title: str = "Embedded few-shot benchmark") -> None:
  """Figure 4 analogue: held-out accuracy of every system (mean and spread over seeds)."""
  matplotlib.use("Agg")
  names = list(summary)
  means = [summary[n]["average"] for n in names]
  stds = [summary[n]["std"] for n in names]
  fig, ax = plt.subplots(figsize=(8, 4))
  colors = ["#999999" if not n.startswith("HyperT5") else "#1f77b4" for n in names]
  ax.barh(range(len(names)), means, xerr=stds, color=colors)
  ax.axvline(50, color="black", linestyle=":", linewidth=1)
  ax.set_yticks(range(len(names)), names)
  ax.invert_yaxis()
  ax.set_xlabel("held-out accuracy (%), rank classification; 50 = chance")
  ax.set_title(f"{title}, {len(next(iter(summary.values()))['seeds'])} "
               "seed(s)")
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


MODE_FILE = "demo_mode.json"


def check_workdir_mode(workdir: str, mode: Mode, write: bool) -> None:
  """Refuses a workdir whose finished stages belong to another mode: a stage is
  skipped when its workdir is done, so they would be reused as they are."""
  path = os.path.join(workdir, MODE_FILE)
  wanted = {"flags": mode.config_flags, "benchmark": mode.benchmark.title}
  if os.path.exists(path):
    with open(path) as f:
      found = json.load(f)
  else:  # a workdir from before the mode file: its downstream model's corpus tells
    lm_config = os.path.join(workdir, "lm", "config.json")
    found = None
    if os.path.exists(lm_config):
      with open(lm_config) as f:
        lm_mixture = json.load(f)["data"]["mixture"]
      expected = cli.load_config(cli.repository_config("demo.py"),
                                 "lm" + mode.config_flags).data.mixture
      if lm_mixture != expected:
        found = {"flags": "?", "benchmark": f"another benchmark (pretrained on {lm_mixture})"}
  if found is not None and found["flags"] != wanted["flags"]:
    raise ConfigError(
        f"{workdir} holds a demo of the {found['benchmark']}"
        f"{' (--quick)' if ',quick' in found['flags'] else ''}; this run is of the "
        f"{wanted['benchmark']}{' (--quick)' if mode.quick else ''}: pass another --workdir")
  if write and found is None:
    with open(path + ".partial", "w") as f:
      json.dump(wanted, f)
    os.replace(path + ".partial", path)


def run(workdir: str, seeds: int, mode: Mode, workers: int = 1, worker: int = 0,
        worker_command: list[str] | None = None) -> dict | None:
  """Every stage, every evaluation, then the report; returns the summary.

  workers=2: this process (worker 0) starts `worker_command` as worker 1, which runs its
  share of the plan (make_plan) beside this one; worker 1 itself returns None.
  """
  workdir = os.path.abspath(workdir)
  os.makedirs(workdir, exist_ok=True)
  check_workdir_mode(workdir, mode, write=worker == 0)
  cli.use_compilation_cache()
  plan = make_plan(seeds, mode, workers)
  mine = [i for i, job in enumerate(plan) if job.worker == worker]
  second = None
  if worker == 0 and workers == 2 and not all(job.done(workdir) for job in plan
                                              if job.worker == 1):
    second = SecondWorker(worker_command)
  # Lines name their worker only while two run (not when resuming with worker 2's share done).
  progress = Progress(plan, worker, 2 if second or worker == 1 else 1)
  if worker == 1:
    prepare(mode)
    progress.start = wait_for_go_then_watch_stdin()
    if progress.start is None:
      return None
  try:
    for index in mine:
      job = plan[index]
      if second:
        second.check()
      progress.begin(index)
      if job.stage is not None:
        run_stage(job.stage, job.seed, mode, workdir)
        if job.stage == "lm" and second:
          second.go(progress.start)
      else:
        for system in job.systems:
          evaluate_system(system, job.seed, mode, workdir)
      progress.end(index)
    if second:
      second.finish()
  finally:
    if second:
      second.stop()
  if worker == 1:
    return None
  per_seed = {seed: {system: evaluate_system(system, seed, mode, workdir)
                     for system in list(SYSTEMS) + list(mode.controls)}
              for seed in range(seeds)}
  summary = summarize(per_seed, mode)
  curves = learning_curves(workdir, seeds, mode) if mode.benchmark.curves_and_controls else {}
  report(workdir, summary, seeds, mode, time.time() - progress.start, curves)
  return summary


def report(workdir: str, summary: dict, seeds: int, mode: Mode, seconds: float,
           curves: dict | None = None) -> None:
  command = "python -m hypert5.demo --workdir=" + workdir + (
      f" --seeds={seeds}" if seeds != 1 else "") + mode.command_flags
  systems = {k: v for k, v in summary.items() if k in SYSTEMS}
  controls = {k: v for k, v in summary.items() if k not in SYSTEMS}
  text = table(systems)
  num_tasks = next(iter(summary.values()))["num_tasks"]
  with open(os.path.join(workdir, "results.md"), "w") as f:
    f.write(f"# HyperT5 on the {mode.benchmark.title} (held-out tasks)\n\n")
    f.write("Accuracy (%) by rank classification over each task's two answer options, per rule "
            f"family and averaged over the {num_tasks} held-out tasks; chance is 50 by "
            "construction.\n\n")
    f.write(text + "\n\n")
    f.write("ms/query: time to score one query's answer choices on this machine, "
            "measured in this run (HyperT5: phi generated once per task and cached; "
            "T5-MTF-Few-shot: the examples concatenated to every query).\n\n")
    if controls:
      f.write("Controls (the same trained HyperT5-Prefix, reading other examples than the "
              "task's own):\n\n" + table(controls) + "\n\n")
    if curves:
      f.write("Held-out accuracy (average over tasks) along training:\n\n"
              + curves_table(curves) + "\n\n![learning curves](curves.png)\n\n")
    f.write(f"Command: `{command}` ({seconds / 60:.1f} min)\n\n![held-out accuracy](figure.png)\n")
  with open(os.path.join(workdir, "results.json"), "w") as f:
    json.dump({"command": command, "seconds": seconds, "systems": summary,
               "curves": curves or {}}, f, indent=2)
  plot(systems, os.path.join(workdir, "figure.png"), mode.benchmark.title.capitalize())
  if curves:
    plot_curves(curves, os.path.join(workdir, "curves.png"), mode.benchmark.title.capitalize())
  print("\n" + text)
  if controls:
    print("\n" + table(controls))
  if curves:
    print("\n" + curves_table(curves))
  print(f"\nwrote {workdir}/results.md, results.json and figure.png "
        f"({seconds / 60:.1f} min)")


def default_workers() -> int:
  return 2 if (os.cpu_count() or 1) >= 2 else 1


def main(argv):
  del argv
  mode = Mode(quick=FLAGS.quick, flag=benchmark_flag())
  if FLAGS.quick:
    cli.fast_compile_for_smoke_runs()
  workers = default_workers() if FLAGS.workers is None else FLAGS.workers
  if workers not in (1, 2):
    raise app.UsageError(f"--workers={workers}: the demo runs 1 or 2 workers")
  cli.quiet_logs(tag=" (worker 2)" if FLAGS.worker else "")
  command = [sys.executable, "-m", "hypert5.demo", f"--workdir={FLAGS.workdir}",
             f"--seeds={FLAGS.seeds}", *mode.command_flags.split(), "--workers=2", "--worker=1"]
  try:
    run(FLAGS.workdir, FLAGS.seeds, mode, workers, FLAGS.worker, command)
  except Preempted:
    if FLAGS.worker:  # the first worker says so
      sys.exit(cli.EXIT_PREEMPTED)
    raise
  except WorkerFailed as e:
    print(f"\n{e}", file=sys.stderr)
    sys.exit(cli.EXIT_ERROR)


def run_command() -> None:
  """`python -m hypert5.demo`."""
  cli.run(main, define_flags)


if __name__ == "__main__":
  run_command()
