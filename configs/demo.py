"""The CPU demo's stages: a small T5 and HyperT5 on the embedded default.

`python -m hypert5.demo` runs them all; one stage alone:

  python -m hypert5.train --config=configs/demo.py:lm --workdir=workdir/demo/lm
  python -m hypert5.train --config=configs/demo.py:mtf_prefix --workdir=workdir/demo/mtf_prefix \
      --config.init.downstream_checkpoint=workdir/demo/downstream \
      --config.init.hyper_checkpoint=workdir/demo/hyperpretrain_prefix

Stages (the paper's pipeline at toy scale):
  lm                     pretrain the downstream T5 (on the benchmark's instructed skills;
                         ',rules' and ',control': continuation and denoising on Shakespeare)
  hyperpretrain_prefix   CACLM hyperpretraining of HyperT5-Prefix (downstream frozen)
  hyperpretrain_lora     the same for HyperT5-LoRA
  mtf_prefix, mtf_lora   multi-task fine-tuning on the benchmark's training tasks
  mtf_prefix_nohp        HyperT5-Prefix MTF without hyperpretraining (section 5.5 ablation)
  shared_prefix, shared_lora   one prefix / LoRA for all tasks (the PEFT baselines)
  t5_mtf                 full fine-tuning on x alone
  t5_mtf_fewshot         full fine-tuning on few-shot examples + x, concatenated

and `peft_finetune`: prefix tuning on one held-out task from a random, shared
or hypermodel init (section 6), which `python -m hypert5.peft_sweep` runs:

  python -m hypert5.train --config=configs/demo.py:peft_finetune --workdir=/tmp/ft \
      --config.init.downstream_checkpoint=workdir/demo/downstream \
      --config.init.peft=hyper --config.init.peft_checkpoint=workdir/demo/seed0/mtf_prefix \
      --config.init.peft_examples=shots.jsonl
"""

from hypert5.experiment import default_config
from hypert5.model.t5_config import get_size

STAGES = ("lm", "hyperpretrain_prefix", "hyperpretrain_lora", "mtf_prefix", "mtf_lora",
          "mtf_prefix_nohp", "shared_prefix", "shared_lora", "t5_mtf", "t5_mtf_fewshot")
FINETUNE = "peft_finetune"  # not a stage of the demo: hypert5.peft_sweep runs it
SHOTS_LENGTH = 160  # about 6 of the rules benchmark's few-shot examples
ICL_SHOTS_LENGTH = 96  # the in-context benchmark's 8 shots (at most 11 tokens each) and EOS

# The embedded benchmarks by the flag that picks them: the names and flags of the rows of
# tasks/embedded_benchmarks.py, spelled out so that this file loads without TensorFlow
# (tests/test_configs.py checks that the two agree).
BENCHMARK = "embedded_icl"  # the default
RULES_BENCHMARK = "embedded_fewshot"
CONTROL_BENCHMARK = "embedded_constant"
BENCHMARKS = {"": BENCHMARK, "rules": RULES_BENCHMARK, "control": CONTROL_BENCHMARK}
FLAGS = {"quick"} | (set(BENCHMARKS) - {""})

# The in-context benchmark's stages, sized from the transitions measured in
# docs/demo.md ("Where the transitions are"): the downstream model's instructed
# skills constant, pick and attribute appear by ~1,000 steps of 64 (classify at
# 2,000-4,000, lookup only after 6,000-12,000: out of this budget); HyperT5's
# reading of the constant family by 250-500 MTF steps, and no later
# transition appeared in 5,000 (GPU) or 1,500 (here).
ICL_STEPS = {"lm": 3000, "hyperpretrain": 100, "mtf": 1000, "baseline": 1000}


def base_config(quick: bool = False, benchmark: str = BENCHMARK):
  c = default_config()
  # 2,000 SentencePiece pieces + 100 extra ids, padded to a multiple of 64.
  size = dict(vocab_size=2112, d_model=64, d_kv=16, d_ff=128, num_heads=4,
              num_encoder_layers=2, num_decoder_layers=2, dropout_rate=0.0)
  if quick:
    size.update(d_model=32, d_kv=8, d_ff=64, num_heads=2)
  c.model = get_size("tiny", **size).to_dict()
  c.peft.prefix_length = 8
  c.peft.lora_rank = 4
  c.peft.lora_alpha = 8.0
  c.optimizer.name = "adamw"
  c.optimizer.learning_rate = 2e-3
  c.optimizer.warmup_steps = 20
  c.optimizer.grad_clip_norm = 1.0
  c.batch_size = 16
  c.log_every = 25
  c.data.hyper_inputs_length = SHOTS_LENGTH
  c.data.inputs_length = 40
  c.data.targets_length = 4
  c.eval.mixture = f"{benchmark}_test"
  c.eval.batch_size = 64
  return c


def finetune_config(c, quick: bool, benchmark: str):
  """PEFT fine-tuning of one held-out task (paper section 6), evaluated along the way."""
  c.experiment = "peft_finetune"
  c.peft.kind = "prefix"
  first_task = "constant_0_m0" if benchmark == BENCHMARK else "heldout_00_m0"
  c.data.mixture = c.eval.mixture = f"{benchmark}.{first_task}"
  if benchmark == BENCHMARK:
    c.data.hyper_inputs_length, c.data.inputs_length = ICL_SHOTS_LENGTH, 8
  c.data.split, c.eval.split = "train", "test"
  c.batch_size = 8
  c.optimizer.learning_rate = 1e-3
  c.optimizer.warmup_steps = 0
  c.total_steps = 4 if quick else 100
  c.eval_every = 2 if quick else 20
  c.checkpoint_every = c.total_steps
  c.log_every = c.eval_every
  return c


def benchmark_of(flags) -> str:
  chosen = [flag for flag in flags if flag in BENCHMARKS]
  if len(chosen) > 1:
    raise ValueError(f"demo config flags {' and '.join(chosen)} name two benchmarks; pass one")
  return BENCHMARKS[chosen[0] if chosen else ""]


def icl_config(c, stage: str, quick: bool):
  """The in-context benchmark's sizes: short examples, thousands of steps.

  Every stage trains at learning rate 1e-3 (full fine-tuning included: the
  steps are small enough here), but the shared prefix and LoRA at 1e-2, after
  100 warmup steps (hyperpretraining's 100 steps are all warmup)."""
  steps = {k: 3 for k in ICL_STEPS} if quick else ICL_STEPS
  c.data.hyper_inputs_length, c.data.inputs_length, c.data.targets_length = (
      ICL_SHOTS_LENGTH, 8, 4)
  c.optimizer.learning_rate = 1e-3
  c.optimizer.warmup_steps = 100
  c.batch_size = 32
  c.log_every = 100
  c.eval.batch_size = 256
  if stage == "lm":
    c.data.mixture = f"{BENCHMARK}_skills"  # the rule said outright, then x (embedded_icl.py)
    c.data.inputs_length = 24
    c.batch_size = 64
    c.total_steps = steps["lm"]
  elif stage.startswith("hyperpretrain"):
    # MTF's shapes: the two stages of a kind share one compiled step.
    c.total_steps = steps["hyperpretrain"]
  elif stage.startswith(("mtf", "shared")) or stage == "t5_mtf":
    c.total_steps = steps["mtf" if stage.startswith("mtf") else "baseline"]
  elif stage == "t5_mtf_fewshot":
    c.data.inputs_length = ICL_SHOTS_LENGTH + 12
    c.total_steps = steps["baseline"]
  if quick:  # a smoke test evaluates the first mirrored pairs
    c.eval.max_examples, c.eval.max_tasks = 4, 4
  if stage != "lm":
    c.eval_every = c.total_steps if quick else 250  # curves of held-out accuracy
    if stage.startswith("hyperpretrain"):
      c.eval_every = 0
  if stage.startswith("shared"):
    c.optimizer.learning_rate = 1e-2  # a prefix alone wants a larger step (docs/demo.md)
  c.checkpoint_every = c.total_steps
  return c


def get_config(arg="mtf_prefix"):
  """arg: a stage name, optionally with ',quick' (the test-suite version) and one of
  ',control' (the constant-family control benchmark) or ',rules' (the rules benchmark,
  embedded_fewshot) instead of the in-context benchmark (embedded_icl)."""
  stage, *flags = arg.split(",")
  unknown = set(flags) - FLAGS
  if unknown:
    raise ValueError(f"unknown demo config flags {sorted(unknown)}; known: "
                     f"{', '.join(sorted(FLAGS))}")
  quick = "quick" in flags
  benchmark = benchmark_of(flags)
  if stage not in STAGES + (FINETUNE,):
    raise ValueError(f"unknown demo stage {stage!r}; stages: {', '.join(STAGES + (FINETUNE,))}")
  c = base_config(quick, benchmark)
  if stage == FINETUNE:
    return finetune_config(c, quick, benchmark)
  steps = {"lm": 300, "hyperpretrain": 150, "mtf": 250, "baseline": 250}
  if quick:
    steps = {k: 3 for k in steps}
  kind = "lora" if stage.endswith("_lora") else "prefix"
  c.peft.kind = kind
  if stage == "lm":
    c.experiment = "lm"
    c.data.mixture = "embedded_lm_mix"  # continuation and denoising (lm.py says why)
    c.data.inputs_length, c.data.targets_length = 96, 64
    c.batch_size = 32
    c.total_steps = steps["lm"]
  elif stage.startswith("hyperpretrain"):
    c.experiment = "hyper"
    c.data.mixture = "embedded_caclm"
    c.data.hyper_inputs_length, c.data.inputs_length, c.data.targets_length = 136, 40, 40
    if quick:  # MTF's shapes: the quick run compiles one step for both stages
      c.data.hyper_inputs_length, c.data.targets_length = SHOTS_LENGTH, 4
    c.total_steps = steps["hyperpretrain"]
  elif stage.startswith("mtf"):
    c.experiment = "hyper"
    c.data.mixture = f"{benchmark}_train"
    c.total_steps = steps["mtf"]
  elif stage.startswith("shared"):
    c.experiment = "shared_peft"
    c.data.mixture = f"{benchmark}_train"
    c.total_steps = steps["baseline"]
  else:
    c.experiment = stage
    c.data.mixture = f"{benchmark}_train"
    if stage == "t5_mtf_fewshot":
      c.data.inputs_length = SHOTS_LENGTH + 40
    c.optimizer.learning_rate = 5e-4  # all parameters train: a gentler step
    c.total_steps = steps["baseline"]
  c.checkpoint_every = c.total_steps
  if benchmark == BENCHMARK:
    return icl_config(c, stage, quick)
  return c
