"""Adapting to a new task without backpropagation: phi from a few examples.

  python -m hypert5.adapt --checkpoint=RUN --examples=FILE.jsonl [--definition=TEXT]
      --out=DIR [--format=native|peft]

RUN is a HyperT5 training run (its workdir, checkpoints/ folder or one step).
FILE holds up to 16 lines of {"input": ..., "output": ...}; more are allowed,
and only the first 16 are used (a warning says so). The examples are written
as the hypermodel saw them in training (text/prompts.py), phi is generated in
one forward pass and written as an adapter: HyperT5's own format, or for
HyperT5-LoRA also HuggingFace PEFT's, which `peft.PeftModel.from_pretrained`
loads on the HuggingFace T5.

The same machinery gives ordinary PEFT fine-tuning its "hyper" initialization
(paper section 6; `init.peft=hyper` in a peft_finetune config, see
training/trainer_setup.py). The work is done by the Python API
(inference/api.py: load, Run.phi, Run.save_adapter).
"""

from __future__ import annotations

from absl import flags

from hypert5 import cli
from hypert5.formats import adapters
from hypert5.inference import api

FLAGS = flags.FLAGS


def define_flags() -> None:
  flags.DEFINE_string("checkpoint", None, "A HyperT5 training run.", required=True)
  flags.DEFINE_string("examples", None, "jsonl of {input, output} few-shot examples.",
                      required=True)
  flags.DEFINE_string("definition", None, "Task definition, read before the examples.")
  flags.DEFINE_string("out", None, "Adapter folder to write.", required=True)
  flags.DEFINE_bool("overwrite", False, "Replace an existing --out folder (once the new "
                    "adapter is written); without it an existing folder is an error.")
  flags.DEFINE_enum("format", "native", ["native", "peft"],
                    "native: HyperT5's adapter; peft: HuggingFace PEFT (LoRA only).")
  flags.DEFINE_integer("max_examples", api.MAX_EXAMPLES, "Examples used; later lines are ignored.")


def main(argv) -> None:
  del argv
  cli.quiet_logs()
  examples = api.read_examples(FLAGS.examples, FLAGS.max_examples)
  run = api.load(FLAGS.checkpoint)
  fit = run.context_fit(examples, FLAGS.definition)
  run.save_adapter(run.phi(examples, FLAGS.definition), FLAGS.out, FLAGS.format,
                   overwrite=FLAGS.overwrite, context_fit=fit)
  print(f"wrote {FLAGS.format} adapter to {FLAGS.out}: {fit['examples_kept']} of "
        f"{fit['examples_given']} examples fit the hypermodel's input whole "
        f"({adapters.CONTEXT_FILE} there says so)")


if __name__ == "__main__":
  cli.run(main, define_flags)
