"""One set-up for every entry point that runs the train step.

`setup_train(config)` builds, from an experiment config, what `hypert5.train`
runs: the mesh and its logical-axis rules, the models, the optimizer and its
schedule, the abstract state (parameters and optimizer state as
ShapeDtypeStructs carrying their shardings) and the jitted train step.
`hypert5.train` restores or initializes and loops around it; `hypert5.plan`
compiles its step against the abstract arguments; `hypert5.bench` times its
step on synthetic batches. The plan and the benchmark therefore measure the
program training runs: its sharding, gradient clipping, accumulation and remat
policy (MaxText's `setup_train_loop`, shared by its train and ahead-of-time
compile scripts, is the model).

Everything is checked before anything is compiled: the mesh against the
devices, the batch against the data-parallel shards, every sharded parameter
dimension against its mesh axes. Nothing here imports TensorFlow or SeqIO.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding

from hypert5 import experiment
from hypert5.errors import ConfigError, MeshError
from hypert5.formats import checkpoints
from hypert5.inference import api
from hypert5.model import hypermodel, partitioning, t5
from hypert5.training.optim import make_optimizer


@dataclasses.dataclass
class TrainSetup:
  """What one config trains: mesh, models, optimizer, abstract state, the jitted step.

  `step(trainable, opt_state, step, frozen, batch) -> (trainable, opt_state, metrics)`
  donates the trainable parameters and the optimizer state; call it (and
  anything that traces the models) inside `activate()`.
  """
  config: Any
  mesh: Mesh
  rules: tuple
  models: experiment.Models
  optimizer: optax.GradientTransformation
  schedule: optax.Schedule
  shardings: dict  # part -> tree of NamedSharding
  abstract: dict  # part -> tree of ShapeDtypeStruct, with its sharding
  opt_shardings: Any
  opt_abstract: Any
  step: Callable

  @property
  def batch_sharding(self) -> NamedSharding:
    return partitioning.batch_sharding(self.mesh, self.rules)

  @property
  def features(self) -> tuple[str, ...]:
    return experiment.batch_features(self.models, self.config.data.pack)

  @contextlib.contextmanager
  def activate(self):
    """The mesh and the logical-axis rules the models' constraints resolve against."""
    with jax.set_mesh(self.mesh), nn.logical_axis_rules(self.rules):
      yield

  def abstract_batch(self) -> dict:
    """{feature: ShapeDtypeStruct [batch, length]}, as `training/data.py` yields it."""
    lengths = {"hyper": self.config.data.hyper_inputs_length,
               "encoder": self.config.data.inputs_length,
               "decoder": self.config.data.targets_length}
    return {name: jax.ShapeDtypeStruct(
        (self.config.batch_size, lengths[name.split("_")[0]]),
        jnp.float32 if name == "decoder_loss_weights" else jnp.int32,
        sharding=self.batch_sharding) for name in self.features}

  def abstract_arguments(self) -> tuple:
    """The step's arguments as sharded ShapeDtypeStructs (nothing allocated)."""
    models = self.models
    step = jax.ShapeDtypeStruct((), jnp.int32, sharding=partitioning.replicated(self.mesh))
    return ({p: self.abstract[p] for p in models.trainable}, self.opt_abstract, step,
            {p: self.abstract[p] for p in models.frozen}, self.abstract_batch())

  def lower(self):
    """The step lowered against abstract arguments (compile() it for its memory plan)."""
    with self.activate():
      return self.step.lower(*self.abstract_arguments())

  def global_batch(self, local: dict) -> dict:
    """This process's rows of a batch -> global arrays in the batch sharding."""
    return {k: jax.make_array_from_process_local_data(self.batch_sharding, v)
            for k, v in local.items()}

  def dense_batch(self, seed: int = 0) -> dict:
    """Random tokens at the configured lengths, no padding (every position counts),
    every feature the step reads: for timing where no data is at hand."""
    rng = np.random.default_rng([seed, jax.process_index()])
    rows = self.config.batch_size // jax.process_count()
    local = {}
    for name, x in self.abstract_batch().items():
      shape = (rows,) + x.shape[1:]
      if name == "decoder_loss_weights":
        local[name] = np.ones(shape, np.float32)
      elif name.endswith("segment_ids"):
        local[name] = np.ones(shape, np.int32)
      elif name.endswith("positions"):
        local[name] = np.broadcast_to(np.arange(shape[1], dtype=np.int32), shape).copy()
      else:
        local[name] = rng.integers(2, self.config.model.vocab_size, shape, dtype=np.int32)
    if "decoder_input_tokens" in local:  # teacher forcing: the targets shifted right
      targets = local["decoder_target_tokens"]
      local["decoder_input_tokens"] = np.concatenate(
          [np.zeros((rows, 1), np.int32), targets[:, :-1]], axis=1)
    return self.global_batch(local)

  def initial_params(self, parts) -> dict:
    """Fresh (or loaded, per config.init) parameters of `parts`, in their shardings."""
    with self.activate():
      return initial_params(self.config, self.models, self.abstract, self.shardings,
                                      self.mesh, self.rules, parts)

  def init_optimizer(self, trainable: dict):
    with self.activate():
      return jax.jit(self.optimizer.init, out_shardings=self.opt_shardings)(trainable)

  def initial_state(self) -> tuple[dict, Any, dict]:
    """(trainable, optimizer state, frozen) as a fresh run of `hypert5.train` starts."""
    params = self.initial_params(self.models.parts)
    trainable = {p: params[p] for p in self.models.trainable}
    frozen = {p: params[p] for p in self.models.frozen}
    return trainable, self.init_optimizer(trainable), frozen


def _with_shardings(tree, shardings):
  return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                      tree, shardings)


def abstract_state(models, optimizer, mesh, rules):
  """Shardings and sharded ShapeDtypeStructs of every parameter part and of the
  optimizer state (of the trainable parts): (param shardings, abstract params,
  optimizer-state shardings, abstract optimizer state). Allocates nothing."""
  shardings = {p: experiment.param_shardings(models, p, mesh, rules) for p in models.parts}
  abstract = {p: _with_shardings(t5.unbox_shapes(experiment.abstract_params(models, p)),
                                 shardings[p]) for p in models.parts}
  trainable = {p: abstract[p] for p in models.trainable}
  opt_shapes = jax.eval_shape(optimizer.init, trainable)
  opt_shardings = partitioning.optimizer_state_shardings(
      optimizer, opt_shapes, trainable, {p: shardings[p] for p in models.trainable}, mesh)
  return shardings, abstract, opt_shardings, _with_shardings(opt_shapes, opt_shardings)


def check_divisible(part: str, abstract, shardings, logical_specs, mesh) -> None:
  """A MeshError naming the first parameter whose sharded dimension does not divide."""
  leaves = jax.tree_util.tree_leaves_with_path(abstract)
  specs = jax.tree.leaves(logical_specs,
                          is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))
  for (path, x), sharding, names in zip(leaves, jax.tree.leaves(shardings), specs):
    for dim, axes in enumerate(tuple(sharding.spec)):
      axes = (axes,) if isinstance(axes, str) else tuple(axes or ())
      ways = math.prod(mesh.shape[a] for a in axes)
      if x.shape[dim] % ways:
        name = jax.tree_util.keystr(path, simple=True, separator="/")
        raise MeshError(
            f"{part}/{name}: dimension {dim} ({names[dim]}={x.shape[dim]}) of shape "
            f"{tuple(x.shape)} does not divide over mesh axes {axes} of size {ways}; "
            f"choose a mesh whose {'x'.join(axes)} size divides {x.shape[dim]}")


def check_batch(config, mesh: Mesh, rules) -> None:
  """The global batch must split evenly over data-parallel shards, processes and
  accumulation microbatches."""
  dp = partitioning.data_parallel_size(mesh, rules)
  if config.batch_size % dp or config.batch_size % jax.process_count():
    raise MeshError(
        f"batch_size {config.batch_size} must divide over the {dp} data-parallel shards of "
        f"mesh {dict(mesh.shape)} and {jax.process_count()} processes")
  if config.batch_size % config.optimizer.grad_accum_steps:
    raise ConfigError(f"batch_size {config.batch_size} must divide into "
                      f"optimizer.grad_accum_steps={config.optimizer.grad_accum_steps}")


def initial_params(config, models, abstract, shardings, mesh, rules, parts):
  """Fresh parameters for `parts`, each created (or loaded) into its shardings.

  The downstream model is always made: the hypermodel starts as a copy of it.
  """
  base = jax.random.PRNGKey(config.seed)
  params = {}
  if config.init.downstream_checkpoint:
    _, params["downstream"], _ = checkpoints.load_model(config.init.downstream_checkpoint,
                                                        abstract["downstream"])
    checkpoints.check_params_fit(params["downstream"], models.downstream.config,
                                 config.init.downstream_checkpoint)
  else:
    params["downstream"] = experiment.init_part(models, "downstream", jax.random.fold_in(base, 1),
                                                shardings["downstream"])
  if "hyper" in parts:
    if config.init.hyper_checkpoint:
      params["hyper"] = checkpoints.restore_part(config.init.hyper_checkpoint, "hyper",
                                                 abstract["hyper"])
    else:
      fresh = jax.jit(lambda r, down: hypermodel.init_from_downstream(
          nn.unbox(experiment.init_fn(models.hyper)(r)["params"]), down),
                      out_shardings=shardings["hyper"])
      params["hyper"] = fresh(jax.random.fold_in(base, 2), params["downstream"])
  if "shared" in parts:
    params["shared"] = initial_shared_peft(config, models, params, abstract["shared"],
                                                 shardings["shared"], mesh, rules,
                                                 jax.random.fold_in(base, 3))
  return {p: params[p] for p in parts}


def phi_to_shared_params(phi) -> dict:
  """phi (batch 1) -> SharedPeft parameters (the same tensors, named by their path)."""
  flat = {}

  def visit(tree, path):
    if isinstance(tree, dict):
      for k, v in tree.items():
        visit(v, path + (k,))
    else:
      flat["/".join(path)] = tree[0]

  visit(phi, ())
  return flat


def initial_shared_peft(config, models, params, abstract, shardings, mesh, rules, rng):
  """The starting phi of PEFT training (paper section 6): random, the shared
  multi-task PEFT parameters of a shared_peft run, or a hypermodel's phi for a
  few training examples of the task."""
  del params, mesh, rules
  if config.experiment == "shared_peft" or config.init.peft == "random":
    return experiment.init_part(models, "shared", rng, shardings)
  if config.init.peft == "shared":
    return checkpoints.restore_part(config.init.peft_checkpoint, "shared", abstract)
  if config.init.peft == "hyper":
    hyper = api.load(config.init.peft_checkpoint)
    if (hyper.peft_config != models.downstream.peft_config
        or hyper.downstream_config.replace(dtype="float32") != models.downstream.config.replace(
            dtype="float32")):
      raise ConfigError(f"{config.init.peft_checkpoint}: the hypermodel writes phi for another "
                       "downstream model or PEFT config than this run's")
    shared = phi_to_shared_params(hyper.phi(api.read_examples(config.init.peft_examples)))
    return jax.tree.map(lambda x, s: jax.device_put(np.asarray(x), s), shared, shardings)
  raise ConfigError(f"config.init.peft={config.init.peft!r}: expected random, shared or hyper")


def make_train_step(models, optimizer, schedule, config, shardings, opt_shardings, mesh, rules):
  """The jitted step: (trainable, opt_state, step, frozen, batch) -> (trainable,
  opt_state, metrics)."""
  accum = config.optimizer.grad_accum_steps
  dropout_base = jax.random.fold_in(jax.random.PRNGKey(config.seed), 99)

  # (summed token loss, target tokens), differentiated in the trainable parts only.
  grad_fn = jax.value_and_grad(
      lambda trainable, frozen, batch, rng: experiment.loss_terms(
          models, {**frozen, **trainable}, batch, rng),
      has_aux=True)

  def step_fn(trainable, opt_state, step, frozen, batch):
    rng = jax.random.fold_in(dropout_base, step)
    if accum == 1:
      (total, weight), grads = grad_fn(trainable, frozen, batch, rng)
    else:
      # Microbatch i takes rows i, i+accum, ...: every device holds part of each.
      micro = jax.tree.map(lambda x: x.reshape((x.shape[0] // accum, accum) + x.shape[1:])
                           .swapaxes(0, 1), batch)

      def body(carry, inputs):
        index, microbatch = inputs
        (t, w), g = grad_fn(trainable, frozen, microbatch, jax.random.fold_in(rng, index))
        return jax.tree.map(jnp.add, carry, (t, w, g)), None

      zeros = (jnp.zeros(()), jnp.zeros(()), jax.tree.map(jnp.zeros_like, trainable))
      (total, weight, grads), _ = jax.lax.scan(body, zeros, (jnp.arange(accum), micro))
    weight = jnp.maximum(weight, 1.0)
    grads = jax.tree.map(lambda g: g / weight, grads)  # mean over the global batch's tokens
    updates, opt_state = optimizer.update(grads, opt_state, trainable)
    trainable = optax.apply_updates(trainable, updates)
    metrics = {"loss": total / weight, "grad_norm": optax.global_norm(grads),
               "learning_rate": jnp.asarray(schedule(step), jnp.float32),
               "target_tokens": weight}
    return trainable, opt_state, metrics

  trainable_sh = {p: shardings[p] for p in models.trainable}
  frozen_sh = {p: shardings[p] for p in models.frozen}
  return jax.jit(
      step_fn,
      in_shardings=(trainable_sh, opt_shardings, partitioning.replicated(mesh), frozen_sh,
                    partitioning.batch_sharding(mesh, rules)),
      out_shardings=(trainable_sh, opt_shardings, partitioning.replicated(mesh)),
      donate_argnums=(0, 1))


def step_key(models, config, mesh, rules) -> tuple:
  """Everything the jitted step closes over (shardings follow from the models, mesh
  and rules): two set-ups with equal keys can share one step."""
  return ("train_step", models, json.dumps(config.optimizer.to_dict(), sort_keys=True),
          config.total_steps, config.seed, mesh, rules)


def setup_train(config, devices=None, step_cache: dict | None = None) -> TrainSetup:
  """Mesh, models, optimizer, abstract state and the jitted step of `config`.

  Raises MeshError (a mesh that does not fit the devices, the batch
  or a parameter) or ConfigError (a bad config value) before anything compiles.
  step_cache: a dict the caller keeps between set-ups that should share jitted steps
  (hypert5.demo trains its stages in one process): a set-up with the same step_key
  gets the step made before, without tracing it again.
  """
  experiment.validate(config)
  # -- Mesh -------------------------------------------------------------------
  mesh = partitioning.make_mesh(config.mesh_shape, config.mesh_axes, devices)
  rules = partitioning.rules_for_mesh(config.logical_axis_rules, mesh)
  check_batch(config, mesh, rules)

  # -- Models and optimizer ---------------------------------------------------
  models = experiment.build_models(config)
  optimizer, schedule = make_optimizer(config.optimizer, config.total_steps)

  # -- Abstract shapes and shardings (nothing allocated yet) -------------------
  shardings, abstract, opt_shardings, opt_abstract = abstract_state(models, optimizer, mesh,
                                                                    rules)
  for part in models.parts:
    check_divisible(part, abstract[part], shardings[part],
                    nn.get_partition_spec(experiment.abstract_params(models, part)), mesh)

  # -- The step ---------------------------------------------------------------
  make_step = lambda: make_train_step(models, optimizer, schedule, config, shardings,
                                      opt_shardings, mesh, rules)
  if step_cache is None:
    step = make_step()
  else:
    key = step_key(models, config, mesh, rules)
    if key not in step_cache:
      step_cache[key] = make_step()
    step = step_cache[key]
  return TrainSetup(config, mesh, rules, models, optimizer, schedule, shardings, abstract,
                    opt_shardings, opt_abstract, step)
