"""Log-likelihood of targets given inputs, from a checkpoint, for a jsonl file.

  python -m hypert5.score --checkpoint=PATH --data=FILE.jsonl [--output=FILE]
      [--adapter=DIR]

PATH is a native HyperT5 checkpoint or a HuggingFace T5 directory. Each input
line is {"inputs": ..., "targets": ...}; each is a string (tokenized with the
checkpoint's vocabulary, EOS appended, as SeqIO does) or a list of token ids
(used exactly as given). Each output line is
{"log_likelihood": float, "num_target_tokens": int}, in input order. With
--adapter, the frozen model runs with PEFT parameters from an adapter directory
(HyperT5's own format or HuggingFace PEFT's).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Iterable

from absl import app, flags

from hypert5 import cli
from hypert5.errors import CheckpointError, DataError



def define_flags() -> None:
  flags.DEFINE_string("checkpoint", None, "Native or HuggingFace T5 checkpoint.", required=True)
  flags.DEFINE_string("data", None, "jsonl file of {inputs, targets}.", required=True)
  flags.DEFINE_string("output", None, "Output jsonl (default: stdout).")
  flags.DEFINE_string("adapter", None, "PEFT adapter directory (native or HuggingFace PEFT).")
  flags.DEFINE_string("vocab", None, "SentencePiece model (default: the checkpoint's own).")
  flags.DEFINE_integer("batch_size", 16, "Examples per forward pass.")


FLAGS = flags.FLAGS


def read_examples(path: str, vocab, vocab_size: int, eos_id: int) -> list[tuple[list, list]]:
  """jsonl -> [(input ids, target ids)], with file:line errors."""
  return [tuple(_to_ids(record[key], f"{where}: {key!r}", vocab, vocab_size, eos_id)
                for key in ("inputs", "targets"))
          for where, record in cli.read_jsonl(path, ("inputs", "targets"), DataError)]


def _to_ids(value, where: str, vocab, vocab_size: int, eos_id: int) -> list[int]:
  if isinstance(value, str):
    if vocab is None:
      raise DataError(f"{where} is text but the checkpoint has no SentencePiece vocabulary "
                      "(pass --vocab, or give token ids)")
    return vocab.encode(value) + [eos_id]
  if isinstance(value, list) and all(isinstance(i, int) and not isinstance(i, bool)
                                     for i in value):
    bad = [i for i in value if not 0 <= i < vocab_size]
    if bad:
      raise DataError(f"{where}: token id {bad[0]} is outside the vocabulary [0, {vocab_size})")
    return list(value)
  raise DataError(f"{where} must be a string or a list of integer token ids")


def score_examples(model, params, examples: list[tuple[list, list]], batch_size: int,
                   phi=None) -> Iterable[dict]:
  """Yields {"log_likelihood", "num_target_tokens"} per example, in order."""
  from hypert5 import api  # pylint: disable=import-outside-toplevel
  scores = api.log_likelihoods(model, params, examples, batch_size, phi)
  for (_, targets), score in zip(examples, scores):
    yield {"log_likelihood": float(score), "num_target_tokens": len(targets)}


def main(argv):
  del argv
  from hypert5 import adapters, checkpoints, t5
  from hypert5.vocab import Vocabulary
  try:
    cfg, params, vocab_path = checkpoints.load_model(FLAGS.checkpoint)
    vocab_path = FLAGS.vocab or vocab_path
    vocab = Vocabulary(vocab_path) if vocab_path else None
    examples = read_examples(FLAGS.data, vocab, cfg.vocab_size, cfg.eos_token_id)
    peft_config, phi = None, None
    if FLAGS.adapter:
      peft_config, phi = adapters.load_adapter(FLAGS.adapter, cfg)
    model = t5.T5(cfg, peft_config)
    lines = [json.dumps(r) + "\n" for r in
             score_examples(model, params, examples, FLAGS.batch_size, phi)]
    if FLAGS.output:  # all or nothing: no partial file after a failure
      with open(FLAGS.output + ".partial", "w") as f:
        f.writelines(lines)
      os.replace(FLAGS.output + ".partial", FLAGS.output)
    else:
      sys.stdout.writelines(lines)
  except (DataError, CheckpointError, adapters.AdapterError, FileNotFoundError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)


if __name__ == "__main__":
  define_flags()
  app.run(main)
