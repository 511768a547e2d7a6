"""Vocabularies: T5's public SentencePiece model for the real benchmarks, and an
embedded one, trained on the embedded corpus, for the tasks that need nothing.

Both follow T5's conventions: pad=0, eos=1, unk=2, no bos, and 100 sentinel ids
(<extra_id_0> is the highest id) appended by seqio; CACLM uses <extra_id_0> as
its separator.

HYPERT5_VOCAB names the real benchmarks' model (default: T5's 32k vocabulary,
gs://t5-data/vocabs/cc_all.32000/sentencepiece.model, readable with GCS access;
point it at a local copy otherwise). seqio opens the file on first use, so
registering tasks never touches GCS.

The embedded model (`data/embedded_spm.model`, 2,000 pieces) is a unigram
model trained on every line of the embedded corpus plus 300 lines listing the
format words (Input, Output, Options) and the benchmark's label words, which
makes every label word a single piece (so an option copied from the input is
exactly the target). Training is deterministic (one thread, fixed seed, no
sampling of sentences): the same bytes on every run. Rebuild it with
    python -m hypert5_tasks.vocab --output tasks/data/embedded_spm.model
"""

from __future__ import annotations

import argparse
import functools
import io
import os
import pathlib

import sentencepiece as spm
import seqio

from hypert5.errors import MissingDataError
from hypert5_tasks import embedded_corpus, embedded_rules, forms, locations

DEFAULT_VOCAB_PATH = "gs://t5-data/vocabs/cc_all.32000/sentencepiece.model"
EXTRA_IDS = 100
EMBEDDED_VOCAB_PATH = pathlib.Path(__file__).parent / "data" / "embedded_spm.model"
EMBEDDED_VOCAB_SIZE = 2000
_TRAINING_SEED = 20221201
# Lines listing the format and label words added to the ~150k corpus lines:
# enough for the unigram model to keep every label word whole.
_WORD_REPEATS = 300


def vocab_path() -> str:
  """The real benchmarks' SentencePiece model: $HYPERT5_VOCAB or T5's public one."""
  return os.environ.get(locations.ENV_VOCAB) or DEFAULT_VOCAB_PATH


class _Vocabulary(seqio.SentencePieceVocabulary):
  """SeqIO's, with one clear error when its file cannot be read (offline, T5's
  default gs:// path otherwise ends in a libcurl failure deep in TensorFlow)."""

  def _model_context(self):
    try:
      return super()._model_context()
    except Exception as e:  # noqa: BLE001  (TensorFlow's file errors, whatever their class)
      if self._model:  # loaded; the error is another one
        raise
      raise MissingDataError(
          f"cannot read the SentencePiece vocabulary {self.sentencepiece_model_file} "
          f"({type(e).__name__}: {str(e).splitlines()[0][:120]}). Download T5's "
          f"({DEFAULT_VOCAB_PATH}) where you have access and point {locations.ENV_VOCAB} at "
          "the local copy") from None


@functools.cache
def _vocabulary(path: str) -> seqio.SentencePieceVocabulary:
  return _Vocabulary(path, extra_ids=EXTRA_IDS)


def default_vocabulary() -> seqio.SentencePieceVocabulary:
  """Vocabulary of P3, MetaICL, S-NI and C4 tasks (lazy: nothing is read here)."""
  return _vocabulary(vocab_path())


def embedded_vocabulary() -> seqio.SentencePieceVocabulary:
  """Vocabulary of the embedded tasks (package data)."""
  return _vocabulary(str(EMBEDDED_VOCAB_PATH))


def first_sentinel_id(vocabulary: seqio.Vocabulary) -> int:
  """Id of <extra_id_0> (seqio numbers sentinels down from the top)."""
  return vocabulary.vocab_size - 1


def _training_lines() -> list[str]:
  lines = []
  for work in embedded_corpus.work_names():
    lines.extend(embedded_corpus.text_lines(work))
  words = list(forms.FORMAT_WORDS) + list(embedded_rules.LABEL_WORDS)
  lines.extend(" ".join(words) for _ in range(_WORD_REPEATS))
  return lines


def train_embedded_model(vocab_size: int = EMBEDDED_VOCAB_SIZE) -> bytes:
  """Trains the embedded SentencePiece model; the same bytes on every run."""
  spm.set_random_generator_seed(_TRAINING_SEED)
  model = io.BytesIO()
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(_training_lines()), model_writer=model,
      vocab_size=vocab_size, model_type="unigram", character_coverage=1.0,
      pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
      num_threads=1, input_sentence_size=0, shuffle_input_sentence=False, minloglevel=2)
  return model.getvalue()


def main(argv=None):
  parser = argparse.ArgumentParser(description="Rebuild the embedded SentencePiece model.")
  parser.add_argument("--output", default=str(EMBEDDED_VOCAB_PATH))
  parser.add_argument("--vocab_size", type=int, default=EMBEDDED_VOCAB_SIZE)
  args = parser.parse_args(argv)
  model = train_embedded_model(args.vocab_size)
  pathlib.Path(args.output).write_bytes(model)
  print(f"wrote {args.output} ({len(model)} bytes, {args.vocab_size} pieces)")


if __name__ == "__main__":
  main()
