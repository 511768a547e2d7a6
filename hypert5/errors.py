"""The errors HyperT5 raises for bad input, in one place.

Each message names what is wrong and where (file and line, key, parameter, or
setting); the command-line tools print it as one line and exit with status 1
(hypert5/cli.py). Every class derives from `HyperT5Error`, so a caller can catch
them together, and from the built-in exception it refines (ValueError,
FileNotFoundError), so `except ValueError` still catches a bad value.
"""

from __future__ import annotations


class HyperT5Error(Exception):
  """Base of the errors below."""


class ConfigError(HyperT5Error, ValueError):
  """A configuration asks for what its experiment cannot do (for example phi from
  an experiment that has no hypermodel)."""


class CheckpointError(HyperT5Error, ValueError):
  """A checkpoint that is missing, or cannot be read as the model it claims to be."""


class DamagedCheckpoint(CheckpointError):
  """A step folder whose files are incomplete (damaged outside Orbax's atomic save)."""


class AdapterError(HyperT5Error, ValueError):
  """An adapter that is malformed or does not fit the model; says which part."""


class DataError(HyperT5Error, ValueError):
  """Input data that cannot be read as what it should be: a malformed line of a file
  (the message names the file and line), an empty task, a broken data file."""


class MissingDataError(HyperT5Error, FileNotFoundError):
  """A file or folder the input needs is missing; the message says what to get or pass."""


class ExamplesError(DataError):
  """A malformed few-shot examples file; the message names the file and line."""


class EvalError(HyperT5Error, ValueError):
  """Bad evaluation input: unknown mixture, empty split, mismatched checkpoint."""


class MeshError(HyperT5Error, ValueError):
  """A mesh shape that does not fit the devices, or parameters that do not divide over it."""


class TrainingDiverged(HyperT5Error, RuntimeError):
  """The loss became NaN or Inf."""


class Preempted(Exception):
  """SIGTERM arrived and the current step is saved: not an error, not a finished run.
  Commands exit with cli.EXIT_PREEMPTED (75) so that job scripts and schedulers can
  tell it from completion and start the same command again, which resumes."""


class BenchError(HyperT5Error, ValueError):
  """A benchmark (hypert5.bench, hypert5.input_bench) asked for what it cannot measure
  here: an unknown preset, mixture or pipeline, a mesh beyond the devices."""
