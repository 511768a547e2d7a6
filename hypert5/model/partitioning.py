"""Device mesh and logical-axis rules: how the model's axis names map onto devices.

Every parameter and main activation carries logical axis names (t5x's
vocabulary plus a few for PEFT); a short list of rules in the config maps them
onto the mesh axes `data`, `fsdp` and `model`. Rules that name a mesh axis the
mesh does not have are dropped, so one rule list serves every mesh.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import numpy as np
import optax
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from hypert5.errors import MeshError

MESH_AXES = ("data", "fsdp", "model")

# logical axis -> mesh axes (first match wins). Batch is split over data and
# fsdp; parameters over fsdp (ZeRO-3 style) on embed and over model (tensor
# parallel) on heads/mlp/vocab.
DEFAULT_RULES: tuple[tuple[str, object], ...] = (
    ("batch", ("data", "fsdp")),
    ("vocab", "model"),
    ("embed", "fsdp"),
    ("mlp", "model"),
    ("heads", "model"),
    ("joined_kv", "model"),
    ("hyper_out", "model"),
    ("kv", None),
    ("length", None),
    ("layers", None),
    ("relpos_buckets", None),
    ("prefix", None),
    ("lora_rank", None),
    ("hyper_tokens", None),
)


def make_mesh(mesh_shape: Sequence[int], mesh_axes: Sequence[str],
              devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A Mesh over all devices; one -1 in `mesh_shape` takes what remains."""
  devices = list(devices if devices is not None else jax.devices())
  mesh_shape, mesh_axes = tuple(int(s) for s in mesh_shape), tuple(mesh_axes)
  if len(mesh_shape) != len(mesh_axes):
    raise MeshError(f"mesh_shape {mesh_shape} and mesh_axes {mesh_axes} differ in length")
  unknown = [a for a in mesh_axes if a not in MESH_AXES]
  if unknown or len(set(mesh_axes)) != len(mesh_axes):
    raise MeshError(f"mesh_axes {mesh_axes} must be distinct names among {MESH_AXES}")
  if mesh_shape.count(-1) > 1 or any(s == 0 or s < -1 for s in mesh_shape):
    raise MeshError(f"mesh_shape {mesh_shape}: positive sizes and at most one -1")
  known = math.prod(s for s in mesh_shape if s != -1)
  if -1 in mesh_shape:
    if len(devices) % known:
      raise MeshError(f"mesh_shape {mesh_shape} does not divide the {len(devices)} devices")
    mesh_shape = tuple(len(devices) // known if s == -1 else s for s in mesh_shape)
  if math.prod(mesh_shape) != len(devices):
    raise MeshError(f"mesh_shape {mesh_shape} needs {math.prod(mesh_shape)} devices, but "
                    f"{len(devices)} are available ({devices[0].platform}); use sizes whose "
                    f"product is {len(devices)}, or -1 for one axis to take what remains")
  try:
    # Topology-aware order on TPU/GPU (ICI rings); plain order elsewhere.
    grid = mesh_utils.create_device_mesh(mesh_shape, devices=devices)
  except (ValueError, NotImplementedError, AssertionError):
    grid = np.asarray(devices).reshape(mesh_shape)
  return Mesh(grid, mesh_axes)


def rules_for_mesh(rules, mesh: Mesh) -> tuple[tuple[str, object], ...]:
  """Drops the mesh axes a rule names that this mesh lacks."""
  present = set(mesh.axis_names)
  out = []
  for logical, target in rules:
    if target is None:
      out.append((logical, None))
      continue
    axes = (target,) if isinstance(target, str) else tuple(target)
    axes = tuple(a for a in axes if a in present)
    out.append((logical, axes[0] if len(axes) == 1 else (axes or None)))
  return tuple(out)


def logical_to_sharding(logical_specs, mesh: Mesh, rules):
  """Tree of logical PartitionSpecs -> tree of NamedShardings on `mesh`."""
  return nn.logical_to_mesh_sharding(logical_specs, mesh, rules_for_mesh(rules, mesh))


def batch_sharding(mesh: Mesh, rules, ndim: int = 2) -> NamedSharding:
  """Sharding of a [batch, ...] input array: batch over the data-parallel axes."""
  spec = nn.logical_to_mesh_axes(("batch",) + (None,) * (ndim - 1), rules_for_mesh(rules, mesh))
  return NamedSharding(mesh, spec)


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, PartitionSpec())


def data_parallel_size(mesh: Mesh, rules) -> int:
  """How many ways the batch is split."""
  spec = batch_sharding(mesh, rules).spec[0]
  axes = (spec,) if isinstance(spec, str) else tuple(spec or ())
  return math.prod(mesh.shape[a] for a in axes)


def optimizer_state_shardings(optimizer, abstract_state, abstract_params, param_shardings,
                              mesh: Mesh):
  """Shardings of an optimizer state from those of its parameters.

  Leaves that copy a parameter's shape (Adam's moments) take its sharding;
  factored leaves (Adafactor's row/column statistics) take it minus the reduced
  axis; everything else (step counts) is replicated.
  """

  def leaf_sharding(state_leaf, param, sharding):
    if isinstance(state_leaf, optax.MaskedNode):  # a frozen parameter has no state
      return state_leaf
    shape, spec = tuple(state_leaf.shape), tuple(sharding.spec) + (None,) * (
        len(param.shape) - len(sharding.spec))
    if shape == tuple(param.shape):
      return sharding
    for axis in range(len(param.shape)):  # one axis reduced away
      if shape == tuple(param.shape[:axis] + param.shape[axis + 1:]):
        return NamedSharding(mesh, PartitionSpec(*(spec[:axis] + spec[axis + 1:])))
    return replicated(mesh)

  shardings = optax.tree_map_params(
      optimizer, leaf_sharding, abstract_state, abstract_params, param_shardings,
      transform_non_params=lambda _: replicated(mesh),
      is_leaf=lambda x: isinstance(x, (jax.ShapeDtypeStruct, optax.MaskedNode)))
  # Anything optax left as a non-sharding (e.g. empty states) is replicated.
  return jax.tree.map(lambda s: s if isinstance(s, NamedSharding) else replicated(mesh),
                      shardings, is_leaf=lambda x: isinstance(x, NamedSharding))
