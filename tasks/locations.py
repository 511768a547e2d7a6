"""Where the benchmarks live on disk, and what to say when they are not there.

Every real benchmark is read from a local copy whose folder is named by an
environment variable, read once when the tasks are registered (import time).
Nothing is downloaded at run time. Registration never touches the folders, so
`import hypert5_tasks` works without any data; reading a task whose data is
missing raises `MissingDataError`, which says what to download and where to put it.

  HYPERT5_VOCAB        SentencePiece model of the real benchmarks (vocab.py)
  TFDS_DATA_DIR        TFDS folder holding c4/en/3.1.0 (caclm.py)
  HYPERT5_P3_DIR       a copy of the Hugging Face dataset bigscience/P3 (p3.py)
  HYPERT5_METAICL_DIR  MetaICL's data/ folder, built by its download scripts (metaicl.py)
  HYPERT5_SNI_DIR      a clone of allenai/natural-instructions (sni.py)
"""

from __future__ import annotations

import dataclasses
import os

from hypert5.errors import MissingDataError

ENV_VOCAB = "HYPERT5_VOCAB"
ENV_TFDS = "TFDS_DATA_DIR"
ENV_P3 = "HYPERT5_P3_DIR"
ENV_METAICL = "HYPERT5_METAICL_DIR"
ENV_SNI = "HYPERT5_SNI_DIR"


@dataclasses.dataclass(frozen=True)
class DataLocation:
  """One benchmark's folder: its variable, its expected layout and how to fetch it."""
  env_var: str
  benchmark: str
  layout: str  # the files the readers expect under the folder
  how_to_get: str  # where to download it from
  default: str | None = None

  def root(self) -> str | None:
    """The folder named by the environment variable now (or the default)."""
    return os.environ.get(self.env_var) or self.default

  def missing(self, root: str | None, detail: str = "") -> MissingDataError:
    """The error to raise when `root` (None: variable unset) lacks the data."""
    where = (f"{self.env_var} is not set" if root is None
             else f"{self.env_var}={root} does not hold it")
    detail = f" ({detail})" if detail else ""
    return MissingDataError(
        f"{self.benchmark} data not found: {where}{detail}. Expected layout: {self.layout}. "
        f"{self.how_to_get} Then set {self.env_var} to that folder.")

  def require(self, root: str | None) -> str:
    """`root` if it is an existing folder, else raises `MissingDataError`."""
    if root is None or not os.path.isdir(root):
      raise self.missing(root)
    return root


P3 = DataLocation(
    env_var=ENV_P3,
    benchmark="P3 (bigscience/P3)",
    layout=("{root}/data/{subset}/{split}.parquet (or {split}-*.parquet, or {split}/*.parquet), "
            "or the older {root}/data/{subset}/{split}.tfrecord-00000-of-00001 with "
            "info.{split}.json"),
    how_to_get=("Download the subsets you need from the Hugging Face Hub, e.g. "
                "`huggingface-cli download bigscience/P3 --repo-type dataset "
                "--include 'data/super_glue_rte_*/*' --local-dir DIR` (parquet files are on "
                "the refs/convert/parquet revision; either layout is read)."),
)

METAICL = DataLocation(
    env_var=ENV_METAICL,
    benchmark="MetaICL",
    layout=("{root}/{task}/{task}_{k}_{seed}_{split}.jsonl, one {task, input, output, "
            "options} a line"),
    how_to_get=("Build it with github.com/facebookresearch/MetaICL's preprocessing "
                "(in preprocess/: `python _build_gym.py --build --n_proc=8 --do_test` and "
                "`--do_train`, plus `python unifiedqa.py --do_train --do_test`; its README), "
                "which writes data/."),
)

SNI = DataLocation(
    env_var=ENV_SNI,
    benchmark="Super-NaturalInstructions",
    layout="{root}/tasks/{task}.json and {root}/splits/default/{train,test}_tasks.txt",
    how_to_get="Clone github.com/allenai/natural-instructions (about 3 GB of task files).",
)

C4 = DataLocation(
    env_var=ENV_TFDS,
    benchmark="C4 (TFDS c4/en:3.1.0)",
    layout="{root}/c4/en/3.1.0/ (dataset_info.json and c4-train.tfrecord-* shards)",
    how_to_get=("Copy a prepared TFDS c4/en/3.1.0 folder into it, or prepare one with "
                "`tfds build c4/en:3.1.0 --data_dir=DIR` (needs the Common Crawl download, "
                "see the TFDS catalog entry for c4)."),
    default=os.path.join(os.path.expanduser("~"), "tensorflow_datasets"),
)
