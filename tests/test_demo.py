"""The main job end to end in its --quick form, then the section 6 sweep on its runs."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import REPO

from hypert5 import errors
from hypert5.experiments import demo

SYSTEMS = ["T5 zero-shot", "Shared prefix", "Shared LoRA", "T5-MTF", "T5-MTF-Few-shot",
           "HyperT5-Prefix", "HyperT5-LoRA", "HyperT5-Prefix, no hyperpretraining"]
CONTROLS = ["HyperT5-Prefix, another task's examples", "HyperT5-Prefix, the mirror task's examples",
            "T5 told the rule (instruction in its input)"]


def run(*args):
  return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True,
                        cwd=REPO, timeout=900)


def test_quick_demo_then_peft_sweep(tmp_path):
  workdir = tmp_path / "demo"
  result = run("hypert5.demo", f"--workdir={workdir}", "--quick", "--workers=2")
  assert result.returncode == 0, result.stderr[-3000:]
  results = json.loads((workdir / "results.json").read_text())
  summary = results["systems"]
  assert list(summary) == SYSTEMS + CONTROLS
  for system in ("T5 zero-shot", "Shared prefix", "Shared LoRA", "T5-MTF"):
    # Models that never see the few-shot examples answer mirrored tasks alike: 50% exactly.
    assert summary[system]["average"] == 50.0, (system, summary[system])
  for system in SYSTEMS:  # timed in this run
    assert summary[system]["ms_per_query"] > 0
  # Learning curves: every MTF-trained system, evaluated at steps 0 and 3.
  assert set(results["curves"]) == set(SYSTEMS) - {"T5 zero-shot"}
  assert all(c["steps"] == [0, 3] for c in results["curves"].values())
  for image in ("figure.png", "curves.png"):
    assert (workdir / image).stat().st_size > 1000
  table = (workdir / "results.md").read_text()
  assert "| HyperT5-Prefix, no hyperpretraining |" in table and "4 held-out tasks" in table
  assert "| HyperT5-Prefix, the mirror task's examples |" in table and "| step 3 |" in table
  # The progress lines of both workers.
  assert "[11/12] seed 0: evaluate 7 systems on the held-out tasks (worker 1, " in result.stdout
  assert "[12/12] seed 0: evaluate 4 systems on the held-out tasks (worker 2, " in result.stdout

  # Resuming a finished workdir redoes nothing and reports the same.
  done = (workdir / "seed0" / "mtf_prefix" / "DONE").stat().st_mtime
  again = run("hypert5.demo", f"--workdir={workdir}", "--quick")
  assert again.returncode == 0, again.stderr[-3000:]
  assert json.loads((workdir / "results.json").read_text())["systems"] == summary
  assert (workdir / "seed0" / "mtf_prefix" / "DONE").stat().st_mtime == done
  assert "(worker " not in again.stdout  # worker 2's share is done: no second worker ran

  sweep = tmp_path / "sweep"
  result = run("hypert5.peft_sweep", f"--demo_workdir={workdir}", f"--workdir={sweep}",
               "--tasks=embedded_icl.lookup_1_m1", "--learning_rates=1e-3",
               "--seeds=1", "--quick")
  assert result.returncode == 0, result.stderr[-3000:]
  results = json.loads((sweep / "results.json").read_text())
  assert set(results["average_curves"]) == {"random", "shared", "hyper"}
  for curve in results["average_curves"].values():
    assert sorted(map(int, curve)) == [0, 2, 4]  # evaluated from step 0, every 2 steps
  assert (sweep / "figure.png").stat().st_size > 1000
  assert "| **Average** |" in (sweep / "results.md").read_text()
  # Every run is a hypert5.train workdir; the hyper init read 8 training examples.
  shots = (sweep / "examples" / "embedded_icl.lookup_1_m1.seed0.jsonl").read_text()
  assert len(shots.splitlines()) == 8
  assert os.path.isfile(sweep / "runs" / "embedded_icl.lookup_1_m1" / "hyper" / "lr0.001"
                        / "seed0" / "metrics.jsonl")


def test_sweep_without_demo_runs_says_what_to_run(tmp_path):
  result = run("hypert5.peft_sweep", f"--demo_workdir={tmp_path / 'nothing'}", "--quick",
               "--tasks=embedded_icl.constant_0_m0")
  assert result.returncode != 0
  assert "python -m hypert5.demo" in result.stderr and "downstream is missing" in result.stderr


@pytest.mark.parametrize("workers", [1, 2])
def test_plan_runs_every_job_once_and_keeps_shared_work_in_one_worker(workers):
  plan = demo.make_plan(seeds=2, mode=demo.Mode(quick=True), workers=workers)
  assert plan[0].stage == "lm" and plan[0].worker == 0  # everything else starts from it
  trained = [(job.seed, job.stage) for job in plan if job.stage]
  assert len(trained) == len(set(trained)) == 1 + 2 * 9
  worker = {(job.seed, job.stage): job.worker for job in plan if job.stage}
  assert set(worker.values()) == set(range(workers))
  position = {(job.seed, job.stage): i for i, job in enumerate(plan) if job.stage}
  for seed in (0, 1):
    # MTF restores its hyperpretrained hypermodel, and shares its compiled step.
    for kind in ("prefix", "lora"):
      assert worker[seed, f"mtf_{kind}"] == worker[seed, f"hyperpretrain_{kind}"]
      assert position[seed, f"mtf_{kind}"] > position[seed, f"hyperpretrain_{kind}"]
    evaluations = [job for job in plan if not job.stage and job.seed == seed]
    assert sorted(s for job in evaluations for s in job.systems) == sorted(
        list(demo.SYSTEMS) + list(demo.CONTROLS))
    for job in evaluations:  # by the worker that trained the system
      for system in job.systems:
        stage = demo.SYSTEMS[demo.CONTROLS[system][0] if system in demo.CONTROLS else system][0]
        assert job.worker == (0 if stage == "downstream" else worker[seed, stage])
        assert position.get((seed, stage), -1) < plan.index(job)


def test_second_worker_failures_are_errors_and_it_stops_with_the_first(tmp_path):
  failed = demo.SecondWorker([sys.executable, "-c", "import sys; sys.exit(3)"])
  failed.process.wait()
  with pytest.raises(demo.WorkerFailed, match="exit code 3"):
    failed.check()
  preempted = demo.SecondWorker([sys.executable, "-c", "import sys; sys.exit(75)"])
  preempted.process.wait()
  with pytest.raises(errors.Preempted, match="worker 2 was stopped"):
    preempted.check()

  # A worker told to go gets the demo's start time; when the first worker's end of its
  # stdin closes (it stopped, whatever the way), the worker gets SIGTERM.
  started = tmp_path / "started"
  worker = demo.SecondWorker([sys.executable, "-c", (
      "import sys, time; from hypert5.experiments import demo; "
      "start = demo.wait_for_go_then_watch_stdin(); "
      f"open({str(started)!r}, 'w').write(repr(start)); time.sleep(300)")])
  worker.go(1234.5)
  deadline = time.time() + 120
  while not (started.exists() and started.read_text()) and time.time() < deadline:
    time.sleep(0.1)
  assert started.read_text() == "1234.5"
  worker.stop()
  assert worker.process.returncode == -signal.SIGTERM


def test_a_workdir_of_another_benchmark_is_refused(tmp_path):
  quick = demo.Mode(quick=True)
  demo.check_workdir_mode(str(tmp_path), quick, write=True)
  demo.check_workdir_mode(str(tmp_path), quick, write=True)  # the same mode: fine
  with pytest.raises(errors.ConfigError, match=r"in-context benchmark \(--quick\); this run is "
                     r"of the embedded rules benchmark: pass another --workdir"):
    demo.check_workdir_mode(str(tmp_path), demo.Mode(flag="rules"), write=True)
  # A workdir from before the mode file: its downstream model's corpus tells.
  old = tmp_path / "old"
  (old / "lm").mkdir(parents=True)
  (old / "lm" / "config.json").write_text(json.dumps({"data": {"mixture": "embedded_lm_mix"}}))
  demo.check_workdir_mode(str(old), demo.Mode(flag="rules"), write=False)
  with pytest.raises(errors.ConfigError, match="pretrained on embedded_lm_mix"):
    demo.check_workdir_mode(str(old), demo.Mode(), write=True)
  assert not (old / demo.MODE_FILE).exists()
