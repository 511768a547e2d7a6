"""PEFT on the frozen T5 (prefix, LoRA), the hypermodel, adapters and HF PEFT parity."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from conftest import forward
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import T5ForConditionalGeneration

from hypert5 import experiment
from hypert5.formats import adapters, hf
from hypert5.model import decoding, hypermodel, t5
from hypert5.model import peft as peft_lib
from hypert5.model.t5_config import SIZES, get_size

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def batch(vocab_size, seed=0, b=3):
  rs = np.random.RandomState(seed)
  enc = rs.randint(3, vocab_size, (b, 10)).astype(np.int32)
  enc[1, 6:] = 0
  dec = rs.randint(3, vocab_size, (b, 7)).astype(np.int32)
  dec[:, 0] = 0
  return enc, dec


def random_phi(peft, cfg, b, seed=0, scale=0.3):
  shapes = peft_lib.phi_shapes(peft, cfg)
  rs = np.random.RandomState(seed)
  return jax.tree.map(lambda s: (scale * rs.randn(b, *s)).astype(np.float32), shapes,
                      is_leaf=lambda x: isinstance(x, tuple))


@pytest.fixture(scope="module")
def peft_adapter(tmp_path_factory, hf_t5_dir):
  """HF T5 + PEFT LoRA on q and v with random nonzero A and B, saved."""
  directory = tmp_path_factory.mktemp("peft")
  torch.manual_seed(7)
  base = T5ForConditionalGeneration.from_pretrained(hf_t5_dir)
  model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q", "v"],
                                          init_lora_weights=False, lora_dropout=0.0,
                                          task_type="SEQ_2_SEQ_LM"))
  model.save_pretrained(str(directory))
  return str(directory), model.eval()


def test_lora_matches_huggingface_peft(hf_t5_dir, peft_adapter):
  directory, reference = peft_adapter
  cfg, params = hf.load_hf_checkpoint(hf_t5_dir)
  peft, phi = adapters.load_adapter(directory, cfg)
  assert peft.lora_targets == ("q", "v") and peft.lora_rank == 4
  assert float(jnp.abs(phi["decoder_cross"]["v"]["b"]).max()) > 0
  enc, dec = batch(cfg.vocab_size)
  ours = forward(t5.T5(cfg, peft), params, enc, dec, phi=phi)
  with torch.no_grad():
    want = reference(input_ids=torch.tensor(enc, dtype=torch.long),
                     attention_mask=torch.tensor(enc != 0, dtype=torch.long),
                     decoder_input_ids=torch.tensor(dec, dtype=torch.long)).logits.numpy()
  np.testing.assert_allclose(np.asarray(ours), want, atol=1e-4, rtol=0)
  plain = forward(t5.T5(cfg), params, enc, dec)
  assert np.abs(np.asarray(plain) - want).max() > 1e-2  # the adapter matters


def test_score_cli_with_adapter_in_both_formats(tmp_path, hf_t5_dir, peft_adapter):
  directory, reference = peft_adapter
  cfg, _ = hf.load_hf_checkpoint(hf_t5_dir)
  peft, phi = adapters.load_adapter(directory, cfg)
  adapters.save_native(str(tmp_path / "native"), phi, peft, cfg)
  lines = [{"inputs": [5, 6, 7, 1], "targets": [8, 9, 1]},
           {"inputs": [10, 11, 1], "targets": [12, 13, 14, 15, 1]}]
  data = tmp_path / "data.jsonl"
  data.write_text("".join(json.dumps(x) + "\n" for x in lines))
  want = []
  for x in lines:
    with torch.no_grad():
      logits = reference(input_ids=torch.tensor([x["inputs"]]),
                         labels=torch.tensor([x["targets"]])).logits[0]
    want.append(float(torch.log_softmax(logits, -1)[torch.arange(len(x["targets"])),
                                                     torch.tensor(x["targets"])].sum()))
  for adapter in (directory, str(tmp_path / "native")):
    result = subprocess.run([sys.executable, "-m", "hypert5.score", f"--checkpoint={hf_t5_dir}",
                             f"--data={data}", f"--adapter={adapter}"], capture_output=True,
                            text=True, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr
    got = [json.loads(line)["log_likelihood"] for line in result.stdout.splitlines()]
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_hypermodel_lora_exports_to_peft(tmp_path, hf_t5_dir):
  """A generated LoRA phi, written as a PEFT adapter, reproduces our log-likelihoods."""
  cfg, params = hf.load_hf_checkpoint(hf_t5_dir)
  peft = peft_lib.PeftConfig("lora", lora_rank=3, lora_alpha=6.0, lora_targets=("q", "v"))
  model = hypermodel.HyperT5(cfg, cfg, peft)
  hyper = hypermodel.init_from_downstream(
      hypermodel.init_params(model, jax.random.PRNGKey(0)), params)
  # Give the B head nonzero weights: at init the update is exactly zero.
  kernel = hyper["lora_b_head"]["output"]["kernel"]
  hyper["lora_b_head"]["output"]["kernel"] = 0.05 * jax.random.normal(
      jax.random.PRNGKey(1), kernel.shape)
  few_shot = np.array([[5, 6, 7, 8, 9, 10, 1]], np.int32)
  phi = jax.jit(model.apply)({"params": hyper}, few_shot)
  adapters.save_hf_peft(str(tmp_path / "adapter"), phi, peft, cfg, hf_t5_dir)
  reference = PeftModel.from_pretrained(T5ForConditionalGeneration.from_pretrained(hf_t5_dir),
                                        str(tmp_path / "adapter")).eval()
  inputs, targets = np.array([[12, 13, 14, 1]]), np.array([[20, 21, 22, 1]])
  ours = decoding.log_likelihood(t5.T5(cfg, peft), params, inputs, targets,
                                 np.ones_like(targets, np.float32), phi)
  with torch.no_grad():
    logits = reference(input_ids=torch.tensor(inputs), labels=torch.tensor(targets)).logits[0]
  theirs = torch.log_softmax(logits, -1)[torch.arange(4), torch.tensor(targets[0])].sum()
  np.testing.assert_allclose(float(ours[0]), float(theirs), atol=1e-4)
  plain = decoding.log_likelihood(t5.T5(cfg), params, inputs, targets,
                                  np.ones_like(targets, np.float32))
  assert abs(float(plain[0]) - float(theirs)) > 1e-3


@pytest.mark.parametrize("peft", [
    peft_lib.PeftConfig("prefix", prefix_length=3),
    peft_lib.PeftConfig("prefix", prefix_length=2, cross_prefix=True),
    peft_lib.PeftConfig("lora", lora_rank=2, lora_targets=("q", "k", "v", "o")),
], ids=["prefix", "prefix_cross", "lora_qkvo"])
def test_per_example_phi_equals_each_example_alone(peft):
  cfg = get_size("tiny")
  params = t5.init_params(cfg, jax.random.PRNGKey(0))
  enc, dec = batch(cfg.vocab_size)
  phi = random_phi(peft, cfg, b=3)
  model = t5.T5(cfg, peft)
  together = forward(model, params, enc, dec, phi=phi)
  for i in range(3):
    row_phi = jax.tree.map(lambda x, i=i: x[i:i + 1], phi)
    alone = forward(model, params, enc[i:i + 1], dec[i:i + 1], phi=row_phi)
    np.testing.assert_allclose(together[i], alone[0], atol=2e-5)
  # One phi broadcast over the batch equals that phi tiled.
  one = jax.tree.map(lambda x: x[1:2], phi)
  broadcast = forward(model, params, enc, dec, phi=one)
  tiled = forward(model, params, enc, dec, phi=jax.tree.map(lambda x: jnp.repeat(x, 3, 0), one))
  np.testing.assert_allclose(broadcast, tiled, atol=1e-6)
  alone = np.asarray(forward(t5.T5(cfg), params, enc, dec))
  assert np.abs(np.asarray(together) - alone).max() > 1e-3


def test_prefix_ignores_padding_and_causality():
  """A prefix is visible to every position: padding keys never hide it."""
  cfg = get_size("tiny")
  peft = peft_lib.PeftConfig("prefix", prefix_length=2)
  params = t5.init_params(cfg, jax.random.PRNGKey(0))
  phi = random_phi(peft, cfg, b=1)
  model = t5.T5(cfg, peft)
  enc = np.array([[5, 6, 7, 1, 0, 0]], np.int32)
  dec = np.array([[0, 9, 10]], np.int32)
  padded = forward(model, params, enc, dec, phi=phi)
  trimmed = forward(model, params, enc[:, :4], dec, phi=phi)
  np.testing.assert_allclose(padded, trimmed, atol=1e-5)
  # The first decoder position (which sees only itself causally) depends on the prefix.
  other = jax.tree.map(lambda x: x + 1.0, phi)
  moved = forward(model, params, enc, dec, phi=other)
  assert np.abs(np.asarray(moved[0, 0]) - np.asarray(padded[0, 0])).max() > 1e-3


def test_zero_lora_is_the_plain_model():
  cfg = get_size("tiny")
  peft = peft_lib.PeftConfig("lora", lora_rank=2)
  params = t5.init_params(cfg, jax.random.PRNGKey(0))
  phi = random_phi(peft, cfg, b=1)
  phi = jax.tree_util.tree_map_with_path(
      lambda path, x: jnp.zeros_like(x) if path[-1].key == "b" else x, phi)
  enc, dec = batch(cfg.vocab_size)
  np.testing.assert_allclose(forward(t5.T5(cfg, peft), params, enc, dec, phi=phi),
                             forward(t5.T5(cfg), params, enc, dec), atol=1e-6)


@pytest.mark.parametrize("kind", ["prefix", "lora"])
def test_only_psi_is_trained(kind):
  """Gradients reach psi through the frozen model; none is computed for the frozen one."""
  cfg = get_size("tiny")
  peft = (peft_lib.PeftConfig("prefix", prefix_length=2) if kind == "prefix"
          else peft_lib.PeftConfig("lora", lora_rank=2))
  frozen = t5.init_params(cfg, jax.random.PRNGKey(0))
  model = hypermodel.HyperT5(cfg, cfg, peft)
  psi = hypermodel.init_from_downstream(hypermodel.init_params(model, jax.random.PRNGKey(1)),
                                        frozen)
  downstream = t5.T5(cfg, peft)
  enc, dec = batch(cfg.vocab_size)
  hyper_tokens = enc[:, ::-1].copy()

  def loss_fn(psi, frozen):
    phi = model.apply({"params": psi}, hyper_tokens)
    logits = downstream.apply({"params": frozen}, enc, dec, phi=phi)
    return -jnp.mean(decoding.token_log_probs(logits, dec))

  optimizer = optax.adamw(1e-3)
  state = optimizer.init(psi)
  frozen_shapes = {(x.shape) for x in jax.tree.leaves(frozen)} - {
      x.shape for x in jax.tree.leaves(psi)}
  for leaf in jax.tree.leaves(state):
    assert leaf.shape not in frozen_shapes or leaf.size == 1
  grad_fn = jax.jit(jax.grad(loss_fn)).lower(psi, frozen).compile()
  grads = grad_fn(psi, frozen)
  assert jax.tree.structure(grads) == jax.tree.structure(psi)
  head = "prefix_head" if kind == "prefix" else "lora_b_head"
  assert float(jnp.abs(grads[head]["output"]["kernel"]).max()) > 0
  assert float(jnp.abs(grads["backbone"]["encoder"]["layers"]["attention"]["query"]
                       ["kernel"]).max()) > 0 or kind == "lora"
  # The frozen LM head [embed, vocab] is an input only: no computation produces a
  # tensor of its shape (its gradient would be one).
  hlo = grad_fn.as_text()
  lm_head_shape = f"f32[{cfg.d_model},{cfg.vocab_size}]"
  producers = [line for line in hlo.splitlines()
               if f"= {lm_head_shape}" in line and "parameter(" not in line]
  assert not producers, producers[:3]


def test_shared_peft_starts_as_plain_lora_and_has_phi_shapes():
  cfg = get_size("tiny")
  for peft in (peft_lib.PeftConfig("prefix", prefix_length=4),
               peft_lib.PeftConfig("lora", lora_rank=2)):
    module = peft_lib.SharedPeft(peft, cfg)
    variables = module.init(jax.random.PRNGKey(0))
    phi = module.apply(variables)
    peft_lib.check_phi(phi, peft, cfg)
    assert jax.tree.leaves(phi)[0].shape[0] == 1
    if peft.kind == "lora":
      assert all(float(jnp.abs(ab["b"]).max()) == 0 for g in phi.values() for ab in g.values())


def test_phi_of_wrong_shape_names_expected_and_given():
  cfg = get_size("tiny")
  peft = peft_lib.PeftConfig("prefix", prefix_length=3)
  phi = {"prefix": jnp.zeros((2, 2, 2, 2, 4, 64))}
  with pytest.raises(ValueError, match=r"phi\['prefix'\]: expected shape \[batch, 2, 2, 2, 3, "
                                       r"64\] for prefix on this model, got \[2, 2, 2, 2, 4, 64\]"):
    peft_lib.check_phi(phi, peft, cfg)
  lora = peft_lib.PeftConfig("lora", lora_rank=2)
  with pytest.raises(ValueError, match=r"phi: expected keys \['decoder_cross', 'decoder_self', "
                                       r"'encoder'\]"):
    peft_lib.check_phi({"encoder": {}}, lora, cfg)


def test_adapter_that_does_not_fit_says_which(tmp_path, hf_t5_dir, peft_adapter):
  directory, _ = peft_adapter
  cfg, _ = hf.load_hf_checkpoint(hf_t5_dir)
  config = json.loads(open(os.path.join(directory, "adapter_config.json")).read())

  def variant(name, **changes):
    target = tmp_path / name
    target.mkdir()
    (target / "adapter_config.json").write_text(json.dumps({**config, **changes}))
    os.link(os.path.join(directory, "adapter_model.safetensors"),
            target / "adapter_model.safetensors")
    return str(target)

  with pytest.raises(adapters.AdapterError, match="has rank 4, but adapter_config.json says r=8"):
    adapters.load_adapter(variant("rank", r=8), cfg)
  with pytest.raises(adapters.AdapterError, match="targets 'v', which adapter_config.json does "
                                                  "not list"):
    adapters.load_adapter(variant("targets", target_modules=["q"]), cfg)
  with pytest.raises(adapters.AdapterError, match="missing .*SelfAttention.k.lora_A"):
    adapters.load_adapter(variant("missing", target_modules=["q", "k", "v"]), cfg)
  bigger = cfg.replace(d_model=48)
  with pytest.raises(adapters.AdapterError, match="the base model needs .*d_model=48"):
    adapters.load_adapter(directory, bigger)
  deeper = cfg.replace(num_encoder_layers=3)
  with pytest.raises(adapters.AdapterError, match="missing 'base_model.model.encoder.block.2"):
    adapters.load_adapter(directory, deeper)
  peft, phi = adapters.load_adapter(directory, cfg)
  adapters.save_native(str(tmp_path / "native"), phi, peft, cfg)
  with pytest.raises(adapters.AdapterError, match="base model has d_model=32, this checkpoint "
                                                  "has d_model=48"):
    adapters.load_adapter(str(tmp_path / "native"), bigger)


@pytest.mark.parametrize("size", ["large", "xl"])
def test_hypert5_shapes_at_scale(size):
  """HyperT5 over T5-Large / T5-XL built abstractly (no allocation)."""
  cfg = SIZES[size]
  counts = {}
  for peft in (peft_lib.PeftConfig("prefix", prefix_length=32),
               peft_lib.PeftConfig("lora", lora_rank=32)):
    variables = jax.eval_shape(experiment.init_fn(hypermodel.HyperT5(cfg, cfg, peft)),
                               jax.random.PRNGKey(0))
    params = jax.tree.map(lambda x: x.value if hasattr(x, "value") else x,
                          variables["params"], is_leaf=lambda x: hasattr(x, "value"))
    counts[peft.kind] = t5.count_params(params)
    backbone = t5.count_params(params["backbone"])
    assert backbone == t5.count_params(t5.param_shapes(cfg)) - cfg.d_model * cfg.vocab_size
  assert counts == EXPECTED_HYPERT5_PARAMS[size]


# Recorded in the README ("Model sizes"); the test recomputes them with eval_shape.
EXPECTED_HYPERT5_PARAMS = {
    "large": {"prefix": 801_746_944, "lora": 886_846_464},
    "xl": {"prefix": 2_989_711_360, "lora": 3_329_779_712},
}
