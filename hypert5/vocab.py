"""SentencePiece vocabularies without TensorFlow (SeqIO's need it; scoring and
adaptation should not)."""

from __future__ import annotations

import os

import sentencepiece as spm

# File names under which checkpoints carry their vocabulary.
VOCAB_FILE_NAMES = ("spiece.model", "sentencepiece.model", "vocab.model")


class Vocabulary:
  """Text <-> token ids with T5's conventions (pad 0, EOS 1, no BOS)."""

  def __init__(self, path: str):
    if not os.path.isfile(path):
      raise FileNotFoundError(f"{path}: SentencePiece model not found")
    self.path = path
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

  def decode(self, ids) -> str:
    """Stops at the first EOS; ids beyond the SentencePiece model (T5's extra ids) are dropped."""
    ids = [int(i) for i in ids]
    if self.eos_id in ids:
      ids = ids[:ids.index(self.eos_id)]
    return self._sp.decode([i for i in ids if 0 < i < self.vocab_size])


def find_vocabulary(directory: str) -> str | None:
  """The SentencePiece model stored beside a checkpoint, if any."""
  for name in VOCAB_FILE_NAMES:
    path = os.path.join(directory, name)
    if os.path.isfile(path):
      return path
  return None
