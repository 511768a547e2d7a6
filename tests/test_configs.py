"""The paper's T5-Large / T5-XL experiment configs (configs/*.py over hypert5.paper).

Every config file loads with every valid arg and builds its models; full-size
parameter counts come from `jax.eval_shape` (nothing allocated) and are checked
against the public T5 v1.1 counts and the PEFT/hypermodel formulas; the mixtures
they name are registered; XL's tensor-parallel dimensions divide the mesh; bad
args are errors that name the arg.
"""

import functools
import itertools
import os
import re
import types

import flax.linen as nn
import jax
import numpy as np
import pytest

from hypert5 import cli, experiment
from hypert5.experiments import paper
from hypert5.model import partitioning, t5

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCHMARKS, KINDS, SCALES = tuple(paper.BENCHMARKS), paper.KINDS, tuple(paper.SCALES)


def _args(*parts, flags=()):
  """Every combination of the positional parts, alone and with each flag."""
  out = []
  for combo in itertools.product(*parts):
    out.append(",".join(combo))
    out += [",".join(combo + (flag,)) for flag in flags]
  return out


CONFIG_ARGS = {
    "hyperpretrain": _args(KINDS, SCALES),
    "hypert5_mtf": _args(BENCHMARKS, KINDS, SCALES, flags=("nohp",)),
    "hyper_plus": _args(BENCHMARKS, KINDS, SCALES),
    "shared_peft": _args(BENCHMARKS, KINDS, SCALES),
    "t5_mtf": _args(BENCHMARKS, SCALES, flags=("fewshot",)),
}
ALL = [(name, arg) for name, args in CONFIG_ARGS.items() for arg in args]
# Public HuggingFace counts of google/t5-v1_1-{large,xl} (= t5-{large,xl}-lm-adapt).
DOWNSTREAM_PARAMS = {"large": 783_150_080, "xl": 2_849_757_184}


def path_of(name):
  return os.path.join(REPO, "configs", f"{name}.py")


@functools.cache
def load(name, arg=None):
  return cli.load_config(path_of(name), arg)


def scale_of(name, arg):
  return next(p for p in arg.split(",") if p in SCALES)


def test_paper_configs_exist():
  for name in CONFIG_ARGS:
    assert os.path.isfile(path_of(name)), name


@pytest.mark.parametrize("name", sorted(CONFIG_ARGS))
def test_default_arg_loads(name):
  c = load(name)
  assert c.to_dict() == load(name, cli.load_config_module(path_of(name)).DEFAULT_ARG).to_dict()


def test_every_arg_loads_and_builds():
  for name, arg in ALL:
    c = load(name, arg)
    for key in ("total_steps", "checkpoint_every", "log_every", "seed", "mesh_shape",
                "mesh_axes"):
      assert key in c, (name, arg, key)
    scale = paper.SCALES[scale_of(name, arg)]
    assert tuple(c.mesh_shape) == scale.mesh_shape and tuple(c.mesh_axes) == scale.mesh_axes
    assert len(c.mesh_shape) == len(c.mesh_axes)
    assert c.batch_size % c.optimizer.grad_accum_steps == 0
    assert 0 < c.log_every <= c.checkpoint_every <= c.total_steps
    models = experiment.build_models(c)
    assert models.experiment == c.experiment
    if scale.max_steps:  # runlocal
      assert c.batch_size == 8 and c.total_steps == 10 and not c.init.downstream_checkpoint
      continue
    assert c.batch_size == 256 and c.model.dtype == "bfloat16"
    assert c.total_steps == (100_000 if name == "hyperpretrain" else 10_000)
    assert c.optimizer.name == "adafactor" and c.optimizer.learning_rate == 1e-3
    assert c.optimizer.schedule == "constant"
    assert c.init.downstream_checkpoint == f"checkpoints/t5-v1_1-lm-adapt-{scale.size}"
    if experiment.TRAINABLE[c.experiment][1] is not None:
      assert (c.peft.prefix_length, c.peft.lora_rank) == (32, 32)


def test_experiments_and_initialization():
  assert load("t5_mtf", "p3,large").experiment == "t5_mtf"
  c = load("t5_mtf", "p3,large,fewshot")
  assert c.experiment == "t5_mtf_fewshot" and c.data.inputs_length == 1024 + 384
  assert load("shared_peft", "sni_def,lora,xl").experiment == "shared_peft"
  c = load("hypert5_mtf", "metaicl_hr_to_lr,lora,xl")
  assert (c.experiment, c.peft.kind) == ("hyper", "lora")
  assert c.init.hyper_checkpoint == "runs/hyperpretrain_lora_xl"
  assert load("hypert5_mtf", "metaicl_hr_to_lr,lora,xl,nohp").init.hyper_checkpoint == ""
  c = load("hyper_plus", "p3,prefix,large")
  assert c.experiment == "hyper_plus"
  assert c.init.hyper_checkpoint == "runs/hyperpretrain_prefix_large"
  assert load("hyperpretrain", "lora,xl").init.hyper_checkpoint == ""
  assert load("hypert5_mtf", "p3,prefix,runlocal").init.hyper_checkpoint == ""


# -- Full-size parameter counts (eval_shape; nothing allocated) -----------------


@functools.cache
def abstract(name, arg, part):
  models = experiment.build_models(load(name, arg))
  return experiment.abstract_params(models, part)


def count(name, arg, part):
  return t5.count_params(t5.unbox_shapes(abstract(name, arg, part)))


def hyper_params(cfg, kind):
  """Backbone (the downstream T5 less its unused LM head) + decoder inputs + MLP heads."""
  backbone = DOWNSTREAM_PARAMS[cfg.size_name] - cfg.vocab_size * cfg.d_model
  d, layers, inner = cfg.d_model, cfg.num_encoder_layers, cfg.num_heads * cfg.d_kv
  mlp = lambda out: d * d + d + d * out + out  # d -> hidden (= d) -> out, with biases
  if kind == "prefix":  # 2P tokens; one head -> L x (key, value) x H
    return backbone + 2 * 32 * d + mlp(layers * 2 * inner)
  modules = layers + 2 * layers  # encoder self, decoder self, decoder cross
  # 2 tokens per module (A, B); the A and B heads each write q and v: 2 x d x r.
  return backbone + 2 * modules * d + 2 * mlp(2 * d * 32)


def shared_params(cfg, kind):
  layers, inner = cfg.num_encoder_layers, cfg.num_heads * cfg.d_kv
  if kind == "prefix":  # [L, 2 (enc, dec), 2 (k, v), P, H]
    return layers * 2 * 2 * 32 * inner
  return 3 * layers * 2 * (cfg.d_model * 32 + 32 * inner)  # 3 groups x {q, v} x (A + B)


@pytest.mark.parametrize("scale", ["large", "xl"])
def test_full_size_parameter_counts(scale):
  for name, arg, kind in [("t5_mtf", f"p3,{scale}", None),
                          ("hyperpretrain", f"prefix,{scale}", "prefix"),
                          ("hyperpretrain", f"lora,{scale}", "lora"),
                          ("shared_peft", f"p3,prefix,{scale}", "prefix"),
                          ("shared_peft", f"p3,lora,{scale}", "lora")]:
    c = load(name, arg)
    cfg = types.SimpleNamespace(size_name=scale, **c.model)
    parts = experiment.build_models(c).parts
    assert count(name, arg, "downstream") == DOWNSTREAM_PARAMS[scale], (name, arg)
    if "hyper" in parts:
      assert count(name, arg, "hyper") == hyper_params(cfg, kind), (name, arg)
    if "shared" in parts:
      assert count(name, arg, "shared") == shared_params(cfg, kind), (name, arg)
  # The MTF configs build the same models as hyperpretraining (so MTF can restore it).
  for kind in KINDS:
    assert (count("hypert5_mtf", f"sni_def,{kind},{scale}", "hyper")
            == count("hyperpretrain", f"{kind},{scale}", "hyper"))


@pytest.mark.parametrize("arg", ["prefix,xl", "lora,xl"])
def test_xl_sharded_dimensions_divide_the_model_axis(arg):
  """Every parameter dimension the rules put on `model` is a multiple of its size."""
  for name, part in [("hyperpretrain", "hyper"), ("hyperpretrain", "downstream"),
                     ("shared_peft", "shared")]:
    config_arg = arg if name == "hyperpretrain" else f"p3,{arg}"
    c = load(name, config_arg)
    mesh = dict(zip(c.mesh_axes, c.mesh_shape))
    assert mesh["model"] > 1
    fake_mesh = types.SimpleNamespace(axis_names=tuple(c.mesh_axes))
    rules = dict(partitioning.rules_for_mesh(c.logical_axis_rules, fake_mesh))
    tree = abstract(name, config_arg, part)
    specs = nn.get_partition_spec(tree)
    shapes = t5.unbox_shapes(tree)
    checked = 0
    for spec, shape in zip(jax.tree.leaves(specs, is_leaf=lambda x: isinstance(
        x, jax.sharding.PartitionSpec)), jax.tree.leaves(shapes)):
      assert len(spec) == len(shape.shape), (name, part, spec, shape)
      for logical, dim in zip(spec, shape.shape):
        target = rules.get(logical)
        axes = (target,) if isinstance(target, str) else tuple(target or ())
        size = int(np.prod([mesh[a] for a in axes if mesh[a] > 0]))
        assert dim % size == 0, (name, part, logical, dim, size)
        checked += size > 1
    assert checked, (name, part)


# -- Data ---------------------------------------------------------------------


def test_mixtures_are_registered():
  pytest.importorskip("seqio")
  from hypert5_tasks import caclm, forms, scoring
  checked = set()
  for name, arg in ALL:
    c = load(name, arg)
    form = experiment.data_form(c)
    for mixture in (c.data.mixture, c.eval.mixture if name != "hyperpretrain" else None):
      if mixture and (mixture, form) not in checked:
        assert forms.resolve_mixture(mixture, form), (name, arg, mixture)
        checked.add((mixture, form))
    if name != "hyperpretrain":
      # Each evaluation mixture declares its benchmark (how its results add up).
      assert scoring.benchmark_of(c.eval.mixture).name == c.eval.mixture.split("_")[0]
  assert ("p3_t0_train", "concat") in checked and ("sni_def_pos2_test", "xonly") in checked
  # The CACLM lengths hold a whole C4 span: A <sep> D + EOS, B + EOS, C + EOS.
  c, layout = load("hyperpretrain", "prefix,large"), caclm.C4_LAYOUT
  assert c.data.mixture == caclm.C4_TASK
  assert c.data.hyper_inputs_length >= layout.a + 1 + layout.d + 1
  assert c.data.inputs_length >= layout.b + 1 and c.data.targets_length >= layout.c + 1


# -- The command line ---------------------------------------------------------


def _parse_flags(argv):
  """FLAGS.config as `python -m hypert5.train ARGV` would see it."""
  from absl import flags
  from ml_collections import config_flags
  values = flags.FlagValues()
  # The override flags (--config.KEY) exist once the config file is known: from sys_argv.
  config_flags.DEFINE_config_file("config", None, "", flag_values=values, lock_config=True,
                                  sys_argv=["prog", *argv])
  values(["prog", *argv])
  return values.config


def test_absl_config_flag_takes_the_arg_and_overrides():
  c = _parse_flags([f"--config={path_of('t5_mtf')}:metaicl_non_nli_to_nli,xl,fewshot",
                    "--config.init.downstream_checkpoint=/ckpt/xl",
                    "--config.optimizer.grad_accum_steps=8"])
  assert (c.experiment, c.data.mixture) == ("t5_mtf_fewshot", "metaicl_non_nli_to_nli_train")
  assert c.init.downstream_checkpoint == "/ckpt/xl" and c.optimizer.grad_accum_steps == 8
  with pytest.raises(Exception, match="'lr'"):  # a typo is an error, not a new key
    _parse_flags([f"--config={path_of('t5_mtf')}:p3,large", "--config.optimizer.lr=1"])


def test_docstring_commands_are_valid():
  for name in CONFIG_ARGS:
    module = cli.load_config_module(path_of(name))
    doc = module.__doc__
    assert f"python -m hypert5.train --config=configs/{name}.py:" in doc, name
    assert "python -m hypert5.eval --config=configs/" in doc, name
    for config, arg in re.findall(r"--config=configs/(\w+)\.py:([\w,]+)", doc):
      assert (config, arg) in set(ALL), (name, config, arg)


BAD_ARGS = [
    ("hyperpretrain", "prefx,large",
     r"kind 'prefx' in arg 'prefx,large' is not one of prefix, lora"),
    ("hyperpretrain", "prefix,xxl", r"scale 'xxl' .* large, xl, runlocal"),
    ("hyperpretrain", "prefix", r"arg 'prefix' has 1 part\(s\); expected KIND,SCALE"),
    ("hyperpretrain", "prefix,large,nohp", r"unknown flag 'nohp' .* flags: none"),
    ("hypert5_mtf", "p4,prefix,large", r"benchmark 'p4' .* p3, metaicl_hr_to_lr"),
    ("hypert5_mtf", "metaicl,prefix,large", r"benchmark 'metaicl' in arg"),
    ("hypert5_mtf", "p3,large,prefix", r"kind 'large' in arg 'p3,large,prefix'"),
    ("hypert5_mtf", "p3,prefix,large,hp", r"unknown flag 'hp' .* flags: nohp"),
    ("hypert5_mtf", "p3,prefix,large,nohp,nohp", r"repeated in arg"),
    ("hyper_plus", "sni_def,lora", r"expected BENCHMARK,KIND,SCALE"),
    ("shared_peft", "sni_pos2,lora,xl", r"benchmark 'sni_pos2'"),
    ("t5_mtf", "p3,prefix,large", r"scale 'prefix' in arg 'p3,prefix,large'"),
    ("t5_mtf", "p3,xl,few_shot", r"unknown flag 'few_shot' .* flags: fewshot"),
]


@pytest.mark.parametrize("name,arg,match", BAD_ARGS)
def test_bad_args_name_the_arg(name, arg, match):
  with pytest.raises(ValueError, match=match) as info:
    cli.load_config(path_of(name), arg)
  assert f"configs/{name}.py" in str(info.value)


def test_demo_config_benchmark_flags_switch_every_mixture():
  from hypert5_tasks import embedded_benchmarks, embedded_fewshot, embedded_icl
  demo = os.path.join(REPO, "configs", "demo.py")
  module = cli.load_config_module(demo)  # TF-free: it names the benchmarks, not imports them
  assert module.BENCHMARK == embedded_icl.BenchmarkConfig().name
  assert module.RULES_BENCHMARK == embedded_fewshot.BenchmarkConfig().name
  assert module.CONTROL_BENCHMARK == embedded_benchmarks.by_flag("control").name
  # Each benchmark of the table under its flag, as the commands pass it.
  assert module.BENCHMARKS == {b.flag: b.name for b in embedded_benchmarks.BENCHMARKS.values()}
  for benchmark in embedded_benchmarks.BENCHMARKS.values():
    flags = f",{benchmark.flag}" if benchmark.flag else ""
    config = cli.load_config(demo, "mtf_prefix" + flags)
    assert (config.data.mixture, config.eval.mixture) == (benchmark.train_mixture,
                                                          benchmark.test_mixture)
    finetune = cli.load_config(demo, "peft_finetune" + flags)
    assert finetune.data.mixture in benchmark.heldout_task_names()
  for stage in module.STAGES + ("peft_finetune",):
    plain = cli.load_config(demo, stage)
    rules, control = (cli.load_config(demo, f"{stage},{flag}") for flag in ("rules", "control"))
    for key in ("data", "eval"):
      mixture = control[key].mixture
      if mixture.startswith("embedded_constant"):
        assert rules[key].mixture == mixture.replace("embedded_constant", "embedded_fewshot")
        assert plain[key].mixture.startswith("embedded_icl")
      else:  # the stages before MTF read the same corpus on the rules benchmarks
        assert rules[key].mixture == mixture
    if stage != "lm":  # the in-context benchmark's held-out tasks are short
      assert (plain.data.hyper_inputs_length, plain.data.inputs_length) == (
          module.ICL_SHOTS_LENGTH, 8 if stage != "t5_mtf_fewshot" else module.ICL_SHOTS_LENGTH + 12)
  assert cli.load_config(demo, "lm").data.mixture == "embedded_icl_skills"
  # MTF is evaluated along the way (the learning curves), hyperpretraining is not.
  assert cli.load_config(demo, "mtf_prefix").eval_every > 0
  assert cli.load_config(demo, "hyperpretrain_prefix").eval_every == 0
  with pytest.raises(ValueError, match="quik"):
    cli.load_config(demo, "mtf_prefix,quik")
  with pytest.raises(ValueError, match="control and rules"):
    cli.load_config(demo, "mtf_prefix,control,rules")
