"""Optimizers: frozen parameters (optimizer.freeze) keep their value through training."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import Mesh

from hypert5 import experiment
from hypert5.model import partitioning
from hypert5.training import optim


def config(**overrides):
  c = experiment.default_config().optimizer
  c.name, c.learning_rate, c.weight_decay = "adamw", 0.1, 0.01
  c.update(overrides)
  return c


PARAMS = {"hyper": {"backbone": {"token_embedder": {"embedding": jnp.ones((8, 4))},
                                 "layers": {"kernel": jnp.ones((4, 4))}}}}


def test_frozen_parameters_get_no_update_and_no_state():
  optimizer, _ = optim.make_optimizer(config(freeze=".*token_embedder.*"), total_steps=10)
  state = optimizer.init(PARAMS)
  grads = jax.tree.map(jnp.ones_like, PARAMS)
  updates, state = optimizer.update(grads, state, PARAMS)
  params = optax.apply_updates(PARAMS, updates)
  np.testing.assert_array_equal(params["hyper"]["backbone"]["token_embedder"]["embedding"], 1.0)
  assert np.all(params["hyper"]["backbone"]["layers"]["kernel"] < 1.0)
  # Adam's moments exist for the trained kernel only.
  moments = [x.shape for x in jax.tree.leaves(state) if getattr(x, "ndim", 0) == 2]
  assert moments == [(4, 4), (4, 4)]


def test_frozen_optimizer_state_has_shardings():
  optimizer, _ = optim.make_optimizer(config(freeze="hyper/backbone/token_embedder/.*"), 10)
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), PARAMS)
  mesh = Mesh(np.array(jax.devices()[:1]), ("data",))
  shardings = jax.tree.map(lambda _: partitioning.replicated(mesh), abstract)
  state = jax.eval_shape(optimizer.init, abstract)
  state_shardings = partitioning.optimizer_state_shardings(optimizer, state, abstract,
                                                           shardings, mesh)
  assert jax.tree.structure(state_shardings) == jax.tree.structure(state)


def test_without_freeze_every_parameter_trains():
  optimizer, _ = optim.make_optimizer(config(), 10)
  updates, _ = optimizer.update(jax.tree.map(jnp.ones_like, PARAMS), optimizer.init(PARAMS),
                                PARAMS)
  assert all(np.all(u != 0) for u in jax.tree.leaves(updates))


def test_freeze_that_is_not_a_regex_is_an_error():
  with pytest.raises(ValueError, match=r"optimizer.freeze='\(': not a regular expression"):
    optim.make_optimizer(config(freeze="("), 10)


def test_train_with_frozen_embeddings_saves_resumes_and_keeps_them(tmp_path):
  """Through hypert5.train: the masked optimizer state checkpoints and resumes,
  and the hypermodel's token embeddings are the same at every step."""
  from hypert5 import cli, experiment
  from hypert5.formats import checkpoints
  from hypert5.model import t5
  from hypert5.training import loop as train
  c = cli.load_config("configs/tiny.py")
  c.data.source = "synthetic"
  c.optimizer.freeze = ".*token_embedder.*"
  c.total_steps, c.checkpoint_every, c.log_every = 2, 2, 1
  train.train(c, str(tmp_path))
  c.total_steps = 4
  train.train(c, str(tmp_path))  # resumes from step 2
  abstract = t5.unbox_shapes(experiment.abstract_params(experiment.build_models(c), "hyper"))
  at = {s: checkpoints.restore_part(str(tmp_path), "hyper", abstract, step=s) for s in (2, 4)}
  embedding = lambda p: p["backbone"]["token_embedder"]["embedding"]
  np.testing.assert_array_equal(embedding(at[2]), embedding(at[4]))
  kernel = lambda p: p["prefix_head"]["output"]["kernel"]
  assert not np.allclose(kernel(at[2]), kernel(at[4]))
