"""What every `python -m hypert5.<command>` shares: logging, and loading config files.

Commands define their absl flags only when run as programs (`define_flags()`
under `__main__`), so that one command can import another's library functions.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from typing import Iterator


def quiet_logs(tag: str = "") -> None:
  """Our progress at INFO on stderr; Orbax's per-save chatter only when something is wrong.
  `tag` follows the logger's name on each line (which of several processes wrote it)."""
  from absl import logging as absl_logging  # pylint: disable=import-outside-toplevel
  absl_logging.set_verbosity(absl_logging.WARNING)
  ours = logging.getLogger("hypert5")
  if not ours.handlers:
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(f"%(asctime)s %(name)s{tag}: %(message)s"))
    ours.addHandler(handler)
  ours.setLevel(logging.INFO)
  ours.propagate = False


def load_config_module(path: str):
  """The Python module of a config file (for constants beside get_config)."""
  spec = importlib.util.spec_from_file_location("hypert5_config", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def load_config(path: str, arg: str | None = None):
  """configs/NAME.py[:ARG] -> its get_config(ARG), as --config=PATH[:ARG] would give."""
  if ":" in path and arg is None:
    path, arg = path.split(":", 1)
  module = load_config_module(path)
  return module.get_config(arg) if arg is not None else module.get_config()


def read_jsonl(path: str, keys: tuple[str, ...], error: type[Exception] = ValueError
               ) -> Iterator[tuple[str, dict]]:
  """(file:line, object) for each non-blank line of a jsonl input file; a line that
  is not an object with `keys` raises `error` naming the file and line."""
  try:
    handle = open(path)
  except OSError as e:
    raise error(f"{path}: cannot read ({e.strerror})") from e
  with handle:
    for number, line in enumerate(handle, start=1):
      if not line.strip():
        continue
      where = f"{path}:{number}"
      try:
        record = json.loads(line)
      except json.JSONDecodeError as e:
        raise error(f"{where}: invalid JSON ({e.msg})") from e
      if not isinstance(record, dict):
        raise error(f"{where}: expected an object with " + " and ".join(map(repr, keys)))
      for key in keys:
        if key not in record:
          raise error(f"{where}: missing key {key!r}")
      yield where, record


def default_compilation_cache_dir() -> str:
  """$XDG_CACHE_HOME/hypert5/jax (~/.cache/hypert5/jax): shared by every workdir."""
  import os  # pylint: disable=import-outside-toplevel
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "hypert5", "jax")


def use_compilation_cache(directory: str | None = None) -> None:
  """Keeps compiled programs on disk (JAX_COMPILATION_CACHE_DIR, else `directory`, else
  default_compilation_cache_dir()): multi-stage commands compile the same programs
  across stages, restarts and workdirs. Entries are keyed by the program, the flags
  and the JAX version, so sharing is safe; the oldest go beyond 2 GiB."""
  import os  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel
  jax.config.update("jax_compilation_cache_dir", os.environ.get(
      "JAX_COMPILATION_CACHE_DIR", directory or default_compilation_cache_dir()))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
  jax.config.update("jax_compilation_cache_max_size", 2 << 30)


SMOKE_RUN_XLA_FLAGS = {
    # Backend (LLVM) optimizations off: the programs are tiny, and compiling them
    # optimized takes longer than running them.
    "--xla_backend_optimization_level": "0",
    # The older elemental emitters: a train step compiles about 2x faster than with
    # the fusion emitters (measured in BENCHMARKS.md, "Compile time of smoke runs").
    "--xla_cpu_use_fusion_emitters": "false",
    # One LLVM module per program: splitting it for parallel codegen costs more
    # than it gains on small programs.
    "--xla_cpu_parallel_codegen_split_count": "1",
}


def fast_compile_for_smoke_runs() -> None:
  """--quick runs and the tests: XLA flags that trade run time for compile time
  (SMOKE_RUN_XLA_FLAGS). Must run before JAX starts its backend; a flag the user
  already set in XLA_FLAGS wins."""
  import os  # pylint: disable=import-outside-toplevel
  flags = os.environ.get("XLA_FLAGS", "")
  for name, value in SMOKE_RUN_XLA_FLAGS.items():
    if name not in flags:
      flags += f" {name}={value}"
  os.environ["XLA_FLAGS"] = flags.strip()
