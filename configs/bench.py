"""The shapes `hypert5.bench` times, as experiment configs `hypert5.train` runs.

  python -m hypert5.bench --preset=large

times, for each KIND it is asked for, the train step of

  python -m hypert5.train --config=configs/bench.py:large,prefix \
      --workdir=runs/bench_large_prefix

(both go through `hypert5.training.trainer_setup.setup_train`), on synthetic batches of
these shapes (`data.source=synthetic`; pass --config.data.source=seqio and
--config.data.mixture=NAME to train on real data).

arg: PRESET[,KIND]
  PRESET: tiny | small | large | xl (the table below)
  KIND: prefix (default) | lora: HyperT5 (trainable hypermodel of the
        downstream's size, frozen downstream T5);
        t5: the plain downstream T5, every parameter trained with AdamW, no
        clipping (what `--compare_hf` and `--gemm_floor` time beside PyTorch)

Every preset: dropout 0 (its masks are not matmul work, and they would rule
out fused attention), prefix P and LoRA rank r with alpha = r, Adafactor 1e-3
with global-norm clipping at 1.0 (the default optimizer of every HyperT5
config), data parallel over all devices. `attention_impl=cudnn` (large, xl)
runs on GPUs only: elsewhere add --config.model.attention_impl=xla
(`hypert5.bench` does, and prints the train command it timed).
"""

from hypert5.experiment import default_config
from hypert5.experiments import paper
from hypert5.model.t5_config import get_size

DEFAULT_ARG = "tiny,prefix"
KINDS = ("prefix", "lora", "t5")

# name -> shapes and numerics; timed_steps: how many steps hypert5.bench times.
PRESETS = {
    # Runs on CPU in seconds; the test suite's smoke test.
    "tiny": dict(size="tiny", batch_size=4, lengths=(128, 32, 16), dtype="float32",
                 prefix_length=4, lora_rank=4, remat_policy="none", attention_impl=None,
                 scan_layers=True, timed_steps=3),
    # Unrolled layers: 20% faster on CPU, where compile time does not matter here.
    "small": dict(size="small", batch_size=8, lengths=(512, 256, 64), dtype="float32",
                  prefix_length=32, lora_rank=32, remat_policy="none", attention_impl=None,
                  scan_layers=False, timed_steps=3),
    # Keep the weight matmuls' outputs, recompute attention: should cuDNN
    # attention fall back to XLA's, 16 heads x 1024^2 scores per layer and
    # example would not fit at batch 32.
    "large": dict(size="large", batch_size=32, lengths=(1024, 256, 128), dtype="bfloat16",
                  prefix_length=32, lora_rank=32, remat_policy="dots_no_batch",
                  attention_impl="cudnn", scan_layers=True, timed_steps=10),
    # Keep only each layer's input: the weight matmuls' outputs alone would be
    # ~90 GiB here, beside ~40 GiB of params, grads and state.
    "xl": dict(size="xl", batch_size=32, lengths=(1024, 256, 128), dtype="bfloat16",
               prefix_length=32, lora_rank=32, remat_policy="full", attention_impl="cudnn",
               scan_layers=True, timed_steps=10),
}


def get_config(arg=None):
  parts = str(arg or DEFAULT_ARG).split(",")
  if len(parts) == 1:
    parts.append("prefix")
  a = paper.parse_arg(",".join(parts), "configs/bench.py",
                      (("preset", tuple(PRESETS)), ("kind", KINDS)))
  p = PRESETS[a["preset"]]
  c = default_config()
  c.experiment = "t5_mtf" if a["kind"] == "t5" else "hyper"
  c.model = get_size(p["size"], dtype=p["dtype"], scan_layers=p["scan_layers"],
                     dropout_rate=0.0, remat_policy=p["remat_policy"],
                     attention_impl=p["attention_impl"]).to_dict()
  c.peft.kind = "prefix" if a["kind"] == "t5" else a["kind"]
  c.peft.prefix_length = p["prefix_length"]
  c.peft.lora_rank = p["lora_rank"]
  c.peft.lora_alpha = float(p["lora_rank"])
  c.data.source = "synthetic"
  c.data.hyper_inputs_length, c.data.inputs_length, c.data.targets_length = p["lengths"]
  c.batch_size = p["batch_size"]
  if a["kind"] == "t5":  # as HuggingFace's reference step: torch.optim.AdamW's defaults
    c.optimizer.name = "adamw"
    c.optimizer.learning_rate = 1e-4
    c.optimizer.weight_decay = 0.01
    c.optimizer.grad_clip_norm = 0.0
  c.total_steps = 1000
  c.checkpoint_every = 1000
  c.log_every = 10
  return c
