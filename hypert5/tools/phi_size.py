"""How big phi is, beside the key/value cache that few-shot concatenation needs.

  python -m hypert5.phi_size [--prefix_lengths=16,32] [--lora_ranks=8,32]
      [--examples=16] [--tokens_per_example=64] [--bytes_per_value=2]

The paper's section 5.4 argument: a hypermodel turns the few-shot examples into
phi once; a few-shot-concatenation model must keep (or recompute) the examples'
keys and values for every query. For T5 (encoder-decoder) that cache is the
cross-attention keys and values of the encoded examples in every decoder layer:
2 x L_dec x (examples x tokens_per_example) x heads x d_kv values.
"""

from __future__ import annotations

from absl import flags

from hypert5 import cli
from hypert5.model import peft as peft_lib
from hypert5.model.t5_config import SIZES


def define_flags() -> None:
  flags.DEFINE_list("sizes", ["small", "base", "large", "xl", "xxl"], "Model sizes.")
  flags.DEFINE_list("prefix_lengths", ["16", "32"], "Prefix lengths P.")
  flags.DEFINE_list("lora_ranks", ["8", "32"], "LoRA ranks r (targets q and v).")
  flags.DEFINE_integer("examples", 16, "Few-shot examples concatenated.")
  flags.DEFINE_integer("tokens_per_example", 64, "Average tokens per example (input + output).")
  flags.DEFINE_integer("bytes_per_value", 2, "2 for bf16, 4 for fp32.")


FLAGS = flags.FLAGS


def few_shot_kv_values(cfg, num_tokens: int) -> int:
  """Cross-attention keys and values of `num_tokens` encoded tokens, all decoder layers."""
  return 2 * cfg.num_decoder_layers * num_tokens * cfg.joined_kv


def rows(sizes, prefix_lengths, lora_ranks, examples, tokens_per_example, bytes_per_value):
  """Yields one dict per (size, PEFT setting)."""
  for size in sizes:
    cfg = SIZES[size]
    kv = few_shot_kv_values(cfg, examples * tokens_per_example)
    settings = ([peft_lib.PeftConfig("prefix", prefix_length=int(p)) for p in prefix_lengths]
                + [peft_lib.PeftConfig("lora", lora_rank=int(r)) for r in lora_ranks])
    for peft in settings:
      n = peft_lib.num_phi_params(peft, cfg)
      yield {"size": size, "peft": peft.kind,
             "setting": (f"P={peft.prefix_length}" if peft.kind == "prefix"
                         else f"r={peft.lora_rank}"),
             "phi_params": n, "phi_bytes": n * bytes_per_value,
             "few_shot_kv_bytes": kv * bytes_per_value, "ratio": kv / n}


def format_table(table) -> str:
  mb = lambda b: f"{b / 2**20:,.1f}"
  lines = ["| T5 | PEFT | setting | phi params | phi MiB | few-shot KV MiB | KV / phi |",
           "|---|---|---|---:|---:|---:|---:|"]
  for r in table:
    lines.append(f"| {r['size']} | {r['peft']} | {r['setting']} | {r['phi_params']:,} | "
                 f"{mb(r['phi_bytes'])} | {mb(r['few_shot_kv_bytes'])} | {r['ratio']:.1f}x |")
  return "\n".join(lines)


def main(argv):
  del argv
  table = list(rows(FLAGS.sizes, FLAGS.prefix_lengths, FLAGS.lora_ranks, FLAGS.examples,
                    FLAGS.tokens_per_example, FLAGS.bytes_per_value))
  print(f"phi against the cross-attention key/value cache of {FLAGS.examples} few-shot "
        f"examples x {FLAGS.tokens_per_example} tokens, {FLAGS.bytes_per_value} bytes/value:")
  print(format_table(table))


def run_command() -> None:
  """`python -m hypert5.phi_size`."""
  cli.run(main, define_flags)


if __name__ == "__main__":
  run_command()
