"""What every `python -m hypert5.<command>` shares: how it runs and fails, its logs,
config files and the compilation cache.

A command module defines `define_flags()` and `main(argv)` and ends with
`cli.run(main, define_flags)` under `__main__`: its flags exist only when it runs
as a program, so one command can import another's functions.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import importlib.util
import logging
import os
import sys
from collections.abc import Callable, Sequence

from absl import app, flags
from absl import logging as absl_logging

from hypert5.errors import ConfigError, HyperT5Error, Preempted


@contextlib.contextmanager
def native_stderr_silenced():
  """File descriptor 2 to /dev/null: for C++ libraries that print before any logging
  is set up."""
  sys.stderr.flush()
  saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
  os.dup2(null, 2)
  try:
    yield
  finally:
    os.dup2(saved, 2)
    os.close(saved)
    os.close(null)


class _QuietTensorFlowImport(importlib.abc.MetaPathFinder):
  """Imports TensorFlow with its C++ start-up lines (CUDA probing, oneDNN, CPU
  features) silenced: they print before TensorFlow sets up its logging, so
  TF_CPP_MIN_LOG_LEVEL cannot hide them. Unless TF_CPP_MIN_LOG_LEVEL is 0 (all logs)."""

  def find_spec(self, name, path=None, target=None):
    if name != "tensorflow" or os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "0":
      return None
    spec = importlib.machinery.PathFinder.find_spec(name, path)
    if spec is not None and spec.loader is not None:
      load = spec.loader.exec_module

      def exec_module(module):
        with native_stderr_silenced():
          load(module)

      spec.loader.exec_module = exec_module
    return spec


def _excepthook(kind, error, traceback):
  """A command's user error raised while its modules import (before `run` guards
  `main`; e.g. a $HYPERT5_TASK_MODULES entry that does not exist): one line, exit 1."""
  message = user_error_message(error)
  if message is None:
    sys.__excepthook__(kind, error, traceback)
  else:
    print(f"error: {message}", file=sys.stderr)


def launched_as_command() -> bool:
  """Whether this process is `python -m hypert5.<command>`."""
  argv = list(getattr(sys, "orig_argv", ()))
  return "-m" in argv[:-1] and argv[argv.index("-m") + 1].startswith("hypert5.")


def set_up_command_environment() -> None:
  """What a command's process needs before any library loads (`import hypert5` calls it
  for `python -m hypert5.<command>`): TensorFlow, which only reads data for the
  commands, keeps quiet unless TF_CPP_MIN_LOG_LEVEL says otherwise (JAX sets its own
  default on import, so this comes first), and user errors raised while the
  command's modules import print one line."""
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
  if not any(isinstance(f, _QuietTensorFlowImport) for f in sys.meta_path):
    sys.meta_path.insert(0, _QuietTensorFlowImport())
  sys.excepthook = _excepthook

EXIT_ERROR = 1  # bad input or a fault the message names
EXIT_USAGE = 2  # flags that do not parse (an unknown flag or config key, a bad value)
# A run stopped by SIGTERM after saving its step; starting it again resumes it
# (sysexits' EX_TEMPFAIL: schedulers and job scripts requeue on it).
EXIT_PREEMPTED = 75


def fail(message: str, status: int = EXIT_ERROR):
  """Ends the command with one line on stderr."""
  print(f"error: {message}", file=sys.stderr)
  sys.exit(status)


def user_error_message(error: BaseException) -> str | None:
  """The one line a user-caused error deserves, or None for a bug (which keeps its
  traceback). OS errors name the path they concern."""
  if isinstance(error, HyperT5Error):
    return str(error)
  if isinstance(error, OSError) and error.filename:
    return f"{error.filename}: {error.strerror or error}"
  if isinstance(error, (FileNotFoundError, PermissionError, NotADirectoryError,
                        IsADirectoryError, FileExistsError)):
    return str(error)
  return None


def run(main: Callable[[Sequence[str]], None],
        define_flags: Callable[[], None] | None = None, *,
        required: Sequence[str] = ()) -> None:
  """Runs a command: defines its flags, parses them and calls `main(argv)`. What a
  user can cause ends in one line on stderr and exit status 1; a bug keeps its
  traceback."""
  if define_flags is not None:
    define_flags()
  for name in required:
    flags.mark_flag_as_required(name)

  def parse(argv):
    try:
      rest = flags.FLAGS(argv)
      if "config" in flags.FLAGS and flags.FLAGS["config"].present:
        flags.FLAGS.config.get("experiment")  # ml_collections reports a bad file on first use
      return rest
    except Exception as e:  # noqa: BLE001  (whatever a flag or config override raised)
      fail(f"{_flag_error(e)} (--help lists the flags)", EXIT_USAGE)

  def guarded(argv):
    try:
      main(argv)
    except Preempted as e:
      print(f"{e}: saved; the same command resumes from there", file=sys.stderr)
      sys.exit(EXIT_PREEMPTED)
    except Exception as e:
      message = user_error_message(e)
      if message is None:
        raise
      fail(message)

  app.run(guarded, flags_parser=parse)


def _flag_error(error: BaseException) -> str:
  """One line for a flag that did not parse. ml_collections reports a config key typo
  as a KeyError whose text is the key and a "Did you mean" line."""
  text = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
  lines = [line.strip() for line in text.splitlines() if line.strip()]
  if isinstance(error, KeyError) and lines:
    return f"unknown config key '{lines[0].strip(chr(39))}'. " + " ".join(lines[1:])
  text = " ".join(lines).replace(
      "Configuration is not available because of an earlier failure to load: ", "")
  return text.replace("Failed loading config file config_config Attempted ",
                      "cannot load the --config file: ")


def quiet_logs(tag: str = "") -> None:
  """Our progress at INFO on stderr; Orbax's per-save chatter only when something is wrong.
  `tag` follows the logger's name on each line (which of several processes wrote it)."""
  absl_logging.set_verbosity(absl_logging.WARNING)
  ours = logging.getLogger("hypert5")
  if not ours.handlers:
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(f"%(asctime)s %(name)s{tag}: %(message)s"))
    ours.addHandler(handler)
  ours.setLevel(logging.INFO)
  ours.propagate = False


def repository_config(name: str) -> str:
  """configs/NAME in the repository checkout this package runs from. The benchmarks
  and the demo read their presets and stages from there (configs/ is the
  repository's, not part of the package)."""
  path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                      "configs", name)
  if not os.path.isfile(path):
    raise ConfigError(f"{path} not found: this command reads the repository's configs/; "
                      "run it from a checkout installed with `pip install -e .`")
  return path


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


def default_compilation_cache_dir() -> str:
  """$XDG_CACHE_HOME/hypert5/jax (~/.cache/hypert5/jax): shared by every workdir."""
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "hypert5", "jax")


def use_compilation_cache(directory: str | None = None) -> None:
  """Keeps compiled programs on disk (JAX_COMPILATION_CACHE_DIR, else `directory`, else
  default_compilation_cache_dir()): multi-stage commands compile the same programs
  across stages, restarts and workdirs. Entries are keyed by the program, the flags
  and the JAX version, so sharing is safe; the oldest go beyond 2 GiB."""
  import jax  # noqa: PLC0415  (this module loads with `import hypert5` for commands)
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
  flags = os.environ.get("XLA_FLAGS", "")
  for name, value in SMOKE_RUN_XLA_FLAGS.items():
    if name not in flags:
      flags += f" {name}={value}"
  os.environ["XLA_FLAGS"] = flags.strip()
