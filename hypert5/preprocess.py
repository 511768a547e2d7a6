"""Builds the example cache of a run's training mixture, once, before training.

  python -m hypert5.preprocess --config=configs/hypert5_mtf.py:sni_def,prefix,large \
      [--config.KEY=VALUE ...] [--workers=8] [--max_pieces=N]
  python -m hypert5.preprocess --mixture=p3_t0_train [--split=train] [--cache_dir=DIR]

The training stream reads every task's examples from the cache
(hypert5_tasks.example_cache): each task is read from its source, tokenized and
written once, with a progress bar; what is already built (whole tasks, and the
pieces of a large one such as C4) is kept, so an interrupted run of this command
resumes where it stopped. `hypert5.train` in one process builds what is missing
itself; on several hosts it refuses to start until this command has run (once,
into a folder every host reads: `--config.data.cache_dir`, or
$HYPERT5_DATA_CACHE). The data files each task names are checked against the
ones the cache was built from; changed files are preprocessed again.

--workers builds several tasks at once (processes of their own; the tasks must
be registered on import: built-in ones, or $HYPERT5_TASK_MODULES). --max_pieces
caches only the first N pieces of a task read in pieces (C4: N of its 1,024
files), for a run that needs less.
"""

from __future__ import annotations

import os
import sys
import time

from absl import flags
from ml_collections import config_flags

from hypert5 import cli, experiment
from hypert5.errors import ConfigError, HyperT5Error
from hypert5_tasks import forms, indexed

FLAGS = flags.FLAGS


def define_flags() -> None:
  config_flags.DEFINE_config_file("config", None, "The training run's config (its mixture, "
                                  "split and cache folder).", lock_config=True)
  flags.DEFINE_string("mixture", None, "A registered mixture or task instead of --config's.")
  flags.DEFINE_string("split", "train", "With --mixture: the split.")
  flags.DEFINE_string("form", "hyper", "With --mixture: hyper, concat or xonly.")
  flags.DEFINE_string("cache_dir", None, "With --mixture: the cache folder (default "
                      "$HYPERT5_DATA_CACHE or ~/.cache/hypert5/data).")
  flags.DEFINE_integer("workers", 1, "Tasks built at once.")
  flags.DEFINE_integer("max_pieces", None, "Cache at most this many pieces of a task read "
                       "in pieces (C4).")


def preprocess(mixture: str, split: str, *, form: str = "hyper", cache_dir: str | None = None,
               workers: int = 1, max_pieces: int | None = None, out=sys.stdout) -> dict:
  """Builds what the mixture's stream reads; returns a summary."""
  if workers < 1:
    raise HyperT5Error(f"--workers={workers}: must be at least 1")
  if max_pieces is not None and max_pieces < 1:
    raise HyperT5Error(f"--max_pieces={max_pieces}: must be at least 1")
  name = forms.resolve_mixture(mixture, form)
  start = time.time()
  planned = indexed.plan(name, split, cache_dir)
  print(f"{name} ({split}): {len(planned.tasks)} task(s) of nonzero rate, "
        f"{len(planned.missing)} to preprocess into {planned.root}", file=out)
  if planned.missing:
    indexed.build_caches(planned.missing, planned.root, workers=workers, max_pieces=max_pieces)
  summary = {"mixture": name, "split": split, "cache_dir": planned.root,
             "tasks": len(planned.tasks), "built": len(planned.missing),
             "examples": planned.examples, "seconds": round(time.time() - start, 1)}
  print(f"done in {summary['seconds']} s: {summary['examples']:,} examples in "
        f"{summary['tasks']} task(s) under {planned.root}", file=out)
  return summary


def main(argv):
  del argv
  cli.quiet_logs()
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  if FLAGS.mixture:
    preprocess(FLAGS.mixture, FLAGS.split, form=FLAGS.form, cache_dir=FLAGS.cache_dir,
               workers=FLAGS.workers, max_pieces=FLAGS.max_pieces)
  elif FLAGS.config is not None:
    config = FLAGS.config
    if config.data.source != "seqio":
      raise ConfigError(f"config.data.source={config.data.source!r}: only the seqio "
                        "source reads the example cache; nothing to preprocess")
    preprocess(config.data.mixture, config.data.split, form=experiment.data_form(config),
               cache_dir=config.data.cache_dir or None, workers=FLAGS.workers,
               max_pieces=FLAGS.max_pieces)
  else:
    raise ConfigError("pass --config=CONFIG (a training run's) or --mixture=NAME")


if __name__ == "__main__":
  cli.run(main, define_flags)
