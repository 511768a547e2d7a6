"""Hyperpretraining (paper section 4.2): HyperT5-Prefix or -LoRA with CACLM on C4.

The hypermodel (a trainable copy of the downstream T5) reads a C4 span's
surrounding text A <extra_id_0> D and writes phi; the frozen T5 v1.1
LM-adapted model, given that phi, continues B into C. 100k steps of 256 spans.

arg: KIND,SCALE   KIND: prefix | lora   SCALE: large | xl | runlocal

  python -m hypert5.train --config=configs/hyperpretrain.py:prefix,large \
      --workdir=runs/hyperpretrain_prefix_large
  python -m hypert5.train --config=configs/hyperpretrain.py:lora,xl \
      --workdir=runs/hyperpretrain_lora_xl

Needs C4 (TFDS c4/en:3.1.0 under $TFDS_DATA_DIR), T5's vocabulary
($HYPERT5_VOCAB) and the converted downstream model at
checkpoints/t5-v1_1-lm-adapt-{large,xl} (see hypert5/experiments/paper.py for the
`python -m hypert5.convert` command; or --config.init.downstream_checkpoint=DIR).
The workdirs above are where configs/hypert5_mtf.py and configs/hyper_plus.py
look for the hyperpretrained hypermodel (init.hyper_checkpoint).

CACLM is not an evaluation benchmark; a hyperpretrained hypermodel is evaluated
few-shot (no MTF) with the MTF config of the same KIND and SCALE:

  python -m hypert5.eval --config=configs/hypert5_mtf.py:p3,prefix,large \
      --checkpoint=runs/hyperpretrain_prefix_large

runlocal: a tiny T5 with T5's vocabulary, random init, batch 8, 10 steps (add
--config.data.source=synthetic to run without C4):

  python -m hypert5.train --config=configs/hyperpretrain.py:prefix,runlocal \
      --workdir=/tmp/hyperpretrain_runlocal
"""

from hypert5.experiments import paper

DEFAULT_ARG = "prefix,large"


def get_config(arg=None):
  a = paper.parse_arg(arg or DEFAULT_ARG, "configs/hyperpretrain.py",
                      (("kind", paper.KINDS), ("scale", tuple(paper.SCALES))))
  c = paper.base_config(a["scale"], total_steps=paper.HYPERPRETRAIN_STEPS)
  c.experiment = "hyper"
  c.peft.kind = a["kind"]
  c.data.mixture = paper.CACLM_MIXTURE
  c.data.split = "train"
  c.data.update(paper.CACLM_LENGTHS)
  c.init.hyper_checkpoint = ""  # the hypermodel starts as a copy of the downstream T5
  return c
