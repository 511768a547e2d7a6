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

import math
import os
import sys
from collections.abc import Iterable

from absl import flags

from hypert5 import cli, files
from hypert5.errors import DataError
from hypert5.formats import adapters, checkpoints
from hypert5.inference import infer
from hypert5.model import t5
from hypert5.text.vocab import Vocabulary

FLAGS = flags.FLAGS


def define_flags() -> None:
  flags.DEFINE_string("checkpoint", None, "Native or HuggingFace T5 checkpoint.", required=True)
  flags.DEFINE_string("data", None, "jsonl file of {inputs, targets}.", required=True)
  flags.DEFINE_string("output", None, "Output jsonl (default: stdout).")
  flags.DEFINE_string("adapter", None, "PEFT adapter directory (native or HuggingFace PEFT).")
  flags.DEFINE_string("vocab", None, "SentencePiece model (default: the checkpoint's own).")
  flags.DEFINE_integer("batch_size", 16, "Examples per forward pass.")


def read_examples(path: str, vocab, vocab_size: int, eos_id: int) -> list[tuple[list, list]]:
  """jsonl -> [(input ids, target ids)], with file:line errors. An empty file, or an
  empty list of ids (a target of no tokens would score 0.0), is an error."""
  examples = []
  for where, record in files.read_jsonl(path, ("inputs", "targets"), DataError):
    pair = tuple(_to_ids(record[key], f"{where}: {key!r}", vocab, vocab_size, eos_id)
                 for key in ("inputs", "targets"))
    for key, ids in zip(("inputs", "targets"), pair):
      if not ids:
        raise DataError(f"{where}: {key!r} is empty; give text or at least one token id")
    examples.append(pair)
  if not examples:
    raise DataError(f"{path}: no examples (expected lines of "
                    '{"inputs": ..., "targets": ...})')
  return examples


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
  """Yields {"log_likelihood", "num_target_tokens"} per example, in order.

  Every batch has the file's longest input and target (ids are used as given, not
  cut), so one shape compiles for the whole file."""
  longest = lambda k: -(-max(len(e[k]) for e in examples) // 8) * 8
  inference = infer.Inference(model, None, None, {"inputs": longest(0), "targets": longest(1)},
                              batch_size=batch_size, max_decode_length=1)
  scores = inference.score(params, examples, phi)
  for (_, targets), score in zip(examples, scores):
    yield {"log_likelihood": float(score), "num_target_tokens": len(targets)}


def main(argv) -> None:
  del argv
  if FLAGS.batch_size < 1:
    raise DataError(f"--batch_size={FLAGS.batch_size}: must be at least 1")
  if FLAGS.output:  # said before the work: results that cannot be written are lost
    files.check_writable_dir(os.path.dirname(os.path.abspath(FLAGS.output)), DataError,
                             "--output")
  cfg, params, vocab_path = checkpoints.load_model(FLAGS.checkpoint)
  vocab_path = FLAGS.vocab or vocab_path
  vocab = Vocabulary(vocab_path) if vocab_path else None
  examples = read_examples(FLAGS.data, vocab, cfg.vocab_size, cfg.eos_token_id)
  peft_config, phi = None, None
  if FLAGS.adapter:
    peft_config, phi = adapters.load_adapter(FLAGS.adapter, cfg)
  scores = list(score_examples(t5.T5(cfg, peft_config), params, examples, FLAGS.batch_size, phi))
  for number, score in enumerate(scores, start=1):
    if not math.isfinite(score["log_likelihood"]):
      source = f"{FLAGS.checkpoint}" + (f" with adapter {FLAGS.adapter}" if FLAGS.adapter else "")
      raise DataError(f"{FLAGS.data}: example {number} scores {score['log_likelihood']} under "
                      f"{source}: the model's numbers are broken; nothing was written")
  if FLAGS.output:  # all or nothing: no partial file after a failure
    files.write_jsonl_atomic(FLAGS.output, scores, DataError)
  else:
    sys.stdout.writelines(files.to_json(r, DataError) + "\n" for r in scores)


if __name__ == "__main__":
  cli.run(main, define_flags)
