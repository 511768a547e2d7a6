"""Adapting to a new task: phi from a few examples, and PEFT initializations.

(Placeholder for issue 7's command; the train loop imports initial_shared_peft.)
"""

from __future__ import annotations

import jax

from hypert5 import checkpoints, experiment


def initial_shared_peft(config, models, params, abstract, shardings, mesh, rules, rng):
  """The starting phi of shared PEFT training: random, or a shared_peft run's."""
  del params, mesh, rules
  if config.init.peft == "random" or config.experiment == "shared_peft":
    return experiment.init_part(models, "shared", rng, shardings)
  if config.init.peft == "shared":
    return checkpoints.restore_part(config.init.peft_checkpoint, "shared", abstract)
  raise ValueError(f"config.init.peft={config.init.peft!r}: expected random, shared or hyper")
