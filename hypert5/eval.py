"""`python -m hypert5.eval`: a trained run, or a baseline, on a benchmark mixture
(the evaluator: inference/evaluate.py).

  python -m hypert5.eval --config=configs/NAME.py --checkpoint=DIR [--output=DIR]
      [--config.eval.mixture=p3_heldout_score_eval] [--save_phi=DIR] [--load_phi=DIR]

DIR is a training workdir (or its checkpoints/ or one step folder) of the
config's experiment, or, for a plain downstream T5, a model checkpoint (native
or HuggingFace). Writes results.json, results.md and predictions.jsonl straight
into --output (default DIR/eval_MIXTURE), all at once at the end. --save_phi
writes each task's phi as an adapter in SAVE_PHI/TASK (the task's registered
name); --load_phi reads them back from the same names.
"""

from __future__ import annotations

import os

from absl import flags
from ml_collections import config_flags

from hypert5 import cli, files
from hypert5.errors import EvalError
from hypert5.inference import evaluate

FLAGS = flags.FLAGS


def define_flags() -> None:
  config_flags.DEFINE_config_file("config", None, "Experiment config file.", lock_config=True)
  flags.DEFINE_string("checkpoint", None, "Workdir / checkpoint of the run, or a T5 model dir.")
  flags.DEFINE_string("output", None, "Results folder (default: CHECKPOINT/eval_<mixture>).")
  flags.DEFINE_string("save_phi", None, "Write each task's phi as an adapter under this folder.")
  flags.DEFINE_string("load_phi", None, "Use the phi adapters saved under this folder.")


def main(argv) -> None:
  del argv
  cli.quiet_logs()
  output = FLAGS.output or os.path.join(FLAGS.checkpoint,
                                        f"eval_{evaluate.eval_mixture(FLAGS.config)}")
  # Said before the work, not after it: results that cannot be written are lost.
  files.check_writable_dir(output, EvalError, "--output")
  if FLAGS.save_phi:
    files.check_writable_dir(FLAGS.save_phi, EvalError, "--save_phi")
  results, predictions = evaluate.evaluate(FLAGS.config, FLAGS.checkpoint,
                                           save_phi=FLAGS.save_phi, load_phi=FLAGS.load_phi)
  evaluate.write_results(output, results, predictions)
  print(evaluate.format_table(results["benchmark"], {results["name"]: results}))
  print(f"wrote {output}/results.json")


if __name__ == "__main__":
  cli.run(main, define_flags, required=["config", "checkpoint"])
