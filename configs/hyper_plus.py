"""HyperT5+ (paper section 5): HyperT5 multi-task fine-tuning in which the
downstream T5 v1.1 LM-adapted model trains too, with the hypermodel.

Same data, lengths and schedule as configs/hypert5_mtf.py; the hypermodel
starts from runs/hyperpretrain_{KIND}_{SCALE}, the downstream model from the
converted LM-adapted checkpoint. Evaluation uses the run's own downstream
parameters.

arg: BENCHMARK,KIND,SCALE
  BENCHMARK: p3 | metaicl_hr_to_lr | metaicl_non_nli_to_nli | metaicl_non_class_to_class
             | sni_def | sni_def_pos2
  KIND: prefix | lora        SCALE: large | xl | runlocal

  python -m hypert5.train --config=configs/hyper_plus.py:p3,prefix,large \
      --workdir=runs/hyper_plus_p3_prefix_large
  python -m hypert5.eval --config=configs/hyper_plus.py:p3,prefix,large \
      --checkpoint=runs/hyper_plus_p3_prefix_large

Another hyperpretraining run: --config.init.hyper_checkpoint=WORKDIR.
runlocal: python -m hypert5.train --config=configs/hyper_plus.py:p3,lora,runlocal \
    --workdir=/tmp/hyper_plus_runlocal [--config.data.source=synthetic]
"""

from hypert5.experiments import paper

DEFAULT_ARG = "p3,prefix,large"


def get_config(arg=None):
  a = paper.parse_arg(arg or DEFAULT_ARG, "configs/hyper_plus.py",
                      (("benchmark", tuple(paper.BENCHMARKS)), ("kind", paper.KINDS),
                       ("scale", tuple(paper.SCALES))))
  c = paper.base_config(a["scale"], total_steps=paper.MTF_STEPS)
  c.experiment = "hyper_plus"
  c.peft.kind = a["kind"]
  paper.set_benchmark(c, a["benchmark"])
  paper.set_hyperpretrained(c, a["kind"], a["scale"])
  return c
