"""The train loop: sharded equals unsharded, multi-process, resume, preemption, bad input."""

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(REPO, "configs", "tiny.py")


def train_command(workdir, *overrides, config=TINY):
  return [sys.executable, "-m", "hypert5.train", f"--config={config}", f"--workdir={workdir}",
          *overrides]


def env_with(devices=1, **extra):
  env = dict(os.environ)
  env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") +
                      f" --xla_force_host_platform_device_count={devices}").strip()
  env.update(extra)
  return env


def run(cmd, env=None, timeout=600):
  result = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env or env_with(),
                          timeout=timeout)
  return result


def losses(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return {e["step"]: e["loss"] for e in map(json.loads, f)}


SHORT = ["--config.total_steps=5", "--config.log_every=1", "--config.checkpoint_every=5"]


def test_sharded_8_devices_equals_one_device(tmp_path):
  one = run(train_command(tmp_path / "one", *SHORT), env_with(1))
  assert one.returncode == 0, one.stderr[-3000:]
  eight = run(train_command(tmp_path / "eight", *SHORT, "--config.mesh_shape=(4,2)",
                            "--config.mesh_axes=('data','model')"), env_with(8))
  assert eight.returncode == 0, eight.stderr[-3000:]
  single, sharded = losses(tmp_path / "one"), losses(tmp_path / "eight")
  assert sorted(single) == [1, 2, 3, 4, 5]
  np.testing.assert_allclose([sharded[s] for s in single], list(single.values()), rtol=1e-4)
  # The parameters were sharded as the rules say: read the shardings Orbax saved.
  saved = json.loads((tmp_path / "eight" / "checkpoints" / "5" / "hyper" / "_sharding")
                     .read_text())
  specs = {base64.b64decode(k).decode(): json.loads(v) for k, v in saved.items()}
  spec = lambda name: specs[name]["partition_spec"]
  assert all(s["axis_names"] == ["data", "model"] for s in specs.values())
  # [layers, embed, heads, kv]: heads -> model (embed -> fsdp, absent from this mesh)
  assert spec("backbone.encoder.layers.attention.query.kernel") == [None, None, "model", None]
  assert spec("backbone.encoder.layers.mlp.wi_0.kernel") == [None, None, "model"]  # mlp
  assert spec("backbone.token_embedder.embedding") == ["model", None]  # vocab -> model
  assert spec("prefix_head.output.kernel") == ["model", None]  # mlp claims 'model' first
  assert spec("decoder_inputs") == [None, None]


def free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_processes_agree_on_the_loss(tmp_path):
  port = free_port()
  env = env_with(1, JAX_NUM_CPU_DEVICES="2", JAX_CPU_COLLECTIVES_IMPLEMENTATION="gloo",
                 HYPERT5_DATA_CACHE=str(tmp_path / "cache"))
  # Several processes read caches built beforehand (one process would build them itself).
  prepared = run([sys.executable, "-m", "hypert5.preprocess", f"--config={TINY}"], env)
  assert prepared.returncode == 0, prepared.stderr[-3000:]
  assert "done in" in prepared.stdout and "30,720 examples" in prepared.stdout
  procs = [subprocess.Popen(
      train_command(tmp_path / "multi", "--config.total_steps=3", "--config.log_every=1",
                    "--config.checkpoint_every=3", f"--coordinator_address=127.0.0.1:{port}",
                    "--num_processes=2", f"--process_id={i}"),
      cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
      for i in range(2)]
  outputs = [p.communicate(timeout=600) for p in procs]
  for p, (_, err) in zip(procs, outputs):
    assert p.returncode == 0, err[-3000:]
  per_process = []
  for _, err in outputs:
    per_process.append([float(line.split("loss ")[1]) for line in err.splitlines()
                        if " loss " in line])
  assert len(per_process[0]) == 3
  assert per_process[0] == per_process[1]
  assert list(losses(tmp_path / "multi").values()) == pytest.approx(per_process[0], abs=1e-6)


def test_resume_after_sigkill_equals_uninterrupted_run(tmp_path):
  steps = ["--config.total_steps=8", "--config.log_every=1", "--config.checkpoint_every=3"]
  whole = run(train_command(tmp_path / "whole", *steps))
  assert whole.returncode == 0, whole.stderr[-3000:]
  victim = subprocess.Popen(train_command(tmp_path / "killed", *steps), cwd=REPO, env=env_with(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  checkpoint = tmp_path / "killed" / "checkpoints" / "3"
  deadline = time.time() + 500
  while not checkpoint.exists() and victim.poll() is None and time.time() < deadline:
    time.sleep(0.2)
  victim.send_signal(signal.SIGKILL)
  victim.wait()
  assert checkpoint.exists()
  resumed = run(train_command(tmp_path / "killed", *steps))
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert "resumed from step" in resumed.stderr
  expected, got = losses(tmp_path / "whole"), losses(tmp_path / "killed")
  assert sorted(got) == list(range(1, 9))
  assert got == expected  # bitwise on CPU, every step after the checkpoint included


def sni_run(tmp_path, tasks=12):
  """configs/hypert5_mtf.py:sni_def,prefix,runlocal over S-NI task files written here."""
  import fixtures_tasks

  from hypert5_tasks import vocab
  names = [f"task{i:03d}_fixture" for i in range(tasks)]
  fixtures_tasks.write_sni(tmp_path / "sni", {
      n: fixtures_tasks.sni_task(definition=f"Answer question kind {i}.", num_instances=24 + i)
      for i, n in enumerate(names)}, train=names[:-2], test=names[-2:])
  env = env_with(1, HYPERT5_SNI_DIR=str(tmp_path / "sni"), HYPERT5_DATA_CACHE=str(
      tmp_path / "cache"), HYPERT5_VOCAB=str(vocab.EMBEDDED_VOCAB_PATH))
  config = os.path.join(REPO, "configs", "hypert5_mtf.py") + ":sni_def,prefix,runlocal"
  short = ["--config.data.hyper_inputs_length=128", "--config.data.inputs_length=32",
           "--config.data.targets_length=16"]
  return config, short, env, names


def test_sni_mtf_resumed_after_sigkill_equals_uninterrupted_run(tmp_path):
  config, short, env, _ = sni_run(tmp_path)
  steps = [*short, "--config.total_steps=8", "--config.log_every=1",
           "--config.checkpoint_every=3"]
  whole = run(train_command(tmp_path / "whole", *steps, config=config), env)
  assert whole.returncode == 0, whole.stderr[-3000:]
  victim = subprocess.Popen(train_command(tmp_path / "killed", *steps, config=config),
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
  checkpoint = tmp_path / "killed" / "checkpoints" / "3"
  deadline = time.time() + 500
  while not checkpoint.exists() and victim.poll() is None and time.time() < deadline:
    time.sleep(0.2)
  victim.send_signal(signal.SIGKILL)
  victim.wait()
  assert checkpoint.exists()
  resumed = run(train_command(tmp_path / "killed", *steps, config=config), env)
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert "resumed from step" in resumed.stderr
  expected, got = losses(tmp_path / "whole"), losses(tmp_path / "killed")
  assert sorted(got) == list(range(1, 9))
  assert got == expected  # bitwise, every step after the checkpoint included
  meta = json.loads((tmp_path / "killed" / "checkpoints" / "8" / "meta" / "metadata")
                    .read_text())
  assert meta["data_state"] == {"batches": 8, "rows": None}  # where the stream stands
  assert [t[0] for t in meta["data"]["tasks"]] == [f"sni_def.task{i:03d}_fixture"
                                                  for i in range(10)]


def test_resuming_on_another_composition_of_the_mixture_is_refused(tmp_path):
  config, short, env, names = sni_run(tmp_path)
  steps = [*short, "--config.total_steps=4", "--config.log_every=1",
           "--config.checkpoint_every=2"]
  first = run(train_command(tmp_path / "wd", *steps, "--config.total_steps=2", config=config),
              env)
  assert first.returncode == 0, first.stderr[-3000:]
  metrics = (tmp_path / "wd" / "metrics.jsonl").read_text()
  split = tmp_path / "sni" / "splits" / "default" / "train_tasks.txt"
  split.write_text(split.read_text() + f"{names[-1]}\n")  # one more training task
  again = run(train_command(tmp_path / "wd", *steps, config=config), env)
  assert again.returncode == 1
  assert ("checkpoint 2 in" in again.stderr and "another composition of mixture "
          f"sni_def_train: tasks added: sni_def.{names[-1]}" in again.stderr), again.stderr
  assert "Traceback" not in again.stderr
  assert (tmp_path / "wd" / "metrics.jsonl").read_text() == metrics  # nothing lost


def test_sigterm_saves_the_current_step(tmp_path):
  proc = subprocess.Popen(
      train_command(tmp_path / "wd", "--config.total_steps=1000", "--config.log_every=1",
                    "--config.checkpoint_every=1000", "--config.data.source=synthetic"),
      cwd=REPO, env=env_with(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  metrics = tmp_path / "wd" / "metrics.jsonl"
  deadline = time.time() + 500
  while time.time() < deadline and proc.poll() is None:
    if metrics.exists() and len(metrics.read_text().splitlines()) >= 3:
      break
    time.sleep(0.1)
  proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=300)
  assert proc.returncode == 75, err[-3000:]  # cli.EXIT_PREEMPTED: not finished, resumable
  assert "preempted: saved step" in err
  saved = int(err.split("preempted: saved step ")[1].split(";")[0])
  steps = sorted(int(n) for n in os.listdir(tmp_path / "wd" / "checkpoints") if n.isdigit())
  assert steps == [saved] and 3 <= saved < 1000
  meta = json.loads((tmp_path / "wd" / "checkpoints" / str(saved) / "meta" /
                     "metadata").read_text())
  assert meta["step"] == saved == meta["batches_consumed"]


def test_sigterm_is_caught_only_while_a_loop_runs():
  # hypert5.demo trains stages and evaluates in one process: a SIGTERM between loops
  # must stop it, not set the flag of a loop that has ended.
  from hypert5.training import loop as train
  before = signal.getsignal(signal.SIGTERM)
  preemption = train._Preemption()
  os.kill(os.getpid(), signal.SIGTERM)
  assert preemption.check(0)
  preemption.close()
  assert signal.getsignal(signal.SIGTERM) == before


def test_half_written_checkpoint_falls_back_to_the_previous_one(tmp_path, tiny_hyper_run):
  workdir = tmp_path / "wd"
  shutil.copytree(tiny_hyper_run, workdir)
  expected = losses(workdir)
  ckpts = workdir / "checkpoints"
  # What a kill leaves: Orbax's temporary folder for step 6, and a step-4 folder
  # whose parameter files are gone (damaged outside Orbax).
  (ckpts / "6.orbax-checkpoint-tmp-1234" / "hyper").mkdir(parents=True)
  for root, _, files in os.walk(ckpts / "4" / "hyper"):
    for name in files:
      os.remove(os.path.join(root, name))
  resumed = run(train_command(workdir, "--config.total_steps=4", "--config.checkpoint_every=2",
                              "--config.log_every=1"))
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert "resumed from step 2" in resumed.stderr
  assert losses(workdir) == expected  # steps 3 and 4 replayed exactly


def test_unknown_config_key_is_an_error(tmp_path):
  result = run(train_command(tmp_path / "wd", "--config.learning_rate=0.1"))
  assert result.returncode != 0
  assert "learning_rate" in result.stderr and not (tmp_path / "wd").exists()


def test_workdir_with_other_model_shape_is_an_error(tmp_path, tiny_hyper_run):
  workdir = tmp_path / "wd"
  shutil.copytree(tiny_hyper_run, workdir)
  result = run(train_command(workdir, "--config.total_steps=6", "--config.model.d_ff=96"))
  assert result.returncode == 1
  assert "has shape [2, 64, 128] in the checkpoint but [2, 64, 96]" in result.stderr
  assert max(losses(workdir)) == 4  # no step ran


def test_mesh_that_does_not_fit_is_an_error(tmp_path):
  result = run(train_command(tmp_path / "wd", "--config.mesh_shape=(3,2)",
                             "--config.mesh_axes=('data','model')"), env_with(8))
  assert result.returncode == 1
  assert "mesh_shape (3, 2) needs 6 devices, but 8 are available" in result.stderr


def synthetic_tiny_config():
  from hypert5 import cli
  config = cli.load_config(TINY)
  config.data.source = "synthetic"
  return config


def test_gradient_accumulation_matches_one_big_batch(tmp_path):
  from hypert5.training import loop as train
  config = synthetic_tiny_config()
  config.total_steps, config.log_every, config.checkpoint_every = 3, 1, 100
  config.optimizer.grad_clip_norm = 0.0
  whole = train.train(config, str(tmp_path / "a"))
  config.optimizer.grad_accum_steps = 4
  accumulated = train.train(config, str(tmp_path / "b"))
  np.testing.assert_allclose([e["loss"] for e in accumulated], [e["loss"] for e in whole],
                             rtol=1e-5)


def test_runs_in_one_process_share_a_step_only_when_nothing_differs(tmp_path):
  """hypert5.demo trains its stages in one process and reuses their jitted steps
  (the step_cache it keeps): a run with another learning rate must not get the
  first run's step, and an identical run gets it without tracing it again."""
  from jax import monitoring

  from hypert5.training import loop as train
  config = synthetic_tiny_config()
  config.total_steps, config.log_every, config.checkpoint_every = 2, 1, 100
  steps = {}
  first = [e["loss"] for e in train.train(config, str(tmp_path / "a"), step_cache=steps)]
  config.optimizer.learning_rate *= 30
  faster = [e["loss"] for e in train.train(config, str(tmp_path / "b"), step_cache=steps)]
  assert faster[0] == first[0] and abs(faster[1] - first[1]) > 1e-4  # the new rate applied
  config.optimizer.learning_rate /= 30
  traced = []
  listener = lambda event, duration, **kwargs: traced.append(kwargs.get("fun_name"))
  monitoring.register_event_duration_secs_listener(listener)
  try:
    again = [e["loss"] for e in train.train(config, str(tmp_path / "c"), step_cache=steps)]
  finally:
    monitoring.unregister_event_duration_listener(listener)
  assert again == first
  assert "step_fn" not in traced
