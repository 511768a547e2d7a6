"""What an experiment config builds: the models, which parameters train, the loss.

One table says it all (`TRAINABLE`): every stage and baseline of the paper is
the same downstream T5 with a different source of phi and a different set of
trainable parameters. Frozen parameters are a separate argument of the step
and never enter the optimizer.
"""

from __future__ import annotations

import dataclasses
import functools
import logging

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from hypert5.errors import ConfigError
from hypert5.model import hypermodel, partitioning, t5
from hypert5.model import peft as peft_lib
from hypert5.model.decoding import token_log_probs
from hypert5.model.t5_config import T5Config, get_size

log = logging.getLogger("hypert5.experiment")

# experiment -> (parameter groups that train, where phi comes from)
TRAINABLE = {
    "lm": (("downstream",), None),  # (pre)training the downstream T5 itself
    "t5_mtf": (("downstream",), None),  # T5-MTF: full fine-tuning on x alone
    "t5_mtf_fewshot": (("downstream",), None),  # T5-MTF-Few-shot: on the concatenation
    "hyper": (("hyper",), "hyper"),  # HyperT5: hyperpretraining and MTF
    "hyper_plus": (("hyper", "downstream"), "hyper"),  # HyperT5+: both trained
    "shared_peft": (("shared",), "shared"),  # prefix tuning / LoRA baselines
    "peft_finetune": (("shared",), "shared"),  # one task's PEFT, any init (section 6)
}
DATA_FORMS = {"lm": "xonly", "t5_mtf": "xonly", "t5_mtf_fewshot": "concat", "hyper": "hyper",
              "hyper_plus": "hyper", "shared_peft": "xonly", "peft_finetune": "xonly"}


def default_config() -> ml_collections.ConfigDict:
  """The schema every config file fills in (`--config.KEY=VALUE` overrides any key)."""
  c = ml_collections.ConfigDict()
  c.experiment = "hyper"
  c.model = get_size("tiny").to_dict()
  c.peft = dict(kind="prefix", prefix_length=32, cross_prefix=False, lora_rank=32,
                lora_alpha=32.0, lora_targets=("q", "v"))
  c.hyper = hypermodel.HyperConfig().to_dict()
  c.init = dict(
      downstream_checkpoint="",  # native or HuggingFace T5; "" = random init from `seed`
      hyper_checkpoint="",  # a previous run (workdir) whose `hyper` params start this one
      peft="random",  # peft_finetune: random | shared | hyper
      peft_checkpoint="",  # shared: a shared_peft run; hyper: a hyper run
      peft_examples="",  # hyper: jsonl of {input, output} few-shot examples
  )
  c.data = dict(
      # seqio (hypert5_tasks mixtures, from the example cache) | seqio_tfdata (SeqIO's
      # tf.data pipeline, for comparison) | synthetic (random tokens)
      source="seqio",
      mixture="embedded_fewshot_train", split="train", form="",  # "" = the experiment's
      hyper_inputs_length=512, inputs_length=128, targets_length=32, pack=False,
      cache_dir="")  # "": $HYPERT5_DATA_CACHE or ~/.cache/hypert5/data
  c.batch_size = 32
  c.optimizer = dict(  # read by training/optim.py
      name="adafactor", learning_rate=1e-3, schedule="constant", warmup_steps=0,
      end_learning_rate=0.0, weight_decay=0.0, grad_clip_norm=1.0, grad_accum_steps=1,
      b1=0.9, b2=0.999, eps=1e-8, adafactor_decay_rate=0.8, adafactor_parameter_scale=True,
      freeze="")  # a regex of parameter paths kept frozen
  c.total_steps = 1000
  c.checkpoint_every = 500
  c.keep_checkpoints = 3
  c.log_every = 50
  c.seed = 0
  c.mesh_shape = (-1,)
  c.mesh_axes = ("data",)
  c.logical_axis_rules = partitioning.DEFAULT_RULES
  c.eval_every = 0  # 0 = no evaluation during training
  c.eval = dict(mixture="", split="", batch_size=32, max_examples=0,  # split "": benchmark's
                max_tasks=0,  # 0: every task (smoke tests take the first few)
                max_decode_length=0)  # 0: data.targets_length
  return ml_collections.ConfigDict(c)


# The choices and the integers the loop, the data and the optimizer take, checked
# before any work with the valid values in the message (see validate).
DATA_SOURCES = ("seqio", "seqio_tfdata", "synthetic")
OPTIMIZERS = ("adafactor", "adamw")
SCHEDULES = ("constant", "linear", "cosine", "rsqrt")
PEFT_INITS = ("random", "shared", "hyper")
AT_LEAST_ONE = ("batch_size", "total_steps", "checkpoint_every", "keep_checkpoints",
                "log_every", "data.hyper_inputs_length", "data.inputs_length",
                "data.targets_length", "optimizer.grad_accum_steps", "eval.batch_size")
AT_LEAST_ZERO = ("eval_every", "eval.max_examples", "eval.max_tasks", "eval.max_decode_length",
                 "optimizer.warmup_steps", "optimizer.learning_rate",
                 "optimizer.grad_clip_norm", "optimizer.weight_decay", "model.vocab_size")


def _get(config, key: str):
  for part in key.split("."):
    config = config[part]
  return config


def validate(config) -> None:
  """ConfigError naming the first key whose value cannot run, with what it may be:
  said before any work (a batch size of 0 would otherwise fail minutes later inside
  TensorFlow, a checkpoint interval of 0 divide by zero after step 1, and keeping
  no checkpoints delete the run's)."""
  choices = {"experiment": tuple(TRAINABLE), "data.source": DATA_SOURCES,
             "optimizer.name": OPTIMIZERS, "optimizer.schedule": SCHEDULES,
             "init.peft": PEFT_INITS}
  for key, allowed in choices.items():
    if _get(config, key) not in allowed:
      raise ConfigError(f"config.{key}={_get(config, key)!r}: expected one of "
                        f"{', '.join(allowed)}")
  for key, least in [(k, 1) for k in AT_LEAST_ONE] + [(k, 0) for k in AT_LEAST_ZERO]:
    value = _get(config, key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < least:
      what = "a positive integer" if least else "a number of 0 or more"
      extra = " (keeping none would delete the run's checkpoints)" if key == (
          "keep_checkpoints") else ""
      raise ConfigError(f"config.{key}={value!r}: must be {what}{extra}")
  if config.batch_size % config.optimizer.grad_accum_steps:
    raise ConfigError(f"config.batch_size={config.batch_size} must divide into "
                      f"optimizer.grad_accum_steps={config.optimizer.grad_accum_steps}")


def size_vocabulary(config, data_vocab_size: int) -> None:
  """config.model.vocab_size 0 -> the data's vocabulary size (SeqIO's extra ids
  included) rounded up to a multiple of 128, as T5's 32,128 is: a model trained from
  scratch on a small SentencePiece model gets an output layer of that size, not T5's."""
  if config.model.vocab_size:
    return
  config.model.vocab_size = -(-data_vocab_size // 128) * 128
  log.info("config.model.vocab_size=%d, from the data's vocabulary of %d ids",
           config.model.vocab_size, data_vocab_size)


def t5_config(config) -> T5Config:
  return T5Config.from_dict(dict(config.model), source="config.model")


def peft_config(config) -> peft_lib.PeftConfig | None:
  if TRAINABLE[config.experiment][1] is None:
    return None
  return peft_lib.PeftConfig.from_dict(dict(config.peft), source="config.peft")


def data_form(config) -> str:
  return config.data.form or DATA_FORMS[config.experiment]


@dataclasses.dataclass(frozen=True)
class Models:
  """The Flax modules of one experiment (hashable: usable as jit static args)."""
  experiment: str
  downstream: t5.T5
  hyper: hypermodel.HyperT5 | None
  shared: peft_lib.SharedPeft | None

  @property
  def trainable(self) -> tuple[str, ...]:
    return TRAINABLE[self.experiment][0]

  @property
  def frozen(self) -> tuple[str, ...]:
    return tuple(p for p in ("downstream",) if p not in self.trainable)

  @property
  def parts(self) -> tuple[str, ...]:
    return tuple(p for p in ("hyper", "shared", "downstream")
                 if p == "downstream" or getattr(self, p) is not None)


def build_models(config) -> Models:
  if config.experiment not in TRAINABLE:
    raise ConfigError(f"config.experiment={config.experiment!r}; expected one of "
                      f"{sorted(TRAINABLE)}")
  cfg, peft = t5_config(config), peft_config(config)
  source = TRAINABLE[config.experiment][1]
  hyper = shared = None
  if source == "hyper":
    hyper = hypermodel.HyperT5(cfg, cfg, peft, hypermodel.HyperConfig(**dict(config.hyper)))
  elif source == "shared":
    shared = peft_lib.SharedPeft(peft, cfg)
  return Models(config.experiment, t5.T5(cfg, peft), hyper, shared)


def part_module(models: Models, part: str) -> nn.Module:
  return {"downstream": models.downstream, "hyper": models.hyper, "shared": models.shared}[part]


def init_fn(module: nn.Module):
  """rng -> the module's initial variables, from dummy inputs of the right rank."""
  if isinstance(module, t5.T5):
    return lambda rng: module.init(rng, jnp.ones((1, 1), jnp.int32), jnp.ones((1, 1), jnp.int32))
  if isinstance(module, hypermodel.HyperT5):
    return lambda rng: module.init(rng, jnp.ones((1, 4), jnp.int32))
  return lambda rng: module.init(rng)


def abstract_params(models: Models, part: str):
  """Boxed abstract parameters of one part (shapes and logical names, no memory).

  Memoized per module (modules compare by value): tracing a model's init takes
  about a second on a CPU, and a run asks for the same shapes several times.
  Callers must not modify the returned tree."""
  return _abstract_params(part_module(models, part))


@functools.lru_cache(maxsize=64)
def _abstract_params(module: nn.Module):
  return jax.eval_shape(init_fn(module), jax.random.PRNGKey(0))["params"]


def param_shardings(models: Models, part: str, mesh, rules):
  specs = nn.get_partition_spec(abstract_params(models, part))
  return partitioning.logical_to_sharding(specs, mesh, rules)


def init_part(models: Models, part: str, rng, shardings):
  """Initializes one part directly into its shardings (never whole on one device)."""
  module = part_module(models, part)
  return jax.jit(lambda r: nn.unbox(init_fn(module)(r)["params"]), out_shardings=shardings)(rng)


def compute_phi(models: Models, params: dict, batch: dict, *, deterministic: bool, rng=None):
  """phi for a batch: generated per example, shared, or None (plain T5)."""
  rngs = {"dropout": rng} if rng is not None and not deterministic else None
  if models.hyper is not None:
    return models.hyper.apply({"params": params["hyper"]}, batch["hyper_encoder_input_tokens"],
                              deterministic=deterministic, rngs=rngs)
  if models.shared is not None:
    return models.shared.apply({"params": params["shared"]})
  return None


def downstream_logits(models: Models, params: dict, batch: dict, phi, *, deterministic: bool,
                      rng=None):
  rngs = {"dropout": rng} if rng is not None and not deterministic else None
  packing = {k: batch[k] for k in ("encoder_segment_ids", "decoder_segment_ids",
                                   "encoder_positions", "decoder_positions") if k in batch}
  return models.downstream.apply(
      {"params": params["downstream"]}, batch["encoder_input_tokens"],
      batch["decoder_input_tokens"], phi=phi, deterministic=deterministic, rngs=rngs, **packing)


def loss_terms(models: Models, params: dict, batch: dict, rng, *, deterministic: bool = False):
  """(sum of token cross-entropies, sum of loss weights) for a batch."""
  phi_rng, model_rng = jax.random.split(rng)
  phi = compute_phi(models, params, batch, deterministic=deterministic, rng=phi_rng)
  logits = downstream_logits(models, params, batch, phi, deterministic=deterministic,
                             rng=model_rng)
  weights = batch["decoder_loss_weights"].astype(jnp.float32)
  nll = -token_log_probs(logits, batch["decoder_target_tokens"])
  return jnp.sum(nll * weights), jnp.sum(weights)


def batch_features(models: Models, pack: bool) -> tuple[str, ...]:
  names = ["encoder_input_tokens", "decoder_input_tokens", "decoder_target_tokens",
           "decoder_loss_weights"]
  if models.hyper is not None:
    names.insert(0, "hyper_encoder_input_tokens")
  if pack:
    names += ["encoder_segment_ids", "encoder_positions", "decoder_segment_ids",
              "decoder_positions"]
  return tuple(names)
