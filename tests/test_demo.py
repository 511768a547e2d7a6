"""The main job end to end in its --quick form, then the section 6 sweep on its runs."""

import json
import os
import subprocess
import sys

from conftest import REPO

SYSTEMS = ["T5 zero-shot", "Shared prefix", "Shared LoRA", "T5-MTF", "T5-MTF-Few-shot",
           "HyperT5-Prefix", "HyperT5-LoRA", "HyperT5-Prefix, no hyperpretraining"]


def run(*args):
  return subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True,
                        cwd=REPO, timeout=900)


def test_quick_demo_then_peft_sweep(tmp_path):
  workdir = tmp_path / "demo"
  result = run("hypert5.demo", f"--workdir={workdir}", "--quick")
  assert result.returncode == 0, result.stderr[-3000:]
  summary = json.loads((workdir / "results.json").read_text())["systems"]
  assert list(summary) == SYSTEMS
  for system in ("T5 zero-shot", "Shared prefix", "Shared LoRA", "T5-MTF"):
    # Models that never see the few-shot examples answer mirrored tasks alike: 50% exactly.
    assert summary[system]["average"] == 50.0, (system, summary[system])
  assert (workdir / "figure.png").stat().st_size > 1000
  table = (workdir / "results.md").read_text()
  assert "| HyperT5-Prefix, no hyperpretraining |" in table and "4 held-out tasks" in table
  assert "[11/11] seed 0: evaluate 8 systems" in result.stdout  # the progress lines

  # Resuming a finished workdir redoes nothing and reports the same.
  done = (workdir / "seed0" / "mtf_prefix" / "DONE").stat().st_mtime
  again = run("hypert5.demo", f"--workdir={workdir}", "--quick")
  assert again.returncode == 0, again.stderr[-3000:]
  assert json.loads((workdir / "results.json").read_text())["systems"] == summary
  assert (workdir / "seed0" / "mtf_prefix" / "DONE").stat().st_mtime == done

  sweep = tmp_path / "sweep"
  result = run("hypert5.peft_sweep", f"--demo_workdir={workdir}", f"--workdir={sweep}",
               "--tasks=embedded_fewshot.heldout_03_m1", "--learning_rates=1e-3",
               "--seeds=1", "--quick")
  assert result.returncode == 0, result.stderr[-3000:]
  results = json.loads((sweep / "results.json").read_text())
  assert set(results["average_curves"]) == {"random", "shared", "hyper"}
  for curve in results["average_curves"].values():
    assert sorted(map(int, curve)) == [0, 2, 4]  # evaluated from step 0, every 2 steps
  assert (sweep / "figure.png").stat().st_size > 1000
  assert "| **Average** |" in (sweep / "results.md").read_text()
  # Every run is a hypert5.train workdir; the hyper init read 16 training examples.
  shots = (sweep / "examples" / "embedded_fewshot.heldout_03_m1.seed0.jsonl").read_text()
  assert len(shots.splitlines()) == 16
  assert os.path.isfile(sweep / "runs" / "embedded_fewshot.heldout_03_m1" / "hyper" / "lr0.001"
                        / "seed0" / "metrics.jsonl")


def test_sweep_without_demo_runs_says_what_to_run(tmp_path):
  result = run("hypert5.peft_sweep", f"--demo_workdir={tmp_path / 'nothing'}", "--quick",
               "--tasks=embedded_fewshot.heldout_00_m0")
  assert result.returncode != 0
  assert "python -m hypert5.demo" in result.stderr and "downstream is missing" in result.stderr
