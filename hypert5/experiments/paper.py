"""The paper's experiments at T5-Large and T5-XL: what every config in configs/ shares.

HyperTuning (Phang et al., 2022) trains every model on the same frozen (or
fine-tuned) T5 v1.1 LM-adapted downstream model. The config files
(configs/hyperpretrain.py, hypert5_mtf.py, hyper_plus.py, shared_peft.py,
t5_mtf.py) say what differs between experiments; this module holds what they
share, so that it is written once:

  scales      large | xl (the paper's two sizes) | runlocal (a tiny T5 with
              T5's vocabulary, batch 8, 10 steps: checks a config on a laptop)
  benchmarks  p3 | metaicl_{hr_to_lr,non_nli_to_nli,non_class_to_class} |
              sni_{def,def_pos2}: training and evaluation mixtures
  lengths     CACLM: hypermodel 384 (353 + EOS of A<sep>D), input 40 (B = 32 + EOS),
              target 136 (C = 128 + EOS), multiples of 8 over caclm.C4_LAYOUT.
              Few-shot benchmarks: hypermodel 1024 (up to 16 examples; the
              paper's length), downstream input 384, target 128.
  schedule    batch 256; 100k hyperpretraining steps, 10k MTF steps; Adafactor,
              learning rate 1e-3 constant (T5's fine-tuning recipe; the same for
              every method, so the methods differ only in what trains), global
              gradient-norm clip 1.0.

The downstream checkpoints are the converted HuggingFace LM-adapted models:

  huggingface-cli download google/t5-large-lm-adapt --local-dir hf/t5-large-lm-adapt
  python -m hypert5.convert --from=hf --src=hf/t5-large-lm-adapt \
      --dst=checkpoints/t5-v1_1-lm-adapt-large
  (the same with xl; `hypert5.convert` explains what to do if the download has
  only pytorch_model.bin, which is refused).

This module imports neither TensorFlow nor SeqIO: configs load anywhere.
"""

from __future__ import annotations

import dataclasses

import ml_collections

from hypert5.experiment import default_config
from hypert5.model.t5_config import get_size

KINDS = ("prefix", "lora")
PREFIX_LENGTH = 32  # P (paper section 5.1)
LORA_RANK = 32  # r; alpha = r, so the update is a @ b unscaled

BATCH_SIZE = 256
HYPERPRETRAIN_STEPS = 100_000
MTF_STEPS = 10_000
LEARNING_RATE = 1e-3

# CACLM on C4 (tasks/caclm.py C4_LAYOUT: A=176, B=32, C=128, D=176), rounded up to 8.
CACLM_MIXTURE = "caclm_c4"
CACLM_LENGTHS = dict(hyper_inputs_length=384, inputs_length=40, targets_length=136)
# The few-shot benchmarks: 16 examples (tasks' fewshot.NUM_SHOTS) in up to 1024 tokens.
MTF_LENGTHS = dict(hyper_inputs_length=1024, inputs_length=384, targets_length=128)


@dataclasses.dataclass(frozen=True)
class Scale:
  """Model size, numerics, mesh and run length of one scale of the experiments."""
  size: str  # a hypert5.t5_config size
  dtype: str  # compute dtype (parameters stay float32)
  remat_policy: str
  mesh_shape: tuple[int, ...]
  mesh_axes: tuple[str, ...]
  grad_accum_steps: int  # microbatches per step of BATCH_SIZE examples
  downstream_checkpoint: str  # "" = random init (runlocal)
  batch_size: int = BATCH_SIZE
  max_steps: int | None = None  # caps total_steps (runlocal)


# large: data parallel only; the hypermodel and the frozen T5 (2 x 0.8B parameters,
# 6.3 GB in float32) fit on every device. xl (2 x 2.85B) splits heads, mlp, vocab
# and the hypermodel's output heads 4 ways (`model`), batches over the rest; every
# sharded dimension of both sizes is a multiple of 4. The accumulation steps are
# sized for about 32 accelerators of 32+ GB; with fewer, raise
# --config.optimizer.grad_accum_steps (it must divide the batch of 256).
SCALES = {
    "large": Scale("large", "bfloat16", "dots", (-1,), ("data",), 2,
                   "checkpoints/t5-v1_1-lm-adapt-large"),
    "xl": Scale("xl", "bfloat16", "full", (-1, 4), ("data", "model"), 4,
                "checkpoints/t5-v1_1-lm-adapt-xl"),
    "runlocal": Scale("tiny", "float32", "none", (-1,), ("data",), 1, "", batch_size=8,
                      max_steps=10),
}

# benchmark -> (training mixture, evaluation mixture), as registered by hypert5_tasks.
BENCHMARKS = {
    "p3": ("p3_t0_train", "p3_heldout_score_eval"),
    **{f"metaicl_{split}": (f"metaicl_{split}_train", f"metaicl_{split}_test")
       for split in ("hr_to_lr", "non_nli_to_nli", "non_class_to_class")},
    **{f"sni_{setting}": (f"sni_{setting}_train", f"sni_{setting}_test")
       for setting in ("def", "def_pos2")},
}


def parse_arg(arg: str, config: str, fields: tuple[tuple[str, tuple[str, ...]], ...],
              flags: tuple[str, ...] = ()) -> dict:
  """'V1,V2,...[,FLAG...]' -> {field: value, ..., flag: bool}.

  fields: (name, allowed values) in order, all required; flags: optional words
  after them. Raises ValueError naming the config, the arg, the bad part and
  what is allowed.
  """
  usage = ",".join(name.upper() for name, _ in fields) + "".join(f"[,{f}]" for f in flags)
  parts = [p.strip() for p in str(arg).split(",")]
  if len(parts) < len(fields):
    raise ValueError(f"{config}: arg {arg!r} has {len(parts)} part(s); expected {usage}")
  values = {}
  for (name, allowed), part in zip(fields, parts):
    if part not in allowed:
      raise ValueError(f"{config}: {name} {part!r} in arg {arg!r} is not one of "
                       f"{', '.join(allowed)} (arg: {usage})")
    values[name] = part
  rest = parts[len(fields):]
  for part in rest:
    if part not in flags:
      allowed = ", ".join(flags) if flags else "none"
      raise ValueError(f"{config}: unknown flag {part!r} in arg {arg!r}; flags: {allowed} "
                       f"(arg: {usage})")
  if len(set(rest)) != len(rest):
    raise ValueError(f"{config}: a flag is repeated in arg {arg!r}")
  values.update({flag: flag in rest for flag in flags})
  return values


def hyperpretrain_workdir(kind: str, scale: str) -> str:
  """Where configs/hyperpretrain.py's docstring puts a run; MTF starts from it."""
  return f"runs/hyperpretrain_{kind}_{scale}"


def base_config(scale: str, *, total_steps: int) -> ml_collections.ConfigDict:
  """default_config() at a scale: model, numerics, mesh, optimizer, batch, run length."""
  s = SCALES[scale]
  c = default_config()
  if s.size == "tiny":  # T5's real vocabulary (32,100 ids), so the real mixtures fit
    c.model = get_size("tiny", vocab_size=32128).to_dict()
  else:
    c.model = get_size(s.size, dtype=s.dtype, remat_policy=s.remat_policy).to_dict()
  c.peft.prefix_length = PREFIX_LENGTH
  c.peft.lora_rank = LORA_RANK
  c.peft.lora_alpha = float(LORA_RANK)
  c.init.downstream_checkpoint = s.downstream_checkpoint
  c.batch_size = s.batch_size
  c.optimizer.name = "adafactor"
  c.optimizer.learning_rate = LEARNING_RATE
  c.optimizer.schedule = "constant"
  c.optimizer.warmup_steps = 0
  c.optimizer.grad_clip_norm = 1.0
  c.optimizer.grad_accum_steps = s.grad_accum_steps
  c.mesh_shape = s.mesh_shape
  c.mesh_axes = s.mesh_axes
  c.total_steps = min(total_steps, s.max_steps or total_steps)
  if s.max_steps:
    c.checkpoint_every, c.log_every = 5, 1
  else:
    c.checkpoint_every = 5000 if total_steps >= 50_000 else 1000
    c.log_every = 100
  c.keep_checkpoints = 3
  c.seed = 0
  c.eval.batch_size = 8 if s.max_steps else 32
  return c


def set_benchmark(c: ml_collections.ConfigDict, benchmark: str) -> None:
  """Training and evaluation mixtures and the lengths of a few-shot benchmark.

  The mixture names are the base (hyper-form) names; the train and eval loops
  pick the `_concat` / `_xonly` variant from the experiment (training/data.py).
  """
  c.data.mixture, c.eval.mixture = BENCHMARKS[benchmark]
  c.data.split = "train"
  c.data.update(MTF_LENGTHS)
  c.data.pack = False


def set_hyperpretrained(c: ml_collections.ConfigDict, kind: str, scale: str,
                        hyperpretrained: bool = True) -> None:
  """Starts the hypermodel from configs/hyperpretrain.py's run of the same kind and
  scale (runlocal: from the downstream copy, as there is no such run by default)."""
  if hyperpretrained and not SCALES[scale].max_steps:
    c.init.hyper_checkpoint = hyperpretrain_workdir(kind, scale)
  else:
    c.init.hyper_checkpoint = ""
