"""HyperT5-Prefix / HyperT5-LoRA multi-task fine-tuning (paper section 5): the
hypermodel trains, the downstream T5 v1.1 LM-adapted model stays frozen.

Each example's hypermodel input is up to 16 few-shot examples of its task
(1024 tokens; S-NI: the definition, and for def_pos2 two positive examples);
the downstream model reads the query (384 tokens). 10k steps of 256 examples,
starting from the hyperpretrained hypermodel of the same KIND and SCALE.

arg: BENCHMARK,KIND,SCALE[,nohp]
  BENCHMARK: p3 | metaicl_hr_to_lr | metaicl_non_nli_to_nli | metaicl_non_class_to_class
             | sni_def | sni_def_pos2
             | custom: your own mixture, --config.data.mixture=NAME_train (evaluated
               on NAME_test; README "Your own tasks"); with runlocal the model's
               vocabulary is sized from the mixture's (model.vocab_size=0)
  KIND: prefix | lora        SCALE: large | xl | runlocal
  nohp: no hyperpretraining (the hypermodel starts as a copy of the downstream
        T5; the section 5.5 ablation)

  python -m hypert5.train --config=configs/hypert5_mtf.py:p3,prefix,large \
      --workdir=runs/hypert5_mtf_p3_prefix_large
  python -m hypert5.eval --config=configs/hypert5_mtf.py:p3,prefix,large \
      --checkpoint=runs/hypert5_mtf_p3_prefix_large

The hypermodel starts from runs/hyperpretrain_{KIND}_{SCALE} (configs/hyperpretrain.py's
workdir); another run with --config.init.hyper_checkpoint=WORKDIR, e.g.

  python -m hypert5.train --config=configs/hypert5_mtf.py:metaicl_hr_to_lr,lora,xl \
      --workdir=runs/hypert5_mtf_metaicl_hr_to_lr_lora_xl \
      --config.init.hyper_checkpoint=/big/runs/hyperpretrain_lora_xl/checkpoints/50000

Evaluation: P3 by rank classification on p3_heldout_score_eval; MetaICL by
generation on metaicl_{split}_test (5 seeds); S-NI by ROUGE-L on sni_{setting}_test.
--save_phi=DIR (hypert5.eval) keeps each task's generated phi.

runlocal (tiny T5 with T5's vocabulary, random init, batch 8, 10 steps; the
benchmark's data must be present, or add --config.data.source=synthetic):

  python -m hypert5.train --config=configs/hypert5_mtf.py:sni_def,prefix,runlocal \
      --workdir=/tmp/hypert5_mtf_runlocal
"""

from hypert5.experiments import paper

DEFAULT_ARG = "p3,prefix,large"
CUSTOM = "custom"


def get_config(arg=None):
  a = paper.parse_arg(arg or DEFAULT_ARG, "configs/hypert5_mtf.py",
                      (("benchmark", tuple(paper.BENCHMARKS) + (CUSTOM,)),
                       ("kind", paper.KINDS), ("scale", tuple(paper.SCALES))), flags=("nohp",))
  c = paper.base_config(a["scale"], total_steps=paper.MTF_STEPS)
  c.experiment = "hyper"
  c.peft.kind = a["kind"]
  if a["benchmark"] == CUSTOM:
    # Every benchmark's lengths and split; the mixture is the user's
    # (--config.data.mixture; hypert5.eval then reads its _test twin).
    paper.set_benchmark(c, "p3")
    c.data.mixture = c.eval.mixture = ""
    if not c.init.downstream_checkpoint:  # runlocal: sized from the user's vocabulary
      c.model.vocab_size = 0
  else:
    paper.set_benchmark(c, a["benchmark"])
  paper.set_hyperpretrained(c, a["kind"], a["scale"], hyperpretrained=not a["nohp"])
  return c
