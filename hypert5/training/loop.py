"""One train loop for every stage of the paper.

  python -m hypert5.train --config=configs/NAME.py --workdir=DIR [--config.KEY=VALUE ...]

Sections, in order: distributed setup; the set-up shared with `hypert5.plan`
and `hypert5.bench` (`trainer_setup.setup_train`: mesh, models and optimizer,
abstract shapes and shardings, the jitted step with explicit in/out shardings
and donated state); restore or initialize (`trainer_setup.initial_params`,
directly into the shardings); and the loop (logging, asynchronous Orbax
checkpoints, preemption, NaN stop).

The workdir gets config.json (the resolved config), metrics.jsonl (one object
per logged step), TensorBoard events under tensorboard/ and checkpoints under
checkpoints/. A run restarted on the same workdir resumes from the latest
complete checkpoint and sees exactly the batches it would have seen.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from tqdm import tqdm

from hypert5 import experiment, files
from hypert5.errors import (
  CheckpointError,
  ConfigError,
  DamagedCheckpoint,
  Preempted,
  TrainingDiverged,
)
from hypert5.formats import checkpoints
from hypert5.training import data, trainer_setup

log = logging.getLogger("hypert5.train")


def _count_tokens(batch: dict) -> int:
  return int(sum(np.count_nonzero(batch[k]) for k in
                 ("hyper_encoder_input_tokens", "encoder_input_tokens", "decoder_target_tokens")
                 if k in batch))


class _Preemption:
  """SIGTERM sets a flag; the loop saves at the current step and exits.

  Only while the loop runs: close() puts back the handler it found, so a SIGTERM
  between runs of one process (hypert5.demo's stages and evaluations) still stops it.
  """

  def __init__(self):
    self.requested = False
    self._installed, self._previous = False, None
    if jax.process_index() == 0 or jax.process_count() == 1:
      try:
        self._previous = signal.signal(signal.SIGTERM, self._handle)
        self._installed = True
      except ValueError:  # not the main thread (tests calling train())
        pass

  def close(self) -> None:
    if self._installed:  # None: the handler was not set from Python; restore the default
      signal.signal(signal.SIGTERM, signal.SIG_DFL if self._previous is None else self._previous)
      self._installed = False

  def _handle(self, signum, frame):
    del signum, frame
    self.requested = True

  def check(self, step: int) -> bool:
    if jax.process_count() > 1:
      try:
        return multihost_utils.reached_preemption_sync_point(step) or self.requested
      except Exception:  # noqa: BLE001  (no preemption service on this platform)
        return self.requested
    return self.requested


def _write_config(config, workdir: str) -> None:
  path = os.path.join(workdir, "config.json")
  with open(path + ".partial", "w") as f:
    f.write(config.to_json_best_effort(indent=2, sort_keys=True))
  os.replace(path + ".partial", path)


def _set_aside_damaged(checkpointer, restored_step: int) -> None:
  """Renames step folders newer than the one restored (damaged ones, since the
  newest complete checkpoint is always tried first) so that saving those steps
  again works; nothing is deleted."""
  for step in checkpointer.all_steps():
    if step > restored_step:
      path = os.path.join(checkpointer.directory, str(step))
      aside = f"{path}.damaged-{int(time.time())}"
      os.rename(path, aside)
      log.warning("set aside damaged checkpoint %s as %s", path, aside)
  checkpointer.manager.reload()


def _truncate_metrics(path: str, last_step: int) -> None:
  """Drops logged steps after the checkpoint a resumed run starts from. A torn last
  line (a crash while it was written) is dropped with a warning; a broken line before
  the last is an error naming it, and nothing is changed."""
  if not os.path.exists(path):
    return
  with open(path, encoding="utf-8", errors="replace") as f:
    lines = [line for line in f if line.strip()]
  kept = []
  for number, line in enumerate(lines, start=1):
    try:
      entry = json.loads(line)
      step = int(entry["step"])
    except (ValueError, KeyError, TypeError):
      if number == len(lines):
        log.warning("%s: dropped its last line, written only in part (a crash while "
                    "logging): %r", path, line[:80])
        break
      raise CheckpointError(f"{path}:{number}: not a metrics line ({line[:60]!r}); "
                            "remove or mend that line, then resume") from None
    if step <= last_step:
      kept.append(line if line.endswith("\n") else line + "\n")
  files.write_atomic(path, "".join(kept))


def _set_aside_previous_metrics(workdir: str) -> None:
  """A run starting at step 0 over metrics of the same config that never saved a
  checkpoint: they are kept beside it, not overwritten."""
  path = os.path.join(workdir, "metrics.jsonl")
  if os.path.exists(path) and os.path.getsize(path):
    aside = os.path.join(workdir, f"metrics.before-{int(time.time())}.jsonl")
    os.rename(path, aside)
    log.warning("%s held steps of a start that saved no checkpoint; kept as %s", path, aside)


# Keys whose change makes a run's checkpoints another run's: its model, what trains,
# the optimizer's state. (The length of training, logging and the mesh may change.)
STATE_KEYS = ("experiment", "model.", "peft.", "hyper.", "optimizer.name", "optimizer.freeze",
              "optimizer.adafactor_parameter_scale", "data.mixture", "seed")


def _flat(tree, prefix: str = "") -> dict:
  if isinstance(tree, dict):
    out = {}
    for key, value in tree.items():
      out.update(_flat(value, f"{prefix}{key}."))
    return out
  return {prefix[:-1]: tuple(tree) if isinstance(tree, list) else tree}


def config_differences(saved: dict, config) -> list[str]:
  """'key: saved -> now' for each state key whose value differs between a workdir's
  config.json and this run's config."""
  before, now = _flat(saved), _flat(json.loads(config.to_json_best_effort()))
  return [f"{k}: {before.get(k)!r} -> {now.get(k)!r}" for k in sorted(set(before) | set(now))
          if k.startswith(STATE_KEYS) and before.get(k) != now.get(k)]


def _saved_config(workdir: str) -> dict | None:
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    return None
  try:
    with open(path, encoding="utf-8") as f:
      return json.load(f)
  except (ValueError, UnicodeDecodeError) as e:
    raise CheckpointError(f"{path}: not the JSON a run writes ({e}); it describes the run "
                          "in this workdir: mend it or pass another --workdir") from None


def train(config, workdir: str, *, stop_after: int | None = None,
          step_cache: dict | None = None) -> list[dict]:
  """Runs (or resumes) training; returns the metrics logged by this invocation.

  stop_after: end (without a final checkpoint) after this many steps of this
  invocation; tests use it to interrupt a run. step_cache: see
  trainer_setup.setup_train (runs of one process that share jitted steps).
  """
  workdir = os.path.abspath(workdir)
  is_chief = jax.process_index() == 0
  experiment.validate(config)
  files.check_writable_dir(workdir, ConfigError, "--workdir")
  os.makedirs(workdir, exist_ok=True)
  saved_config = _saved_config(workdir)

  if config.eval_every and jax.process_count() > 1:
    raise ConfigError("config.eval_every: evaluation along the way runs in one process; on "
                     "several hosts evaluate the checkpoints with python -m hypert5.eval")

  data.size_vocabulary(config, experiment.data_form(config))

  # -- Mesh, models, optimizer, abstract state and the step: the set-up that
  # hypert5.plan and hypert5.bench share (nothing allocated or compiled yet) --
  setup = trainer_setup.setup_train(config, step_cache=step_cache)
  models = setup.models
  stream = None
  if config.data.source in ("seqio", "seqio_tfdata"):  # fail now, not after initialization
    mixture = data.check_mixture(config, experiment.data_form(config))
    if is_chief:  # TF-free tools (hypert5.adapt, hypert5.score) read it from here
      data.write_vocabulary(mixture, os.path.join(workdir, "spiece.model"))
  if config.data.source == "seqio":
    # One process builds missing caches itself; on several hosts they must all read
    # the same, built beforehand.
    stream = data.open_stream(config, experiment.data_form(config),
                              build_missing=jax.process_count() == 1,
                              preprocess_hint=_preprocess_command())
  trainable_abstract = {p: setup.abstract[p] for p in models.trainable}
  opt_abstract = setup.opt_abstract

  # -- Restore or initialize --------------------------------------------------
  checkpointer = checkpoints.TrainCheckpointer(os.path.join(workdir, "checkpoints"),
                                               keep=config.keep_checkpoints)
  start_step, data_state, trainable, opt_state = 0, data.DataState(), None, None
  differences = config_differences(saved_config, config) if saved_config else []
  another_run = (f"; {workdir}/config.json differs from this config in "
                 f"{'; '.join(differences)}") if differences else ""
  steps = checkpointer.all_steps()
  if differences and not steps:
    raise ConfigError(f"{workdir} holds the start of another run (no checkpoint yet){another_run}."
                      " Pass another --workdir, or remove this one")
  damaged = []
  for step in reversed(steps):
    try:
      # A checkpoint of another model shape is a clear error before any step.
      checkpointer.check_fits(step, trainable_abstract)
      trainable, opt_state, meta = checkpointer.restore(step, trainable_abstract, opt_abstract)
    except DamagedCheckpoint as e:
      log.warning("%s; trying an older checkpoint", e)
      damaged.append(f"{step} ({e})")
      continue
    except CheckpointError as e:
      # Another model's checkpoint: say so, do not fall back to an older one.
      raise CheckpointError(f"{e}{another_run}") from None
    except Exception as e:  # noqa: BLE001  (damaged outside Orbax's save, or another config's)
      if differences:  # the optimizer's state of another config does not restore
        raise ConfigError(f"checkpoint {step} in {checkpointer.directory} cannot be restored "
                          f"with this config{another_run}. Resume with the run's own config "
                          "(its config.json), or pass another --workdir") from None
      log.warning("checkpoint %d in %s cannot be restored (%s); trying an older one",
                  step, checkpointer.directory, e)
      damaged.append(f"{step} ({type(e).__name__}: {str(e).splitlines()[0][:120]})")
      continue
    _check_same_data(meta, stream, step, checkpointer.directory)
    start_step = int(meta["step"])
    data_state = data.DataState.from_dict(meta.get("data_state")
                                          or {"batches": meta["batches_consumed"]})
    log.info("resumed from step %d", start_step)
    if is_chief:
      _set_aside_damaged(checkpointer, start_step)
    break
  if steps and trainable is None:  # never start over on top of a run's checkpoints
    raise CheckpointError(f"no checkpoint in {checkpointer.directory} can be restored: "
                          f"{'; '.join(damaged)}. Nothing was changed; move the damaged "
                          "step folders aside to start over, or pass another --workdir")
  if is_chief:
    if steps:
      _truncate_metrics(os.path.join(workdir, "metrics.jsonl"), start_step)
    else:
      _set_aside_previous_metrics(workdir)
    _write_config(config, workdir)
  # Before the input thread starts: imports must not race with the input thread's.
  writer = _MetricsWriter(workdir, config, start_step) if is_chief else None

  # Input: started now, so building the pipeline overlaps initialization and compilation.
  local_batch = config.batch_size // jax.process_count()
  batches = data.Prefetcher(lambda start=data_state: data.train_stream(
      config, setup.features, local_batch_size=local_batch, shard_index=jax.process_index(),
      num_shards=jax.process_count(), start=start, form=experiment.data_form(config),
      stream=stream))

  fresh = setup.initial_params(models.frozen if trainable is not None else models.parts)
  frozen = {p: fresh[p] for p in models.frozen}
  if trainable is None:
    trainable = {p: fresh[p] for p in models.trainable}
    opt_state = setup.init_optimizer(trainable)
  del fresh

  # -- Evaluation along the way (config.eval_every) ---------------------------
  def evaluate(step):
    from hypert5.inference import evaluate as eval_lib  # noqa: PLC0415  (TF: only to evaluate)
    results, _ = eval_lib.evaluate_params(config, models, {**trainable, **frozen},
                                          progress=False)
    entry = {"step": step, "eval_average": results["average"],
             "eval_tasks": {t: v for t, v in results["tasks"].items()}}
    log.info("step %d eval %s %.2f", step, results["mixture"], results["average"])
    if writer:
      writer.write_eval(entry)
    return entry

  # -- Loop -------------------------------------------------------------------
  preemption = _Preemption()
  logged: list[dict] = []
  last_saved = start_step if start_step else None
  pending = None  # (step, metrics) of the previous step, checked while the next runs
  interval_tokens, interval_start = 0, time.time()

  def check(step, metrics):
    loss = float(metrics["loss"])
    if not math.isfinite(loss):
      where = (f"the last good checkpoint is step {last_saved} in {checkpointer.directory}"
               if last_saved is not None else "no checkpoint was saved")
      raise TrainingDiverged(f"loss is {loss} at step {step}; stopping ({where})")
    return loss

  def save(step):
    nonlocal last_saved
    meta = {"step": step, "batches_consumed": data_state.batches,
            "data_state": data_state.to_dict()}
    if stream is not None:
      meta["data"] = stream.composition
    checkpointer.save(step, trainable, opt_state, meta)
    last_saved = step

  step, preempted = start_step, False
  try:
    if config.eval_every and step == 0:
      evaluate(0)  # where fine-tuning starts (paper Figure 5)
    while step < config.total_steps:
      if preemption.check(step):
        if last_saved != step:
          save(step)
        checkpointer.wait()
        log.warning("preempted: saved step %d; exiting", step)
        preempted = True
        break
      if stop_after is not None and step - start_step >= stop_after:
        break
      local, data_state = next(batches)
      interval_tokens += _count_tokens(local) * jax.process_count()
      batch = setup.global_batch(local)
      with setup.activate():
        trainable, opt_state, metrics = setup.step(trainable, opt_state, jnp.int32(step), frozen,
                                                   batch)
      if pending is not None:
        check(*pending)
      step += 1
      pending = (step, metrics)
      if step % config.log_every == 0 or step == config.total_steps:
        loss = check(*pending)
        elapsed = max(time.time() - interval_start, 1e-9)
        entry = {"step": step, "loss": loss, "learning_rate": float(metrics["learning_rate"]),
                 "grad_norm": float(metrics["grad_norm"]),
                 "tokens_per_sec": interval_tokens / elapsed}
        logged.append(entry)
        log.info("step %d loss %.6f", step, loss)
        if writer:
          writer.write(entry)
        interval_tokens, interval_start = 0, time.time()
      if config.eval_every and (step % config.eval_every == 0 or step == config.total_steps):
        check(*pending)
        evaluate(step)
      if step % config.checkpoint_every == 0 or step == config.total_steps:
        check(*pending)
        save(step)
    if pending is not None:
      check(*pending)
  finally:
    preemption.close()
    batches.close()
    checkpointer.wait()
    checkpointer.close()
    if writer:
      writer.close()
  if preempted:
    raise Preempted(f"preempted at step {step}")
  return logged


def _preprocess_command() -> str:
  """This command's config flags after `python -m hypert5.preprocess`."""
  flags_ = [a for a in sys.argv[1:] if a.startswith("--config")]
  return " ".join(["python -m hypert5.preprocess"] + (flags_ or ["--config=CONFIG"]))


def _check_same_data(meta: dict, stream, step: int, directory: str) -> None:
  """A resumed run must read the stream it was trained on: the same tasks, rates and
  example counts (a changed mixture would silently start another stream)."""
  saved = meta.get("data")
  if stream is None or saved is None:
    return
  now = stream.composition
  where = f"checkpoint {step} in {directory}"
  for key in ("mixture", "split", "seed"):
    if saved.get(key) != now[key]:
      raise ConfigError(f"{where} was trained on data {key} {saved.get(key)!r}, this run "
                        f"reads {now[key]!r}; resume with the run's own config, or start "
                        "a new workdir")
  before = {t[0]: tuple(t[1:]) for t in saved["tasks"]}
  after = {t[0]: tuple(t[1:]) for t in now["tasks"]}
  if before != after:
    gone, new = sorted(set(before) - set(after)), sorted(set(after) - set(before))
    changed = sorted(t for t in set(before) & set(after) if before[t] != after[t])
    detail = "; ".join(part for part in (
        f"tasks no longer mixed: {', '.join(gone[:3])}" if gone else "",
        f"tasks added: {', '.join(new[:3])}" if new else "",
        (f"{changed[0]} had (rate, examples) {before[changed[0]]}, now {after[changed[0]]}"
         + (f" (and {len(changed) - 1} more)" if len(changed) > 1 else ""))
        if changed else "") if part)
    raise ConfigError(f"{where} was trained on another composition of mixture "
                      f"{now['mixture']}: {detail}. Resume with the data it was trained on, "
                      "or start a new workdir")


FINISHED_MARKER = "DONE"


def is_finished(workdir: str) -> bool:
  """Whether train_to_completion has finished the run in `workdir`."""
  return os.path.exists(os.path.join(workdir, FINISHED_MARKER))


def train_to_completion(config, workdir: str, step_cache: dict | None = None) -> None:
  """Trains (or resumes) unless `workdir` is marked finished, then marks it. A
  preempted run raises Preempted and stays unmarked, so the next call resumes it."""
  if not is_finished(workdir):
    train(config, workdir, step_cache=step_cache)
    with open(os.path.join(workdir, FINISHED_MARKER), "w") as f:
      f.write("finished\n")


def _summary_writer_class():
  """tensorboardX's SummaryWriter, imported without torch: tensorboardX imports torch
  when it can, only to accept torch tensors (we log floats), and that import alone
  takes seconds per process."""
  if "torch" in sys.modules or "tensorboardX" in sys.modules:
    from tensorboardX import SummaryWriter  # noqa: PLC0415  (torch hidden, below)
    return SummaryWriter
  sys.modules["torch"] = None  # makes `import torch` raise ImportError
  try:
    from tensorboardX import SummaryWriter  # noqa: PLC0415  (imported with torch hidden)
  finally:
    del sys.modules["torch"]
  return SummaryWriter


def _progress_bar_disabled() -> bool:
  """The bar shows on a terminal; HYPERT5_PROGRESS=1 forces it, =0 hides it (a second
  process sharing the terminal, as hypert5.demo's second worker does)."""
  forced = os.environ.get("HYPERT5_PROGRESS")
  return forced == "0" if forced in ("0", "1") else not sys.stderr.isatty()


class _MetricsWriter:
  """metrics.jsonl, TensorBoard events and the console progress bar (process 0)."""

  def __init__(self, workdir: str, config, start_step: int):
    summary_writer = _summary_writer_class()
    self.jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a")
    self.tensorboard = summary_writer(os.path.join(workdir, "tensorboard"))
    self.bar = tqdm(total=config.total_steps, initial=start_step, unit="step",
                    disable=_progress_bar_disabled(),
                    dynamic_ncols=True)
    self.last_step = start_step

  def write(self, entry: dict) -> None:
    self.jsonl.write(json.dumps(entry) + "\n")
    self.jsonl.flush()
    for key, value in entry.items():
      if key != "step":
        self.tensorboard.add_scalar(key, value, entry["step"])
    self.bar.update(entry["step"] - self.last_step)
    self.bar.set_postfix(loss=f"{entry['loss']:.4f}", tok_s=f"{entry['tokens_per_sec']:,.0f}")
    self.last_step = entry["step"]

  def write_eval(self, entry: dict) -> None:
    self.jsonl.write(json.dumps(entry) + "\n")
    self.jsonl.flush()
    self.tensorboard.add_scalar("eval_average", entry["eval_average"], entry["step"])

  def close(self) -> None:
    self.jsonl.close()
    self.tensorboard.close()
    self.bar.close()
