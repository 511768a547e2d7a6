"""Converts T5 checkpoints between HuggingFace and the project's Orbax format.

  python -m hypert5.convert --from=hf --src=t5-v1_1-large --dst=ckpt/t5-large
  python -m hypert5.convert --from=native --to=hf --src=ckpt/t5-large --dst=hf/t5-large

Nothing is left at --dst when a conversion fails.
"""

from __future__ import annotations

import os
import shutil

from absl import flags

from hypert5 import cli
from hypert5.errors import CheckpointError
from hypert5.formats import checkpoints, hf


def define_flags() -> None:
  flags.DEFINE_enum("from", "hf", ["hf", "native"], "Format of --src.")
  flags.DEFINE_enum("to", "native", ["native", "hf"], "Format to write at --dst.")
  flags.DEFINE_string("src", None, "Source checkpoint directory.", required=True)
  flags.DEFINE_string("dst", None, "Destination directory (must not exist).", required=True)


FLAGS = flags.FLAGS


def convert(src: str, dst: str, source_format: str, target_format: str) -> None:
  if source_format == "hf":
    if not hf.is_hf_checkpoint(src):
      hf.load_hf_config(src)  # raises the precise reason
    cfg, params = hf.load_hf_checkpoint(src)
  else:
    if not checkpoints.is_native_checkpoint(src):
      raise CheckpointError(f"{src}: not a HyperT5 checkpoint (t5_config.json + params/)")
    cfg, params, _ = checkpoints.load_model(src)
  vocab = checkpoints.find_vocabulary(src)
  if target_format == "native":
    checkpoints.save_model(dst, params, cfg, vocab)
    return
  with checkpoints.atomic_directory(dst) as staging:
    hf.save_hf_checkpoint(staging, params, cfg)
    if vocab:
      shutil.copyfile(vocab, os.path.join(staging, "spiece.model"))


def main(argv):
  del argv
  convert(FLAGS.src, FLAGS.dst, FLAGS["from"].value, FLAGS.to)
  print(f"wrote {FLAGS.dst}")


if __name__ == "__main__":
  cli.run(main, define_flags)
