"""Reading users' jsonl files and writing results whole: what every reader and
writer of the library shares.

Readers name the file and line of what they cannot take; writers write to a
temporary file beside the target and rename it, so a crash leaves the old file
or the new one, never half of one, and refuse NaN and infinities (which JSON
cannot carry).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterable, Iterator
from typing import Any


def read_jsonl(path: str, keys: tuple[str, ...], error: type[Exception] = ValueError
               ) -> Iterator[tuple[str, dict]]:
  """(file:line, object) for each non-blank line of a jsonl input file; a line that
  is not a UTF-8 JSON object with `keys` raises `error` naming the file and line."""
  try:
    handle = open(path, "rb")
  except OSError as e:
    raise error(f"{path}: cannot read ({e.strerror})") from e
  with handle:
    for number, raw in enumerate(handle, start=1):
      where = f"{path}:{number}"
      try:
        line = raw.decode("utf-8")
      except UnicodeDecodeError as e:
        raise error(f"{where}: not UTF-8 text (byte {e.start + 1} of the line)") from None
      if not line.strip():
        continue
      try:
        record = json.loads(line)
      except json.JSONDecodeError as e:
        raise error(f"{where}: invalid JSON ({e.msg})") from None
      if not isinstance(record, dict):
        raise error(f"{where}: expected an object with " + " and ".join(map(repr, keys)))
      for key in keys:
        if key not in record:
          raise error(f"{where}: missing key {key!r}")
      yield where, record


def find_non_finite(value: Any, where: str = "") -> str | None:
  """The path ("tasks.x.accuracy") of the first NaN or infinite float in a JSON-like
  value, or None."""
  if isinstance(value, float):
    return None if math.isfinite(value) else (where or "the value")
  if isinstance(value, dict):
    for key, item in value.items():
      found = find_non_finite(item, f"{where}.{key}" if where else str(key))
      if found:
        return found
  elif isinstance(value, (list, tuple)):
    for i, item in enumerate(value):
      found = find_non_finite(item, f"{where}[{i}]")
      if found:
        return found
  return None


def to_json(value: Any, error: type[Exception] = ValueError, what: str = "", **kwargs) -> str:
  """json.dumps that refuses NaN and infinities with `error` naming where they are."""
  bad = find_non_finite(value)
  if bad is not None:
    raise error(f"{what + ': ' if what else ''}{bad} is not a finite number")
  return json.dumps(value, allow_nan=False, **kwargs)


def write_atomic(path: str, text: str) -> None:
  """Writes `text` to `path` whole: a temporary file beside it, then a rename."""
  directory = os.path.dirname(os.path.abspath(path))
  handle, temporary = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", dir=directory)
  try:
    with os.fdopen(handle, "w", encoding="utf-8") as f:
      f.write(text)
    os.replace(temporary, path)
  except BaseException:
    if os.path.exists(temporary):
      os.remove(temporary)
    raise


def write_jsonl_atomic(path: str, records: Iterable[dict], error: type[Exception] = ValueError
                       ) -> None:
  """One JSON object a line, written whole (see write_atomic); NaN refused."""
  lines = [to_json(r, error, f"{path}, line {i + 1}") + "\n" for i, r in enumerate(records)]
  write_atomic(path, "".join(lines))


def check_writable_dir(path: str, error: type[Exception], what: str) -> None:
  """Raises `error` unless `path` is (or can be made) a writable directory: said
  before the work whose results would go there."""
  probe = os.path.abspath(path)
  while not os.path.exists(probe):
    parent = os.path.dirname(probe)
    if parent == probe:
      break
    probe = parent
  if not os.path.isdir(probe):
    raise error(f"{what} {path}: {probe} is not a directory")
  try:  # a real write: permissions alone do not tell (root, read-only file systems)
    with tempfile.TemporaryFile(dir=probe):
      pass
  except OSError as e:
    raise error(f"{what} {path}: {probe} is not writable ({e.strerror})") from None
