"""A tiny HyperT5-Prefix on the embedded few-shot benchmark: runs on a laptop CPU in minutes.

  python -m hypert5.train --config=configs/tiny.py --workdir=/tmp/hypert5_tiny

Every top-level key can be overridden, e.g. --config.peft.kind=lora or
--config.mesh_shape='(4,2)' --config.mesh_axes="('data','model')".
"""

from hypert5.experiment import default_config
from hypert5.model.t5_config import get_size


def get_config(arg=None):
  del arg
  c = default_config()
  c.experiment = "hyper"
  # The embedded vocabulary: 2,000 SentencePiece pieces + 100 extra ids, padded to 64.
  c.model = get_size("tiny", vocab_size=2112).to_dict()
  c.peft.kind = "prefix"
  c.peft.prefix_length = 4
  c.peft.lora_rank = 4
  c.peft.lora_alpha = 8.0
  c.data.mixture = "embedded_fewshot_train"
  c.data.hyper_inputs_length = 256
  c.data.inputs_length = 32
  c.data.targets_length = 8
  c.batch_size = 8
  c.optimizer.name = "adamw"
  c.optimizer.learning_rate = 1e-3
  c.total_steps = 100
  c.checkpoint_every = 50
  c.log_every = 10
  return c
