"""SentencePiece vocabularies without TensorFlow (SeqIO's need it; scoring and
adaptation should not)."""

from __future__ import annotations

import os

import sentencepiece as spm

from hypert5.errors import MissingDataError

# File names under which checkpoints carry their vocabulary.
VOCAB_FILE_NAMES = ("spiece.model", "sentencepiece.model", "vocab.model")


class Vocabulary:
  """Text <-> token ids with T5's conventions (pad 0, EOS 1, no BOS)."""

  def __init__(self, path: str, model_proto: bytes | None = None):
    """path: a SentencePiece model file; or, with `model_proto` (its bytes), a name
    for it."""
    self.path = path
    if model_proto is not None:
      self._sp = spm.SentencePieceProcessor(model_proto=model_proto)
      return
    if not os.path.isfile(path):
      raise MissingDataError(f"{path}: SentencePiece model not found")
    self._sp = spm.SentencePieceProcessor(model_file=path)

  @property
  def vocab_size(self) -> int:
    return self._sp.get_piece_size()

  @property
  def eos_id(self) -> int:
    return self._sp.eos_id()

  @property
  def pad_id(self) -> int:
    return max(self._sp.pad_id(), 0)

  def encode(self, text: str) -> list[int]:
    return self._sp.encode(text)

  @property
  def unk_id(self) -> int:
    return self._sp.unk_id()

  def decode(self, ids) -> str:
    """Text up to the first EOS, padding left out, as SeqIO decodes: ids past the
    model's pieces (past a small vocabulary, or T5's extra ids where the model file
    lacks them) are the unknown piece, written " ⁇ ", so an answer shows that the
    model produced them."""
    ids = [int(i) for i in ids]
    if self.eos_id in ids:
      ids = ids[:ids.index(self.eos_id)]
    return self._sp.decode([i if i < self.vocab_size else self.unk_id for i in ids
                            if i != self.pad_id])


def as_vocabulary(vocabulary) -> Vocabulary:
  """Our Vocabulary for a SeqIO SentencePieceVocabulary (its model with the extra ids
  SeqIO adds, which is what a run saves as spiece.model), so that every answer is
  decoded by one function; a Vocabulary is returned as it is."""
  if isinstance(vocabulary, Vocabulary):
    return vocabulary
  proto = getattr(vocabulary, "sp_model", None)
  if proto is None:
    raise TypeError(f"{vocabulary!r}: not a SentencePiece vocabulary")
  return Vocabulary(getattr(vocabulary, "sentencepiece_model_file", "<seqio vocabulary>"),
                    model_proto=proto)


def find_vocabulary(directory: str) -> str | None:
  """The SentencePiece model stored beside a checkpoint, if any."""
  for name in VOCAB_FILE_NAMES:
    path = os.path.join(directory, name)
    if os.path.isfile(path):
      return path
  return None
