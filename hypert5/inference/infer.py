"""The one inference path: phi, scores and greedy answers over fixed-shape batches.

The Python API, `hypert5.eval`, `hypert5.score` and `hypert5.adapt` run the
models through an `Inference` and nothing else: rows are cut as SeqIO trims
them, padded to the run's lengths and to `batch_size` rows (the last batch with
empty rows whose results are dropped), so each program compiles once for a
model, a batch size and the lengths, and every caller gets the same numbers and
the same strings (one detokenizer: the vocabulary's, see text/vocab.py).

Parameters are arguments of every call, not state: the API loads the
downstream model only when it first scores or decodes.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from hypert5.model import decoding

Rows = Sequence[Sequence[int]]


def truncate(ids: Sequence[int], length: int, eos: int) -> list[int]:
  """ids (ending in EOS) cut to `length`, still ending in EOS, as SeqIO trims them."""
  ids = [int(i) for i in ids]
  if len(ids) > length:
    ids = ids[:length - 1] + [eos]
  return ids


def pad_rows(rows: Rows, length: int, num_rows: int, fill: Sequence[int] = ()
             ) -> tuple[np.ndarray, np.ndarray]:
  """Rows of ids -> ([num_rows, length] int32 ids, [num_rows, length] float32 weights),
  zero beyond each row; the rows added to reach `num_rows` hold `fill` (an encoder
  input of EOS alone, so no row is all padding)."""
  if len(rows) > num_rows:
    raise ValueError(f"{len(rows)} rows do not fit a batch of {num_rows}")
  rows = list(rows) + [list(fill)] * (num_rows - len(rows))
  ids = np.zeros((num_rows, length), np.int32)
  weights = np.zeros((num_rows, length), np.float32)
  for i, row in enumerate(rows):
    if len(row) > length:
      raise ValueError(f"row {i} has {len(row)} ids; the batch holds {length}")
    ids[i, :len(row)] = row
    weights[i, :len(row)] = 1.0
  return ids, weights


@functools.partial(jax.jit, static_argnames=("hyper",))
def generate_phi(hyper, hyper_params, hyper_ids: jax.Array):
  """[n, hyper_inputs_length] few-shot context ids -> phi with batch axis n."""
  return hyper.apply({"params": hyper_params}, hyper_ids)


def _chunks(items: Sequence, size: int):
  for start in range(0, len(items), size):
    yield start, items[start:start + size]


@dataclasses.dataclass(frozen=True)
class Inference:
  """A run's models with the shapes they run at.

  downstream: the T5 (model.t5.T5) that phi adapts; hyper: the hypermodel
  (model.hypermodel.HyperT5) or None; vocabulary: text.vocab.Vocabulary (None
  where rows come as ids); lengths: {"hyper_inputs", "inputs", "targets"} token
  lengths (the training data's); batch_size: rows per batch; max_decode_length:
  tokens decoded."""
  downstream: object
  hyper: object | None
  vocabulary: object | None
  lengths: dict
  batch_size: int
  max_decode_length: int

  @property
  def eos(self) -> int:
    return self.downstream.config.eos_token_id

  # -- Text to ids -------------------------------------------------------------

  def tokenize(self, text: str, feature: str) -> list[int]:
    """text -> ids with EOS, cut to the feature's length."""
    return truncate(self.vocabulary.encode(text) + [self.eos], self.lengths[feature], self.eos)

  def detokenize(self, tokens: Sequence[int]) -> str:
    """Decoded ids -> text: up to the first EOS, as the vocabulary spells them."""
    return self.vocabulary.decode([int(t) for t in tokens])

  # -- phi ----------------------------------------------------------------------

  def phi(self, hyper_params, contexts: Rows):
    """phi for few-shot contexts (ids): batch axis 1 for one context, else
    `batch_size` (rows beyond the contexts are padding)."""
    rows = [truncate(c, self.lengths["hyper_inputs"], self.eos) for c in contexts]
    num_rows = 1 if len(rows) == 1 else self.batch_size
    ids, _ = pad_rows(rows, self.lengths["hyper_inputs"], num_rows, fill=[self.eos])
    return generate_phi(self.hyper, hyper_params, jnp.asarray(ids))

  def _row_phi(self, hyper_params, phi, contexts: Rows | None):
    """The phi of one batch: shared, or one per row from the rows' own contexts."""
    return phi if contexts is None else self.phi(hyper_params, contexts)

  # -- The downstream model under phi -------------------------------------------

  def score(self, downstream_params, rows: Sequence[tuple[Sequence[int], Sequence[int]]],
            phi=None, *, hyper_params=None, contexts: Rows | None = None) -> np.ndarray:
    """[n] summed log-likelihood of each (input ids, target ids) row, in order.

    phi: batch axis 1, shared by every row (or None for a plain T5); or, with
    `contexts` (one per row) and `hyper_params`, each row's own phi."""
    out = np.zeros((len(rows),), np.float64)
    for start, chunk in _chunks(rows, self.batch_size):
      inputs, _ = pad_rows([truncate(x, self.lengths["inputs"], self.eos) for x, _ in chunk],
                           self.lengths["inputs"], self.batch_size, fill=[self.eos])
      targets, weights = pad_rows([truncate(y, self.lengths["targets"], self.eos)
                                   for _, y in chunk], self.lengths["targets"], self.batch_size)
      row_phi = self._row_phi(hyper_params, phi, None if contexts is None
                              else contexts[start:start + len(chunk)])
      scores = decoding.log_likelihood(self.downstream, downstream_params, inputs,
                                       targets, weights, row_phi)
      out[start:start + len(chunk)] = np.asarray(scores)[:len(chunk)]
    return out

  def generate(self, downstream_params, inputs: Rows, phi=None, *, hyper_params=None,
               contexts: Rows | None = None) -> list[str]:
    """Greedy answers (text) for input ids, in order; phi as in `score`."""
    answers = []
    for start, chunk in _chunks(inputs, self.batch_size):
      ids, _ = pad_rows([truncate(x, self.lengths["inputs"], self.eos) for x in chunk],
                        self.lengths["inputs"], self.batch_size, fill=[self.eos])
      row_phi = self._row_phi(hyper_params, phi, None if contexts is None
                              else contexts[start:start + len(chunk)])
      tokens = np.asarray(decoding.generate(self.downstream, downstream_params, ids,
                                            max_length=self.max_decode_length, phi=row_phi))
      answers += [self.detokenize(row) for row in tokens[:len(chunk)]]
    return answers
