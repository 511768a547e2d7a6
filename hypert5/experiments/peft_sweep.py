"""Hypermodel-initialized PEFT (paper section 6): the sweep, Table 6 and Figure 5.

  python -m hypert5.peft_sweep --demo_workdir=workdir/demo [--workdir=DIR]
      [--tasks=all|NAME,...] [--learning_rates=1e-3,1e-4,1e-5] [--seeds=3] [--quick]
      [--control|--rules]

Prefix tuning of each held-out task of the demo's benchmark from three
starting points: a random prefix, the shared multi-task prefix (the demo's
shared_prefix run) and the phi that HyperT5-Prefix (the demo's mtf_prefix
run) generates from random training examples of the task (as many as its
few-shot sets hold: 8 on the in-context benchmark, 16 on the others). The
random init's final score is also the ceiling of prefix tuning on the frozen
model: how much a prefix, trained on the task itself, can express. Every run is
`hypert5.train` with configs/demo.py:peft_finetune, evaluated every
`eval_every` steps from step 0. As in the paper, each (task, init) keeps the
learning rate with the best mean final score over seeds. Writes, under the
workdir (default DEMO_WORKDIR/peft_sweep): results.md (Table 6: final score
per task and init), results.json, and figure.png (Figure 5: average score
against fine-tuning steps, one line per init). Finished runs are reused.
"""

from __future__ import annotations

import collections
import json
import os

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import seqio
from absl import flags

from hypert5 import cli
from hypert5.errors import MissingDataError
from hypert5.experiments import demo
from hypert5.inference import evaluate as eval_lib
from hypert5.training import loop as train
from hypert5_tasks import embedded_benchmarks

FLAGS = flags.FLAGS
INITS = ("random", "shared", "hyper")


def define_flags() -> None:
  flags.DEFINE_string("demo_workdir", "workdir/demo", "A finished `hypert5.demo` workdir.")
  flags.DEFINE_string("workdir", None, "Sweep runs and results (default DEMO_WORKDIR/peft_sweep).")
  flags.DEFINE_list("tasks", ["all"], "Held-out tasks (names in the benchmark's test mixture, "
                    "e.g. embedded_icl.lookup_0_m0) or all.")
  flags.DEFINE_list("learning_rates", ["1e-3", "1e-4", "1e-5"], "The paper's sweep.")
  flags.DEFINE_integer("seeds", 3, "Seeds per learning rate.")
  flags.DEFINE_integer("demo_seed", 0, "Which of the demo's seeds provides the runs.")
  flags.DEFINE_bool("quick", False, "The test-suite version (the demo's --quick models).")
  flags.DEFINE_bool("control", False, "Tasks of the control benchmark (a `hypert5.demo "
                    "--control` workdir): embedded_constant_test.")
  flags.DEFINE_bool("rules", False, "Tasks of the rules benchmark (a `hypert5.demo --rules` "
                    "workdir): embedded_fewshot_test.")


def heldout_tasks(names: list[str], benchmark: embedded_benchmarks.Spec) -> list[str]:
  """--tasks: names of held-out tasks of any embedded benchmark, or all of `benchmark`'s."""
  if names == ["all"]:
    return benchmark.heldout_task_names()
  unknown = [n for n in names if embedded_benchmarks.of_task(n) is None]
  if unknown:
    mixtures = " or ".join(b.test_mixture for b in embedded_benchmarks.BENCHMARKS.values())
    raise ValueError(f"--tasks: {unknown} are not held-out tasks of {mixtures} "
                     "(e.g. embedded_icl.lookup_0_m0)")
  return names


def write_training_examples(task: str, seed: int, path: str) -> None:
  """As many random examples of the task's train split as its few-shot sets hold, as the
  jsonl `hypert5.adapt` reads."""

  lengths = {"hyper_inputs": 8, "inputs": 64, "targets": 8}  # only the strings are used
  examples = eval_lib.read_task(seqio.get_mixture_or_task(task + "_xonly"), "train", lengths, 0)
  chosen = np.random.default_rng(seed).choice(
      len(examples), embedded_benchmarks.of_task(task).num_shots, replace=False)
  with open(path + ".partial", "w") as f:
    for i in chosen:
      f.write(json.dumps({"input": examples[i]["inputs_pretokenized"],
                          "output": examples[i]["references"][0]}) + "\n")
  os.replace(path + ".partial", path)


def run_config(task: str, init: str, learning_rate: float, seed: int, demo_workdir: str,
               demo_seed: int, examples_path: str, quick: bool):
  mode = demo.Mode(quick=quick, flag=embedded_benchmarks.of_task(task).flag)
  config = cli.load_config(cli.repository_config("demo.py"), "peft_finetune" + mode.config_flags)
  config.seed = seed
  config.data.mixture = config.eval.mixture = task
  config.optimizer.learning_rate = learning_rate
  config.init.downstream_checkpoint = os.path.join(demo_workdir, "downstream")
  config.init.peft = init
  runs = os.path.join(demo_workdir, f"seed{demo_seed}")
  config.init.peft_checkpoint = {"random": "", "shared": os.path.join(runs, "shared_prefix"),
                                 "hyper": os.path.join(runs, "mtf_prefix")}[init]
  config.init.peft_examples = examples_path if init == "hyper" else ""
  return config


def eval_curve(run_dir: str) -> dict[int, float]:
  """step -> eval average, from the run's metrics.jsonl."""
  curve = {}
  with open(os.path.join(run_dir, "metrics.jsonl")) as f:
    for line in f:
      entry = json.loads(line)
      if "eval_average" in entry:
        curve[entry["step"]] = entry["eval_average"]
  return curve


def run_one(config, run_dir: str) -> dict[int, float]:
  train.train_to_completion(config, run_dir)
  return eval_curve(run_dir)


def select(curves: dict) -> dict:
  """curves[(task, init, lr)] = [step -> score per seed] -> per (task, init) the
  learning rate with the best mean final score, its mean curve and final score."""
  best = {}
  for (task, init, lr), per_seed in curves.items():
    steps = sorted(per_seed[0])
    mean = {s: float(np.mean([c[s] for c in per_seed])) for s in steps}
    final = mean[steps[-1]]
    if (task, init) not in best or final > best[(task, init)]["final"]:
      best[(task, init)] = {"learning_rate": lr, "curve": mean, "final": final,
                            "start": mean[steps[0]]}
  return best


def table(best: dict, tasks: list[str]) -> str:
  lines = ["| Task | " + " | ".join(f"{i} init" for i in INITS) + " |",
           "|---|" + "---:|" * len(INITS)]
  for task in tasks:
    cells = [f"{best[(task, i)]['final']:.1f} (lr {best[(task, i)]['learning_rate']:g})"
             for i in INITS]
    lines.append(f"| {task.split('.')[-1]} | " + " | ".join(cells) + " |")
  averages = [np.mean([best[(t, i)]["final"] for t in tasks]) for i in INITS]
  starts = [np.mean([best[(t, i)]["start"] for t in tasks]) for i in INITS]
  lines.append("| **Average** | " + " | ".join(f"**{a:.1f}**" for a in averages) + " |")
  lines.append("| Average at step 0 | " + " | ".join(f"{a:.1f}" for a in starts) + " |")
  return "\n".join(lines)


def average_curves(best: dict, tasks: list[str]) -> dict[str, dict[int, float]]:
  out = {}
  for init in INITS:
    steps = sorted(best[(tasks[0], init)]["curve"])
    out[init] = {s: float(np.mean([best[(t, init)]["curve"][s] for t in tasks])) for s in steps}
  return out


def plot(curves: dict[str, dict[int, float]], path: str) -> None:
  matplotlib.use("Agg")
  fig, ax = plt.subplots(figsize=(6, 4))
  for init, curve in curves.items():
    steps = sorted(curve)
    ax.plot(steps, [curve[s] for s in steps], marker="o", label=f"{init} init")
  ax.axhline(50, color="black", linestyle=":", linewidth=1)
  ax.set_xlabel("fine-tuning steps")
  ax.set_ylabel("held-out accuracy (%)")
  ax.set_title("Prefix tuning from different initializations")
  ax.legend()
  fig.tight_layout()
  fig.savefig(path + ".partial.png", dpi=120)
  plt.close(fig)
  os.replace(path + ".partial.png", path)


def sweep(demo_workdir: str, workdir: str, tasks: list[str], learning_rates: list[float],
          seeds: int, demo_seed: int = 0, quick: bool = False) -> dict:
  """Runs (or reuses) every fine-tuning run, then writes Table 6 and Figure 5."""
  demo_workdir, workdir = os.path.abspath(demo_workdir), os.path.abspath(workdir)
  for needed in ("downstream", f"seed{demo_seed}/shared_prefix/{train.FINISHED_MARKER}",
                 f"seed{demo_seed}/mtf_prefix/{train.FINISHED_MARKER}"):
    if not os.path.exists(os.path.join(demo_workdir, needed)):
      raise MissingDataError(f"{os.path.join(demo_workdir, needed)} is missing: run "
                              f"`python -m hypert5.demo --workdir={demo_workdir}` first")
  os.makedirs(workdir, exist_ok=True)
  cli.use_compilation_cache()
  curves = collections.defaultdict(list)
  total = len(tasks) * len(INITS) * len(learning_rates) * seeds
  count = 0
  for task in tasks:
    for seed in range(seeds):
      examples = os.path.join(workdir, "examples", f"{task}.seed{seed}.jsonl")
      os.makedirs(os.path.dirname(examples), exist_ok=True)
      if not os.path.exists(examples):
        write_training_examples(task, seed, examples)
      for init in INITS:
        for lr in learning_rates:
          count += 1
          print(f"[{count}/{total}] {task} {init} init, lr {lr:g}, seed {seed}", flush=True)
          config = run_config(task, init, lr, seed, demo_workdir, demo_seed, examples, quick)
          run_dir = os.path.join(workdir, "runs", task, init, f"lr{lr:g}", f"seed{seed}")
          curves[(task, init, lr)].append(run_one(config, run_dir))
  best = select(curves)
  averages = average_curves(best, tasks)
  text = table(best, tasks)
  command = (f"python -m hypert5.peft_sweep --demo_workdir={demo_workdir} --workdir={workdir} "
             f"--learning_rates={','.join(f'{lr:g}' for lr in learning_rates)} --seeds={seeds}"
             + f" --tasks={','.join(tasks)}" + (" --quick" if quick else ""))
  with open(os.path.join(workdir, "results.md"), "w") as f:
    f.write("# Prefix tuning of held-out tasks from a random, shared or hypermodel init\n\n"
            "Final accuracy (%) on each task's test queries, with the learning rate of the "
            f"best mean over {seeds} seed(s) (paper Table 6).\n\n" + text + "\n\n"
            f"Command: `{command}`\n\n![average accuracy against steps](figure.png)\n")
  with open(os.path.join(workdir, "results.json"), "w") as f:
    json.dump({"command": command, "average_curves": averages,
               "best": {f"{t}|{i}": v for (t, i), v in best.items()}}, f, indent=2)
  plot(averages, os.path.join(workdir, "figure.png"))
  print("\n" + text + f"\n\nwrote {workdir}/results.md, results.json and figure.png")
  return {"best": best, "average_curves": averages}


def main(argv):
  del argv
  if FLAGS.quick:
    cli.fast_compile_for_smoke_runs()
  cli.quiet_logs()
  benchmark = embedded_benchmarks.by_flag(demo.benchmark_flag())
  workdir = FLAGS.workdir or os.path.join(FLAGS.demo_workdir, "peft_sweep")
  sweep(FLAGS.demo_workdir, workdir, heldout_tasks(FLAGS.tasks, benchmark),
        [float(lr) for lr in FLAGS.learning_rates], FLAGS.seeds, FLAGS.demo_seed, FLAGS.quick)


def run_command() -> None:
  """`python -m hypert5.peft_sweep`."""
  cli.run(main, define_flags)


if __name__ == "__main__":
  run_command()
