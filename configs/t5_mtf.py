"""The full fine-tuning baselines (paper section 5): T5-MTF and T5-MTF-Few-shot.

Every parameter of the T5 v1.1 LM-adapted model trains, multi-task, for 10k
steps of 256 examples (Adafactor 1e-3 constant), no hypermodel.
  T5-MTF            the input is the query alone (384 tokens).
  T5-MTF-Few-shot   (,fewshot) the input is the few-shot examples (S-NI: the
                    definition and examples), then the query, concatenated:
                    1408 tokens = HyperT5's 1024 + 384, so it sees what HyperT5's
                    two models see together; examples are dropped whole until the
                    query fits.

arg: BENCHMARK,SCALE[,fewshot]
  BENCHMARK: p3 | metaicl_hr_to_lr | metaicl_non_nli_to_nli | metaicl_non_class_to_class
             | sni_def | sni_def_pos2
  SCALE: large | xl | runlocal

  python -m hypert5.train --config=configs/t5_mtf.py:p3,large --workdir=runs/t5_mtf_p3_large
  python -m hypert5.eval --config=configs/t5_mtf.py:p3,large --checkpoint=runs/t5_mtf_p3_large
  python -m hypert5.train --config=configs/t5_mtf.py:p3,xl,fewshot \
      --workdir=runs/t5_mtf_fewshot_p3_xl
  python -m hypert5.eval --config=configs/t5_mtf.py:p3,xl,fewshot \
      --checkpoint=runs/t5_mtf_fewshot_p3_xl

The zero-shot LM-adapted model itself (no training) is evaluated with
--checkpoint=checkpoints/t5-v1_1-lm-adapt-large (a plain T5 checkpoint).
runlocal: python -m hypert5.train --config=configs/t5_mtf.py:p3,runlocal,fewshot \
    --workdir=/tmp/t5_mtf_runlocal [--config.data.source=synthetic]
"""

from hypert5.experiments import paper

DEFAULT_ARG = "p3,large"


def get_config(arg=None):
  a = paper.parse_arg(arg or DEFAULT_ARG, "configs/t5_mtf.py",
                      (("benchmark", tuple(paper.BENCHMARKS)), ("scale", tuple(paper.SCALES))),
                      flags=("fewshot",))
  c = paper.base_config(a["scale"], total_steps=paper.MTF_STEPS)
  paper.set_benchmark(c, a["benchmark"])
  if a["fewshot"]:
    c.experiment = "t5_mtf_fewshot"
    c.data.inputs_length = c.data.hyper_inputs_length + c.data.inputs_length
  else:
    c.experiment = "t5_mtf"
  return c
