"""Rule families of the embedded few-shot benchmark, and the word pools they draw from.

A task of the benchmark is a binary rule over a line of verse (this module)
plus a verbalizer: two label words standing for the two classes (see
embedded_fewshot.py). The families are simple surface rules, from the
easiest to infer from 16 examples to harder ones:

  constant          every line is class 0: the task always answers the same one of
                    its two options (which one, only the examples tell)
  keyword(a, b)     the line contains the word a (class 0) or the word b (class 1)
  starts_with(w)    the line starts with the word w, or with another word
  question          the line ends with "?", or with "."
  exclamation       the line ends with "!", or with "."
  length(n)         the line has at most n words, or at least n + 3
  comma             the line contains a comma, or none of , ; :
  speaker           the line is prefixed by its speaker ("Ham: ..."), or not

Words are matched whole and case-insensitively ("Love" is love, "loves" is not).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence

from hypert5_tasks import embedded_corpus

FAMILIES = ("constant", "keyword", "starts_with", "question", "exclamation", "length", "comma",
            "speaker")
LENGTH_THRESHOLDS = (5, 6)
LENGTH_GAP = 3
MIN_WORDS, MAX_WORDS = 4, 10  # lines outside this range are never used

# Label words: common, concrete English words. Lines containing any of them are
# never used as inputs, so a label word appears in an input only as an option.
LABEL_WORDS = tuple("""
apple arrow axe bell bird boat bone book bread bridge candle castle chain cloud coat
coin corn crow cup deer dog door dove drum eagle egg field fish flower fox garden gate
glass gold grass hawk hill horse iron island key lamb lamp leaf lily lion milk moon mouse
needle nest oak owl pearl pen pig pine plum rain ring river rock rope rose salt sand seed
sheep ship shoe silk silver snow star stone storm straw sugar swan table tiger tower tree
wall wax wheel wind window wine wolf wood wool black blue green red white brown
""".split())

# Keywords of the keyword family: frequent words of the corpus, none a label word.
KEYWORDS = tuple("""
love lord king heart death life night father hand eyes blood god heaven name son honour
world grace soul queen head word wife tongue daughter face house friend mind nature power
earth mother sword prince fortune hope shame truth tears faith war sea crown fire light
spirit sleep sun land grief body child law breath
""".split())

# First words of the starts_with family (compared after stripping punctuation).
START_WORDS = tuple("""
And I The To That But What For If O My As A In You He Why Of How Which No So Thou When
With By Or This Now Come Is Who Then We It Let Your Good Well
""".split())

_LABEL_SET = frozenset(LABEL_WORDS)
_WORD = re.compile(r"[a-z]+(?:'[a-z]+)*")


def words_of(text: str) -> frozenset[str]:
  """Lower-cased whole words of a line."""
  return frozenset(_WORD.findall(text.lower()))


def first_word(text: str) -> str:
  return re.sub(r"[^\w']", "", text.split()[0]) if text.split() else ""


@dataclasses.dataclass(frozen=True)
class Rule:
  """A family with its parameters; `classes` tells which classes a line can serve."""
  family: str
  params: tuple = ()

  def __post_init__(self):
    if self.family not in FAMILIES:
      raise ValueError(f"unknown rule family {self.family!r}")

  def classes(self, line: embedded_corpus.VerseLine) -> tuple[int, ...]:
    """The classes `line` can be an example of: (), (0,), (1,) or (0, 1)."""
    text = line.text
    if self.family == "keyword":
      a, b = self.params
      words = words_of(text)
      if (a in words) == (b in words):
        return ()
      return (0,) if a in words else (1,)
    if self.family == "starts_with":
      return (0,) if first_word(text) == self.params[0] else (1,)
    if self.family in ("question", "exclamation"):
      mark = "?" if self.family == "question" else "!"
      return (0,) if text.endswith(mark) else (1,) if text.endswith(".") else ()
    if self.family == "length":
      (n,) = self.params
      count = len(text.split())
      return (0,) if count <= n else (1,) if count >= n + LENGTH_GAP else ()
    if self.family == "comma":
      if "," in text:
        return (0,)
      return () if ";" in text or ":" in text else (1,)
    if self.family == "constant":
      return (0,)
    # speaker: any line with a speaker can be shown with or without it.
    return (0, 1) if line.speaker else ()

  def render(self, line: embedded_corpus.VerseLine, label: int) -> str:
    """The line as the task shows it for class `label`."""
    if self.family == "speaker" and label == 0:
      return f"{line.speaker}: {line.text}"
    return line.text


def usable(line: embedded_corpus.VerseLine, words: frozenset[str] | None = None) -> bool:
  """Lines the benchmark may use: 4-10 words, and no label word anywhere (the
  speaker's name included, which the speaker family shows).

  words: `words_of(line.text)` when the caller already has it.
  """
  if not MIN_WORDS <= len(line.text.split()) <= MAX_WORDS:
    return False
  words = words if words is not None else words_of(line.text)
  return not (words | words_of(line.speaker or "")) & _LABEL_SET


def check_pools() -> None:
  """The pools must not overlap: a keyword that is also a label word would leak."""
  overlap = (_LABEL_SET & set(KEYWORDS)) | (_LABEL_SET & {w.lower() for w in START_WORDS})
  if overlap:
    raise ValueError(f"label words also used as rule words: {sorted(overlap)}")


def rule_words(rule: Rule) -> Sequence[str]:
  """The words a rule is parameterized by (keywords, start word), for leakage checks."""
  if rule.family in ("keyword", "starts_with"):
    return tuple(rule.params)
  return ()
