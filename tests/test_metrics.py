"""hypert5.metrics against the benchmarks' own definitions, on tricky cases."""

import math

import numpy as np
import pytest
from rouge_score import rouge_scorer
from sklearn.metrics import f1_score

from hypert5.text import metrics

# (references, prediction) pairs that exercise the rouge_score tokenizer.
ROUGE_CASES = [
    (["the cats are running"], "The cat runs."),  # stemming, casing, punctuation
    (["It costs 3.14 dollars"], "3 14 dollars"),  # numbers split at the dot
    (["nothing in common", "The cat runs"], "the cat running"),  # best reference
    (["yes"], ""),  # empty prediction
    ([""], "yes"),  # empty reference
    (["HELLO, World!"], "hello world"),
]
# The same, scored by hand: LCS-based F1 on stemmed lowercase alphanumeric tokens.
ROUGE_EXPECTED = [2 * 1 * 0.75 / 1.75, 2 * 1 * 0.6 / 1.6, 1.0, 0.0, 0.0, 1.0]


def test_rouge_l_exact_numbers():
  for (refs, pred), want in zip(ROUGE_CASES, ROUGE_EXPECTED):
    got = metrics.rouge_l([refs], [pred])["rouge_l"]
    assert got == pytest.approx(100 * want, abs=1e-9), (refs, pred)
  targets, predictions = zip(*ROUGE_CASES)
  mean = 100 * sum(ROUGE_EXPECTED) / len(ROUGE_EXPECTED)
  assert metrics.rouge_l(targets, predictions) == {"rouge_l": pytest.approx(mean, abs=1e-9)}


def test_rouge_l_equals_rouge_score_called_directly():
  scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
  per_example = []
  for refs, pred in ROUGE_CASES:
    best = max(scorer.score(ref, pred)["rougeL"].fmeasure for ref in refs)
    per_example.append(best)
    assert metrics.rouge_l([refs], [pred])["rouge_l"] == pytest.approx(100 * best, rel=1e-12)
  targets, predictions = zip(*ROUGE_CASES)
  want = 100 * sum(per_example) / len(per_example)
  assert metrics.rouge_l(targets, predictions)["rouge_l"] == pytest.approx(want, rel=1e-12)


def test_rouge_l_uses_the_porter_stemmer():
  assert metrics.rouge_l(["running"], ["runs"])["rouge_l"] == pytest.approx(100.0)
  unstemmed = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
  assert unstemmed.score("running", "runs")["rougeL"].fmeasure == 0.0


def test_rouge_l_target_may_be_a_plain_string():
  assert metrics.rouge_l(["a b c d"], ["a b"]) == metrics.rouge_l([["a b c d"]], ["a b"])
  assert metrics.rouge_l([b"a b c d"], [b"a b"]) == metrics.rouge_l(["a b c d"], ["a b"])


@pytest.mark.parametrize("refs, pred, match", [
    (["the answer"], "The Answer!", True),  # casing and punctuation
    (["dog"], "a dog", False),  # S-NI keeps articles, unlike SQuAD
    (["new york"], "  New   York. ", True),  # whitespace
    (["1000"], "1,000", True),  # punctuation inside numbers is dropped
    (["3 14"], "3.14", False),  # ... and not turned into a space
    (["."], "", True),  # empty prediction vs punctuation-only reference
    (["yes"], "", False),  # empty prediction
    ([""], "yes", False),  # empty reference
    (["no", "Yes."], "yes", True),  # any reference
])
def test_exact_match_follows_sni(refs, pred, match):
  assert metrics.exact_match([refs], [pred]) == {"exact_match": 100.0 * match}


def test_exact_match_averages_over_examples():
  got = metrics.exact_match(["a", ["b", "c"], "d"], ["A", "c", "e"])
  assert got["exact_match"] == pytest.approx(200 / 3, abs=1e-9)


@pytest.mark.parametrize("refs, pred, correct", [
    (["yes"], " yes\n", True),  # only surrounding whitespace is ignored
    (["yes"], "Yes", False),  # case matters
    (["yes"], "yes.", False),  # punctuation matters
    (["no", "yes "], "yes", True),  # any reference, stripped too
    ([""], "", True),
])
def test_accuracy_follows_metaicl(refs, pred, correct):
  assert metrics.accuracy([refs], [pred]) == {"accuracy": 100.0 * correct}


def _metaicl_macro_f1(golds, preds):
  """MetaICL's rule, transcribed from its description as counts, x100."""
  golds = [g.strip() for g in golds]
  preds = [p.strip() for p in preds]
  f1s = []
  for label in dict.fromkeys(golds):  # gold classes only
    true_positives = sum(g == label and p == label for g, p in zip(golds, preds))
    recall = true_positives / golds.count(label)
    n_predicted = preds.count(label)
    precision = true_positives / n_predicted if n_predicted else 1.0
    total = precision + recall
    f1s.append(0.0 if total == 0 else 2 * precision * recall / total)
  return 100 * sum(f1s) / len(f1s)


def test_macro_f1_exact_number_with_a_class_never_predicted():
  golds = ["pos", "pos", "neg", "neg", "neutral"]
  preds = ["pos", " neg", "neg\n", "neg", "pos"]
  # pos: P=1/2 R=1/2 F=1/2; neg: P=2/3 R=1 F=4/5; neutral: never predicted,
  # P=1 R=0 F=0.
  want = 100 * (0.5 + 0.8 + 0.0) / 3
  assert metrics.macro_f1(golds, preds)["macro_f1"] == pytest.approx(want, abs=1e-9)
  assert _metaicl_macro_f1(golds, preds) == pytest.approx(want, abs=1e-9)


def test_macro_f1_ignores_predicted_strings_that_are_not_gold_classes():
  golds = ["a", "a", "b", "b"]
  preds = ["a", "maybe", "b", "b"]
  got = metrics.macro_f1(golds, preds)["macro_f1"]
  assert got == pytest.approx(100 * (2 / 3 + 1) / 2, abs=1e-9)
  # scikit-learn agrees once told the classes are the gold labels; its default
  # (the union with predicted labels) averages in a 0 for "maybe".
  assert 100 * f1_score(golds, preds, labels=["a", "b"], average="macro") == pytest.approx(got)
  assert 100 * f1_score(golds, preds, average="macro") == pytest.approx(100 * (2 / 3 + 1) / 3)


def test_macro_f1_matches_the_transcription_on_random_labels():
  rng = np.random.default_rng(0)
  for _ in range(50):
    n = int(rng.integers(1, 12))
    golds = list(rng.choice(["a", "b", "c", "d"], size=n))
    preds = list(rng.choice(["a", "b", "c", "e"], size=n))
    got = metrics.macro_f1(golds, preds)["macro_f1"]
    assert got == pytest.approx(_metaicl_macro_f1(golds, preds), rel=1e-12, abs=1e-12)


def test_macro_f1_perfect_and_single_reference_lists():
  assert metrics.macro_f1([["x"], ["y"]], ["x", "y"]) == {"macro_f1": 100.0}
  with pytest.raises(ValueError, match="one gold label"):
    metrics.macro_f1([["x", "y"]], ["x"])


def test_rank_classification_accuracy():
  labels = [0, 2, 1, 1]
  scores = [
      [-1.0, -2.0],
      [-3.0, -1.0, -0.5],
      [-math.inf, -math.inf],  # a tie goes to the first choice: wrong here
      [-7.5, -2.5, -3.0, -9.0],
  ]
  got = metrics.rank_classification_accuracy(labels, scores)
  assert got == {"accuracy": pytest.approx(75.0)}


def test_rank_classification_takes_summed_not_mean_log_likelihoods():
  # A 3-token answer at -1 per token loses to a 1-token answer at -2.5.
  long_answer, short_answer = [-1.0, -1.0, -1.0], [-2.5]
  scores = [[sum(long_answer), sum(short_answer)]]
  assert metrics.rank_classification_accuracy([1], scores)["accuracy"] == 100.0


@pytest.mark.parametrize("labels, scores, match", [
    ([0], [[float("nan"), 0.0]], "NaN"),
    ([2], [[0.0, 1.0]], "not one of 2 choices"),
    ([0], [[]], "non-empty"),
    ([0, 1], [[0.0, 1.0]], "2 targets but 1 predictions"),
    ([], [], "no examples"),
])
def test_rank_classification_bad_input(labels, scores, match):
  with pytest.raises(ValueError, match=match):
    metrics.rank_classification_accuracy(labels, scores)


@pytest.mark.parametrize("fn", [metrics.rouge_l, metrics.exact_match,
                                metrics.accuracy, metrics.macro_f1])
def test_bad_input(fn):
  with pytest.raises(ValueError, match="no examples"):
    fn([], [])
  with pytest.raises(ValueError, match="2 targets but 1 predictions"):
    fn(["a", "b"], ["a"])
  with pytest.raises(ValueError, match="empty list of references"):
    fn([[]], ["a"])
  with pytest.raises(TypeError, match="expected a string"):
    fn(["a"], [None])
