"""SeqIO tasks and mixtures of HyperT5; importing this package registers them.

Importing reads no data (nor the vocabularies): only the package's small
metadata files (task lists). See README.md in this folder for the tasks, the
mixtures, the features and the environment variables naming the data.

The train and eval loops call `get_dataset` (pipeline.py); the model features
are those of `HyperFeatureConverter` (feature_converter.py).
"""

from hypert5_tasks import caclm
from hypert5_tasks import embedded_fewshot
from hypert5_tasks import embedded_icl
from hypert5_tasks import lm
from hypert5_tasks import metaicl
from hypert5_tasks import p3
from hypert5_tasks import sni
from hypert5_tasks.feature_converter import HyperFeatureConverter
from hypert5_tasks.forms import FORMS
from hypert5_tasks.pipeline import get_dataset
from hypert5_tasks.pipeline import process_shard

__all__ = ["FORMS", "HyperFeatureConverter", "get_dataset", "process_shard", "register_all"]


def register_all() -> None:
  """(Re-)registers every task and mixture, reading the environment variables now."""
  caclm.register()
  lm.register()
  for benchmark in embedded_fewshot.BENCHMARKS.values():
    embedded_fewshot.register(benchmark)
  embedded_icl.register()
  p3.register()
  metaicl.register()
  sni.register()


register_all()
