"""The cluster launchers: what their dry runs print, and that the command arrives intact.

Quoting is checked two ways: by parsing the printed commands with shlex, and by
running the launchers against stand-in `gcloud`, `sbatch` and `srun` programs,
then executing what would run remotely with /bin/sh (the TPU worker's login
shell) or bash (the sbatch script), down to a stand-in `python` that records
its argv.
"""

import json
import os
import pathlib
import shlex
import shutil
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
TPU_POD = REPO / "launch" / "tpu_pod.sh"
SLURM = REPO / "launch" / "slurm.sh"

# Words a shell would mangle if any layer quoted them wrong.
COMMAND = [
    "python", "-m", "hypert5.train",
    "--config=configs/tiny.py",
    "--workdir=/tmp/run with  spaces",
    "--config.mesh_shape=(4,2)",
    "--config.mesh_axes=('data','model')",
    "--config.note=it's \"quoted\" $HOME `id` $(id) ; & | \\ * ~ !x",
    "--config.empty=",
    "",
]
# Only where no line-based parsing is involved: a word holding a newline.
COMMAND_WITH_NEWLINE = COMMAND + ["--config.text=line one\nline two"]


def _run(script, *args, env=None, cwd=None):
  return subprocess.run(["bash", str(script), *args], capture_output=True, text=True,
                        env=env, cwd=cwd, timeout=60, check=False)


def _commands(stdout):
  """The printed commands, one per line, comments skipped, each as an argv."""
  return [shlex.split(line) for line in stdout.splitlines()
          if line.strip() and not line.startswith("#")]


def _recorder(path, log, status=0):
  """An executable that appends its argv (as JSON) to `log` and exits with `status`,
  a stand-in program."""
  path.write_text(f"#!{sys.executable}\n"
                  "import json, sys\n"
                  f"with open({str(log)!r}, 'a') as f:\n"
                  "  f.write(json.dumps(sys.argv[1:]) + '\\n')\n"
                  "print('output of', sys.argv[1:3])\n"
                  f"sys.exit({status})\n")
  path.chmod(0o755)


def _recorded(log):
  return [json.loads(line) for line in log.read_text().splitlines()]


@pytest.fixture(name="checkout")
def fixture_checkout(tmp_path):
  """A small git checkout with one commit, to ship instead of this repository."""
  src = tmp_path / "src"
  src.mkdir()
  (src / "Makefile").write_text("venv:\n")
  git = ["git", "-C", str(src), "-c", "user.name=t", "-c", "user.email=t@t"]
  subprocess.run(["git", "init", "-q", str(src)], check=True)
  subprocess.run(git + ["add", "Makefile"], check=True)
  subprocess.run(git + ["commit", "-q", "-m", "init"], check=True)
  return src


# ---------------------------------------------------------------------------
# TPU pod.


def _remote(ssh_argv):
  """Checks an ssh command's shape; returns the remote command string."""
  assert ssh_argv[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh"]
  assert ssh_argv[5] == "my-tpu"
  assert "--zone=us-central2-b" in ssh_argv and "--worker=all" in ssh_argv
  assert ssh_argv[-2] == "--command"
  return ssh_argv[-1]


def test_tpu_dry_run_ships_a_local_checkout(checkout):
  result = _run(TPU_POD, "--tpu", "my-tpu", "--zone", "us-central2-b", "--project", "proj",
                "--repo", str(checkout), "--dry-run", "--", *COMMAND)
  assert result.returncode == 0, result.stderr
  archive, scp, setup, start = _commands(result.stdout)
  assert archive[:4] == ["git", "-C", str(checkout), "archive"]
  assert archive[-1] == "HEAD"  # a clean tree ships its last commit
  tarball = archive[-2].removeprefix("--output=")
  assert scp == ["gcloud", "compute", "tpus", "tpu-vm", "scp", tarball,
                 "my-tpu:hypert5-src.tar.gz", "--zone=us-central2-b", "--project=proj",
                 "--worker=all"]
  for ssh in (setup, start):
    assert "--project=proj" in ssh

  bash, dash_c, script, name = shlex.split(_remote(setup))
  assert (bash, dash_c, name) == ("bash", "-c", "hypert5")
  assert "tar -xzf \"$HOME\"/hypert5-src.tar.gz -C hypert5" in script
  assert "make venv" in script
  assert ('pip install -q -c constraints.txt "jax[tpu]" '
          "-f https://storage.googleapis.com/jax-releases/libtpu_releases.html") in script

  words = shlex.split(_remote(start))
  assert words[:2] == ["bash", "-c"] and words[3] == "hypert5"
  assert words[4:] == COMMAND  # the exact argv, every tricky word intact
  assert '"$@" 2>&1 | tee "$log"' in words[2]
  assert "logs/train-" in words[2] and "$(hostname).log" in words[2]


def test_tpu_dry_run_clones_a_url():
  url = "https://github.com/someone/hypert5.git"
  result = _run(TPU_POD, "--tpu=my-tpu", "--zone=us-central2-b", "--repo", url,
                "--branch", "exp/lr 1e-3", "--remote-dir", "code dir", "--detach",
                "--dry-run", "--", *COMMAND)
  assert result.returncode == 0, result.stderr
  setup, start = _commands(result.stdout)
  script = shlex.split(_remote(setup))[2]
  assert f"git clone --quiet --no-checkout {url} 'code dir'" in script
  assert "git -C 'code dir' fetch --quiet origin 'exp/lr 1e-3'" in script
  words = shlex.split(_remote(start))
  assert words[4:] == COMMAND
  assert "cd 'code dir'" in words[2] and 'nohup "$@"' in words[2]


def test_tpu_skip_setup_only_runs():
  result = _run(TPU_POD, "--tpu", "my-tpu", "--zone", "us-central2-b", "--skip-setup",
                "--dry-run", "--", "python3", "-m", "hypert5.eval", "--checkpoint=a b")
  assert result.returncode == 0, result.stderr
  (start,) = _commands(result.stdout)
  assert shlex.split(_remote(start))[4:] == ["python3", "-m", "hypert5.eval", "--checkpoint=a b"]


def test_tpu_remote_command_runs_the_exact_argv(tmp_path, checkout):
  # Launch for real against a stand-in gcloud, then run each ssh --command the
  # way sshd does: through the worker's login shell, here POSIX /bin/sh.
  bin_dir, home = tmp_path / "bin", tmp_path / "home"
  bin_dir.mkdir()
  (home / "hypert5" / ".venv" / "bin").mkdir(parents=True)
  _recorder(bin_dir / "gcloud", tmp_path / "gcloud.jsonl")
  _recorder(home / "hypert5" / ".venv" / "bin" / "python", tmp_path / "python.jsonl")
  env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "TMPDIR": str(tmp_path)}
  result = _run(TPU_POD, "--tpu", "my-tpu", "--zone", "us-central2-b", "--repo", str(checkout),
                "--", *COMMAND_WITH_NEWLINE, env=env)
  assert result.returncode == 0, result.stderr
  scp, setup, start = _recorded(tmp_path / "gcloud.jsonl")
  assert scp[:3] == ["compute", "tpus", "tpu-vm"] and scp[3] == "scp"
  assert not list(tmp_path.glob("hypert5-src-*.tar.gz"))  # the local tarball is cleaned up
  assert shlex.split(setup[-1])[4:] == []

  remote = start[-1]
  worker = subprocess.run(["/bin/sh", "-c", remote], cwd=home, capture_output=True, text=True,
                          env={**os.environ, "HOME": str(home)}, timeout=60, check=False)
  assert worker.returncode == 0, worker.stderr
  (argv,) = _recorded(tmp_path / "python.jsonl")
  assert argv == COMMAND_WITH_NEWLINE[1:]
  (log,) = (home / "hypert5" / "logs").glob("train-*.log")
  assert "output of ['-m', 'hypert5.train']" in log.read_text()


@pytest.mark.parametrize("args, message", [
    (["--zone", "z", "--", *COMMAND], "missing --tpu"),
    (["--tpu", "t", "--", *COMMAND], "missing --zone"),
    (["--tpu", "t", "--zone", "z"], "missing the command after --"),
    (["--tpu", "t", "--zone", "z", "--", "python", "train.py"], "must be 'python -m hypert5"),
    (["--tpu", "t", "--zone", "z", "--", "bash", "-c", "rm -rf /"], "must be 'python -m hypert5"),
    (["--tpu", "t", "--zone", "z", "--bogus", "--", *COMMAND], "unknown option '--bogus'"),
    (["--tpu"], "--tpu needs a value"),
    (["--tpu", "--zone", "z", "--", *COMMAND], "--tpu needs a value"),
    (["--tpu", "t", "--zone", "z", "--repo", "not-a-dir-or-url", "--", *COMMAND],
     "neither a directory nor a git URL"),
])
def test_tpu_bad_input(args, message):
  result = _run(TPU_POD, "--dry-run", *args)
  assert result.returncode == 2
  assert message in result.stderr
  assert "Run 'launch/tpu_pod.sh --help'" in result.stderr
  assert result.stdout == ""


def test_tpu_help():
  result = _run(TPU_POD, "--help")
  assert result.returncode == 0
  assert "Usage: launch/tpu_pod.sh --tpu NAME --zone ZONE" in result.stdout


# ---------------------------------------------------------------------------
# SLURM.


def _slurm_dry_run(*args):
  result = _run(SLURM, "--dry-run", *args)
  assert result.returncode == 0, result.stderr
  header, rest = result.stdout.split("\n", 1)
  script, commands = rest.split("# Then:\n")
  return header.removeprefix("# ").removesuffix(":"), script, _commands(commands)


def test_slurm_dry_run_prints_the_sbatch_script(tmp_path):
  path, script, commands = _slurm_dry_run(
      "--nodes", "2", "--gpus-per-node", "8", "--partition", "gpu", "--time", "12:00:00",
      "--account=lab", "--cpus-per-task", "12", "--sbatch", "--qos=high",
      "--repo", str(tmp_path), "--", *COMMAND)
  lines = script.splitlines()
  assert lines[0] == "#!/bin/bash"
  assert lines[1:12] == [
      "#SBATCH --job-name=hypert5-train",
      "#SBATCH --nodes=2",
      "#SBATCH --ntasks-per-node=8",  # one task per GPU
      "#SBATCH --gpus-per-node=8",
      "#SBATCH --cpus-per-task=12",
      "#SBATCH --partition=gpu",
      "#SBATCH --time=12:00:00",
      "#SBATCH --account=lab",
      "#SBATCH --output=logs/%x-%j.out",
      "#SBATCH --requeue",  # a preempted run (exit 75) goes back in the queue
      "#SBATCH --qos=high",
  ]
  assert "set -euo pipefail" in lines
  assert f"cd {tmp_path}" in lines
  (srun,) = [shlex.split(line) for line in lines if line.startswith("srun ")]
  assert srun[:4] == ["srun", "--kill-on-bad-exit=1", "--gpu-bind=none",
                      "--output=logs/%x-%j-%t.log"]
  assert srun[4:] == COMMAND
  assert path.startswith(f"{tmp_path}/logs/slurm/hypert5-train-") and path.endswith(".sbatch")
  assert commands == [["mkdir", "-p", f"{tmp_path}/logs"],
                      ["sbatch", f"--chdir={tmp_path}", path]]
  assert not (tmp_path / "logs").exists()  # a dry run writes nothing


def test_slurm_optional_lines_are_left_out(tmp_path):
  _, script, _ = _slurm_dry_run("--nodes=1", "--gpus-per-node=4", "--repo", str(tmp_path),
                                "--", "python", "-m", "hypert5.eval", "--checkpoint=x")
  sbatch_lines = [line for line in script.splitlines() if line.startswith("#SBATCH")]
  assert sbatch_lines == ["#SBATCH --job-name=hypert5-eval", "#SBATCH --nodes=1",
                          "#SBATCH --ntasks-per-node=4", "#SBATCH --gpus-per-node=4",
                          "#SBATCH --output=logs/%x-%j.out", "#SBATCH --requeue"]
  assert f"export PATH={tmp_path}/.venv/bin:\"$PATH\"" in script


def test_slurm_script_runs_the_exact_argv(tmp_path):
  # Submit for real to a stand-in sbatch, then run the written script with a
  # stand-in srun, as a node would.
  repo, bin_dir = tmp_path / "my repo", tmp_path / "bin"
  (repo / ".venv" / "bin").mkdir(parents=True)
  bin_dir.mkdir()
  _recorder(repo / ".venv" / "bin" / "python", tmp_path / "python.jsonl")
  _recorder(bin_dir / "sbatch", tmp_path / "sbatch.jsonl")
  _recorder(bin_dir / "srun", tmp_path / "srun.jsonl")
  env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
  result = _run(SLURM, "--nodes", "3", "--gpus-per-node", "2", "--repo", str(repo),
                "--", *COMMAND_WITH_NEWLINE, env=env)
  assert result.returncode == 0, result.stderr
  (sbatch,) = _recorded(tmp_path / "sbatch.jsonl")
  assert sbatch[0] == f"--chdir={repo}"
  script = pathlib.Path(sbatch[1])
  assert script.parent == repo / "logs" / "slurm" and (repo / "logs").is_dir()

  job = _run(script, env=env, cwd=tmp_path)
  assert job.returncode == 0, job.stderr
  (srun,) = _recorded(tmp_path / "srun.jsonl")
  assert srun[:3] == ["--kill-on-bad-exit=1", "--gpu-bind=none", "--output=logs/%x-%j-%t.log"]
  assert srun[3:] == COMMAND_WITH_NEWLINE


@pytest.mark.parametrize("args, message", [
    (["--gpus-per-node", "8", "--", *COMMAND], "missing --nodes"),
    (["--nodes", "2", "--", *COMMAND], "missing --gpus-per-node"),
    (["--nodes", "two", "--gpus-per-node", "8", "--", *COMMAND],
     "--nodes must be a positive integer"),
    (["--nodes", "2", "--gpus-per-node", "0", "--", *COMMAND],
     "--gpus-per-node must be a positive"),
    (["--nodes", "2", "--gpus-per-node", "8"], "missing the command after --"),
    (["--nodes", "2", "--gpus-per-node", "8", "--", "python", "x.py"],
     "must be 'python -m hypert5"),
    (["--nodes", "2", "--gpus-per-node", "8", "--partition", "a b", "--", *COMMAND],
     "an #SBATCH value has whitespace"),
    (["--nodes", "2", "--gpus-per-node", "8", "--gpus", "8", "--", *COMMAND],
     "unknown option '--gpus'"),
    (["--nodes"], "--nodes needs a value"),
    (["--nodes=1", "--gpus-per-node=1", "--sbatch", "qos=high", "--", *COMMAND],
     "--sbatch takes an sbatch option"),
    (["--partition", "--nodes", "2", "--gpus-per-node", "8", "--", *COMMAND],
     "--partition needs a value"),
])
def test_slurm_bad_input(args, message):
  result = _run(SLURM, "--dry-run", *args)
  assert result.returncode == 2
  assert message in result.stderr
  assert "Run 'launch/slurm.sh --help'" in result.stderr
  assert result.stdout == ""


def test_slurm_needs_a_venv_to_submit(tmp_path):
  result = _run(SLURM, "--nodes", "1", "--gpus-per-node", "1", "--repo", str(tmp_path),
                "--", *COMMAND)
  assert result.returncode == 2
  assert f"no virtual environment at {tmp_path}/.venv" in result.stderr


def test_slurm_help():
  result = _run(SLURM, "-h")
  assert result.returncode == 0
  assert "Usage: launch/slurm.sh --nodes N --gpus-per-node G" in result.stdout


# ---------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_shellcheck_clean():
  result = subprocess.run(["shellcheck", str(TPU_POD), str(SLURM)], capture_output=True,
                          text=True, timeout=60, check=False)
  assert result.returncode == 0, result.stdout


def test_slurm_job_requeues_a_preempted_run_and_keeps_its_status(tmp_path):
  """A command stopped by SIGTERM saves its step and exits 75: the job script
  requeues the job (which resumes) and ends with that status; other failures are
  not requeued."""
  repo, bin_dir = tmp_path / "repo", tmp_path / "bin"
  (repo / ".venv" / "bin").mkdir(parents=True)
  bin_dir.mkdir()
  _recorder(repo / ".venv" / "bin" / "python", tmp_path / "python.jsonl")
  _recorder(bin_dir / "sbatch", tmp_path / "sbatch.jsonl")
  _recorder(bin_dir / "scontrol", tmp_path / "scontrol.jsonl")
  env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_JOB_ID": "4242"}
  result = _run(SLURM, "--nodes", "1", "--gpus-per-node", "2", "--repo", str(repo),
                "--", *COMMAND, env=env)
  assert result.returncode == 0, result.stderr
  script = pathlib.Path(_recorded(tmp_path / "sbatch.jsonl")[0][1])
  for status, requeued in ((75, True), (1, False), (0, False)):
    _recorder(bin_dir / "srun", tmp_path / f"srun{status}.jsonl", status=status)
    job = _run(script, env=env, cwd=tmp_path)
    assert job.returncode == status, job.stderr
    assert ("requeueing job 4242" in job.stderr) == requeued
  assert _recorded(tmp_path / "scontrol.jsonl") == [["requeue", "4242"]]
