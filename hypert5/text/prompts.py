"""How few-shot examples and task definitions are written for the hypermodel.

One place for the text formats (paper section 5.1), shared by the SeqIO tasks
(hypert5_tasks) and `hypert5.adapt`, without TensorFlow:
  a few-shot example    "Input: {x} Output: {y}"
  a task definition     "Definition: {text}"
  S-NI positive example "Positive Example {i}: Input: {x} Output: {y}"
Segments are joined by one space. To fit the hypermodel's input, trailing
segments are dropped whole (never cut in half); only a first segment that is
too long by itself is cut.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

PAIR_INPUT = "Input: "
PAIR_OUTPUT = " Output: "
SEGMENT_SEPARATOR = " "
DEFINITION = "Definition: "


def format_pair(x: str, y: str) -> str:
  return f"{PAIR_INPUT}{x}{PAIR_OUTPUT}{y}"


def format_query(x: str) -> str:
  """The query as the concatenated baseline shows it after its context: "Input: x Output:"."""
  return f"{PAIR_INPUT}{x}{PAIR_OUTPUT.rstrip()}"


def format_definition(text: str) -> str:
  return f"{DEFINITION}{text}"


def format_positive_example(index: int, x: str, y: str) -> str:
  """S-NI's Def+2Pos setting: index counts from 1."""
  return f"Positive Example {index}: {format_pair(x, y)}"


def fit_segments(segments: Sequence[str], encode: Callable[[str], list[int]], length: int,
                 eos_id: int) -> tuple[list[int], int]:
  """Token ids of the longest run of leading segments that fits `length` with EOS.

  Returns (ids ending in EOS, number of segments kept).
  """
  if not segments:
    raise ValueError("no segments to encode")
  kept = 0
  ids = encode(segments[0])
  if len(ids) + 1 > length:  # a first segment too long alone is cut
    return ids[:length - 1] + [eos_id], 1
  kept = 1
  for count in range(2, len(segments) + 1):
    candidate = encode(SEGMENT_SEPARATOR.join(segments[:count]))
    if len(candidate) + 1 > length:
      break
    ids, kept = candidate, count
  return ids + [eos_id], kept
