"""The PEFT baselines (paper section 5): one prefix (prefix tuning) or one LoRA
shared by every training task, trained multi-task on the frozen T5 v1.1
LM-adapted model. The downstream model reads the query alone (no few-shot
examples), as in the paper's prefix-tuning and LoRA rows.

Same data, lengths and schedule as configs/hypert5_mtf.py (10k steps of 256,
Adafactor 1e-3 constant); P = 32, r = 32. The shared phi starts random.

arg: BENCHMARK,KIND,SCALE
  BENCHMARK: p3 | metaicl_hr_to_lr | metaicl_non_nli_to_nli | metaicl_non_class_to_class
             | sni_def | sni_def_pos2
  KIND: prefix | lora        SCALE: large | xl | runlocal

  python -m hypert5.train --config=configs/shared_peft.py:p3,lora,large \
      --workdir=runs/shared_peft_p3_lora_large
  python -m hypert5.eval --config=configs/shared_peft.py:p3,lora,large \
      --checkpoint=runs/shared_peft_p3_lora_large

runlocal: python -m hypert5.train --config=configs/shared_peft.py:p3,prefix,runlocal \
    --workdir=/tmp/shared_peft_runlocal [--config.data.source=synthetic]
"""

from hypert5.experiments import paper

DEFAULT_ARG = "p3,prefix,large"


def get_config(arg=None):
  a = paper.parse_arg(arg or DEFAULT_ARG, "configs/shared_peft.py",
                      (("benchmark", tuple(paper.BENCHMARKS)), ("kind", paper.KINDS),
                       ("scale", tuple(paper.SCALES))))
  c = paper.base_config(a["scale"], total_steps=paper.MTF_STEPS)
  c.experiment = "shared_peft"
  c.peft.kind = a["kind"]
  paper.set_benchmark(c, a["benchmark"])
  c.init.peft = "random"
  return c
