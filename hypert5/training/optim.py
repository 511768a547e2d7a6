"""Optimizers and learning-rate schedules from the config's `optimizer` block.

Gradient accumulation is not here: the train step scans over microbatches and
applies one update, which keeps a single copy of the gradients.
"""

from __future__ import annotations

import re

import jax
import ml_collections
import optax

from hypert5.errors import ConfigError


def learning_rate_schedule(opt: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
  """constant | linear | cosine | rsqrt, each after `warmup_steps` of linear warmup."""
  peak, warmup = opt.learning_rate, opt.warmup_steps
  if opt.schedule == "constant":
    main = optax.constant_schedule(peak)
  elif opt.schedule == "linear":
    main = optax.linear_schedule(peak, opt.end_learning_rate, max(total_steps - warmup, 1))
  elif opt.schedule == "cosine":
    main = optax.cosine_decay_schedule(peak, max(total_steps - warmup, 1),
                                       alpha=opt.end_learning_rate / peak if peak else 0.0)
  elif opt.schedule == "rsqrt":  # T5's inverse square root, flat during warmup
    main = lambda step: peak * (max(warmup, 1) / (step + max(warmup, 1))) ** 0.5
  else:
    raise ConfigError(f"optimizer.schedule={opt.schedule!r}: expected constant, linear, "
                     "cosine or rsqrt")
  if warmup <= 0:
    return main
  return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), main], [warmup])


def frozen_labels(pattern: str):
  """A labelling of a parameter tree: "frozen" where the '/'-joined path (e.g.
  "hyper/backbone/token_embedder/embedding") fully matches `pattern`, else "trained"."""
  regex = re.compile(pattern)
  def label(params):
    return jax.tree_util.tree_map_with_path(
        lambda path, _: "frozen" if regex.fullmatch(_path_name(path)) else "trained", params)
  return label


def _path_name(path) -> str:
  return "/".join(str(getattr(k, "key", getattr(k, "name", k))) for k in path)


def make_optimizer(opt: ml_collections.ConfigDict, total_steps: int
                   ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """(optimizer, schedule). Adafactor follows T5's settings; AdamW is decoupled.

  `opt.freeze`: a regex of parameter paths that keep their value (no update, no
  optimizer state), e.g. the hypermodel's token embeddings, so that words a
  training set never shows keep the meaning the initialization gave them."""
  schedule = learning_rate_schedule(opt, total_steps)
  if opt.name == "adafactor":
    core = optax.adafactor(schedule, decay_rate=opt.adafactor_decay_rate,
                           multiply_by_parameter_scale=opt.adafactor_parameter_scale,
                           clipping_threshold=None, weight_decay_rate=opt.weight_decay or None)
  elif opt.name == "adamw":
    core = optax.adamw(schedule, b1=opt.b1, b2=opt.b2, eps=opt.eps,
                       weight_decay=opt.weight_decay)
  else:
    raise ConfigError(f"optimizer.name={opt.name!r}: expected adafactor or adamw")
  transforms = []
  if opt.grad_clip_norm > 0:
    transforms.append(optax.clip_by_global_norm(opt.grad_clip_norm))
  transforms.append(core)
  optimizer = optax.chain(*transforms)
  if opt.freeze:
    try:
      re.compile(opt.freeze)
    except re.error as e:
      raise ConfigError(f"optimizer.freeze={opt.freeze!r}: not a regular expression ({e})") from e
    optimizer = optax.multi_transform({"trained": optimizer, "frozen": optax.set_to_zero()},
                                      frozen_labels(opt.freeze))
  return optimizer, schedule

