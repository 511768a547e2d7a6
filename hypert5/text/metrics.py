"""Benchmark metrics as SeqIO-style functions: fn(targets, predictions) -> {name: 0-100}.

Each benchmark is scored the way its own evaluation code scores it, so numbers
are comparable with the paper's tables (the tasks declare which, as their
SeqIO `metric_fns`; see tasks/scoring.py):

  S-NI     `rouge_l` (the headline number) and `exact_match`, as the official
           natural-instructions `eval/automatic/evaluation.py` (default English
           track) computes them.
  MetaICL  `macro_f1` for classification tasks and `accuracy` for the others,
           as `MetaICLData.evaluate` in MetaICL computes them.
  P3       `rank_classification_accuracy` over per-choice log-likelihoods
           (T0's held-out evaluation).

A target is one reference string or a list of them; a prediction is a string
(bytes, as SeqIO sometimes yields, are decoded as UTF-8). Metrics that take the
maximum over references do so per example, then average over examples.
Values are not rounded (the S-NI script rounds to 4 decimals for display).
"""

from __future__ import annotations

import functools
import string
from collections.abc import Sequence

import numpy as np
from rouge_score import rouge_scorer
from sklearn.metrics import f1_score

Target = str | bytes | Sequence[str | bytes]

# ---------------------------------------------------------------------------
# Inputs.


def _text(value) -> str:
  if isinstance(value, bytes):
    return value.decode("utf-8")
  if isinstance(value, str):
    return value
  raise TypeError(f"expected a string, got {type(value).__name__}: {value!r}")


def _references(target: Target) -> list[str]:
  """One target as its list of reference strings (never empty)."""
  if isinstance(target, (str, bytes)):
    return [_text(target)]
  references = [_text(t) for t in target]
  if not references:
    raise ValueError("a target has an empty list of references")
  return references


def _check_lengths(targets, predictions) -> int:
  if len(targets) != len(predictions):
    raise ValueError(f"{len(targets)} targets but {len(predictions)} predictions")
  if not targets:
    raise ValueError("no examples to score")
  return len(targets)


# ---------------------------------------------------------------------------
# S-NI.

_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
  """S-NI's normalization for exact match: lowercase, drop ASCII punctuation,
  collapse whitespace. Unlike SQuAD's, it keeps articles ("a", "an", "the")."""
  text = text.lower()
  text = "".join(ch for ch in text if ch not in _PUNCTUATION)
  return " ".join(text.split())


@functools.cache
def _rouge_scorer():
  # Imported lazily: rouge_score pulls in nltk, which P3-only runs never need.
  # The default tokenizer (lowercase, split on non-[a-z0-9]) with the Porter
  # stemmer on tokens longer than 3 characters: the S-NI default track.
  return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)


def _rouge_l_f(reference: str, prediction: str) -> float:
  scores = _rouge_scorer().score(target=reference, prediction=prediction)
  return scores["rougeL"].fmeasure


def rouge_l(targets: Sequence[Target], predictions: Sequence[str]) -> dict:
  """ROUGE-L F-measure x100, best reference per example, mean over examples.

  The raw strings go to rouge_score (no `normalize_answer`): its own tokenizer
  lowercases and drops punctuation, as in the S-NI script. An empty prediction
  or reference scores 0. Non-English text tokenizes to nothing under this
  tokenizer; S-NI's cross-lingual track (GPT-2 tokens) is not reproduced here.
  """
  n = _check_lengths(targets, predictions)
  total = 0.0
  for target, prediction in zip(targets, predictions):
    prediction = _text(prediction)
    total += max(_rouge_l_f(ref, prediction) for ref in _references(target))
  return {"rouge_l": 100.0 * total / n}


def exact_match(targets: Sequence[Target], predictions: Sequence[str]) -> dict:
  """S-NI exact match x100: equal after `normalize_answer` to any reference.

  Note that an empty prediction matches a punctuation-only reference, as it
  does in the official script. For MetaICL's (unnormalized) rule use `accuracy`.
  """
  n = _check_lengths(targets, predictions)
  matches = 0
  for target, prediction in zip(targets, predictions):
    prediction = normalize_answer(_text(prediction))
    matches += any(normalize_answer(ref) == prediction
                   for ref in _references(target))
  return {"exact_match": 100.0 * matches / n}


# ---------------------------------------------------------------------------
# MetaICL.


def accuracy(targets: Sequence[Target], predictions: Sequence[str]) -> dict:
  """MetaICL's accuracy x100: the stripped prediction equals a stripped reference.

  Case and punctuation matter; only leading/trailing whitespace is ignored.
  """
  n = _check_lengths(targets, predictions)
  correct = 0
  for target, prediction in zip(targets, predictions):
    prediction = _text(prediction).strip()
    correct += prediction in [ref.strip() for ref in _references(target)]
  return {"accuracy": 100.0 * correct / n}


def _label(target: Target) -> str:
  references = _references(target)
  if len(references) != 1:
    raise ValueError(f"macro_f1 needs one gold label per example, got {references!r}")
  return references[0].strip()


def macro_f1(targets: Sequence[Target], predictions: Sequence[str]) -> dict:
  """MetaICL's Macro-F1 x100 for classification tasks (strings stripped).

  The classes are the gold labels only: a predicted string that is never a gold
  label lowers its examples' recall but gets no F1 of its own (scikit-learn's
  default would average in a 0 for it, hence `labels=`). A gold class never
  predicted has precision 1.0 (`zero_division`) and recall 0, so F1 0, as in
  MetaICL. Unweighted mean over the gold classes.
  """
  _check_lengths(targets, predictions)
  golds = [_label(t) for t in targets]
  stripped = [_text(p).strip() for p in predictions]
  score = f1_score(golds, stripped, labels=sorted(set(golds)), average="macro",
                   zero_division=1.0)
  return {"macro_f1": 100.0 * float(score)}


# ---------------------------------------------------------------------------
# P3.


def rank_classification_accuracy(targets: Sequence[int],
                                 scores: Sequence[Sequence[float]]) -> dict:
  """Rank classification x100: the highest-scoring choice is the correct one.

  A SeqIO score metric (its arguments are named so).
  targets: per example, the index of the correct choice (its label).
  scores: per example, one log-likelihood per answer choice (the sum over the
    answer's tokens, no length normalization); examples may have different
    numbers of choices. Ties go to the first choice (argmax), and -inf is a
    valid score; NaN is an error.
  """
  n = _check_lengths(targets, scores)
  correct = 0
  for i, (label, choice_scores) in enumerate(zip(targets, scores)):
    choice_scores = np.asarray(choice_scores, dtype=np.float64)
    if choice_scores.ndim != 1 or choice_scores.size == 0:
      raise ValueError(f"example {i}: expected a non-empty list of choice scores, "
                       f"got shape {choice_scores.shape}")
    if np.isnan(choice_scores).any():
      raise ValueError(f"example {i}: NaN in choice scores {choice_scores.tolist()}")
    if not 0 <= int(label) < choice_scores.size:
      raise ValueError(f"example {i}: label {label} is not one of "
                       f"{choice_scores.size} choices")
    correct += int(np.argmax(choice_scores)) == int(label)
  return {"accuracy": 100.0 * correct / n}
