"""SeqIO tasks and mixtures of HyperT5; importing this package registers them.

Importing reads no data (nor the vocabularies): only the package's small
metadata files (task lists). See README.md in this folder for the tasks, the
mixtures, the features and the environment variables naming the data.

The train loop reads a mixture as a stream computed from its position
(indexed.py) over each task's examples, tokenized once into the example cache
(example_cache.py); `get_dataset` (pipeline.py) is SeqIO's own tf.data pipeline
of a mixture. Either gives the model features of `HyperFeatureConverter`
(feature_converter.py). Every task says how it is scored (scoring.py).

Your own tasks: `register_jsonl_benchmark(name, folder)` (user_tasks.py). To
have every process (hypert5.train, hypert5.eval, ...) register them, name the
module (or .py file) that does so in $HYPERT5_TASK_MODULES (comma-separated);
importing this package imports them after the built-in tasks.
"""

import importlib
import importlib.util
import os
import sys

from hypert5.errors import MissingDataError
from hypert5_tasks import caclm, embedded_benchmarks, lm, metaicl, p3, sni
from hypert5_tasks.feature_converter import HyperFeatureConverter
from hypert5_tasks.forms import FORMS
from hypert5_tasks.pipeline import get_dataset, process_shard
from hypert5_tasks.user_tasks import register_jsonl_benchmark

__all__ = ["FORMS", "HyperFeatureConverter", "get_dataset", "process_shard", "register_all",
           "register_jsonl_benchmark"]

ENV_TASK_MODULES = "HYPERT5_TASK_MODULES"


def register_all() -> None:
  """(Re-)registers every task and mixture, reading the environment variables now."""
  caclm.register()
  lm.register()
  for benchmark in embedded_benchmarks.BENCHMARKS.values():
    benchmark.register()
  p3.register()
  metaicl.register()
  sni.register()


register_all()


def import_task_modules(value: str | None = None) -> list[str]:
  """Imports the modules named by $HYPERT5_TASK_MODULES (or `value`): module names
  or paths of .py files, comma-separated; each is imported once per process.
  Returns the module names."""
  value = os.environ.get(ENV_TASK_MODULES, "") if value is None else value
  imported = []
  for entry in (e.strip() for e in value.split(",")):
    if not entry:
      continue
    if entry.endswith(".py") or os.sep in entry:
      path = os.path.abspath(entry)
      if not os.path.isfile(path):
        raise MissingDataError(f"{ENV_TASK_MODULES} names {entry!r}, but there is no file "
                                f"{path}")
      module_name = os.path.splitext(os.path.basename(path))[0]
      if module_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module  # `import NAME` later finds this one
        try:
          spec.loader.exec_module(module)
        except BaseException:
          del sys.modules[module_name]
          raise
    else:
      module_name = entry
      try:
        importlib.import_module(module_name)
      except ModuleNotFoundError as e:
        if e.name != module_name.split(".")[0] and e.name != module_name:
          raise  # the module imports something missing: its own traceback says what
        raise MissingDataError(f"{ENV_TASK_MODULES} names module {entry!r}, which Python "
                               "cannot find; give its .py file's path, or add its folder "
                               "to PYTHONPATH") from None
    imported.append(module_name)
  return imported


import_task_modules()
