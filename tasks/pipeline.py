"""SeqIO's own tf.data pipeline of a mixture: one shard of it, as batches.

    ds = get_dataset("embedded_fewshot_train",
                     {"hyper_inputs": 512, "inputs": 64, "targets": 8},
                     split="train", shard_index=jax.process_index(),
                     num_shards=jax.process_count(), seed=0, batch_size=32)

The train loop does not read this (it reads indexed.py's stream over the
example cache); this is the pipeline SeqIO builds for a mixture, for looking at
a mixture's examples in TensorFlow, and `config.data.source=seqio_tfdata`, the
design `hypert5.input_bench` measures the training stream against.

Determinism. The stream is a function of (mixture, lengths, split, seed, shard):
sources shuffle with the seed, few-shot groups follow the stream, seqio's
shuffle buffers and mixture sampling take the seed, and every tf.data stage
keeps its order. Each process reads only its shard (sources.py). Resuming:
rebuild with the same arguments and `ds.skip(num_batches_done)`, which replays
every batch before (P3 streams its files through a Python generator, which
tf.data cannot checkpoint).

Evaluation reads tasks one by one (`hypert5.eval`), not through this function:
each held-out task has one fixed few-shot set, so one phi per task, and the
task says how it is scored (tasks/scoring.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
import seqio
import tensorflow as tf

from hypert5_tasks import feature_converter as converter_lib
from hypert5_tasks import forms


def process_shard() -> tuple[int, int]:
  """(shard_index, num_shards) of this JAX process."""
  return jax.process_index(), jax.process_count()


def get_dataset(mixture_or_task_name: str, task_feature_lengths: Mapping[str, int],
                split: str = "train", *, shard_index: int = 0, num_shards: int = 1,
                seed: int = 0, shuffle: bool = True, pack: bool = False, form: str = "hyper",
                num_epochs: int | None = None, batch_size: int | None = None,
                drop_remainder: bool = True, keep_features: Sequence[str] = ()
                ) -> tf.data.Dataset:
  """Model features of one shard of a mixture (or task), optionally batched.

  form: "hyper", "concat" or "xonly" picks the mixture variant (name + suffix,
  see forms.py); a name that already names a variant is used as is. Variants
  without hyper inputs are converted with `HyperFeatureConverter(hyper_inputs=False)`
  and may be packed. num_epochs: None repeats forever (training); 1 for evaluation.
  """
  name = mixture_or_task_name
  if form != "hyper" and not name.endswith(forms.FORM_SUFFIX[form]):
    name = forms.name_for(name, form)
  provider = seqio.get_mixture_or_task(name)
  has_hyper_inputs = "hyper_inputs" in provider.output_features
  lengths = {k: v for k, v in task_feature_lengths.items()
             if has_hyper_inputs or k != "hyper_inputs"}
  converter = converter_lib.HyperFeatureConverter(
      pack=pack, hyper_inputs=has_hyper_inputs, keep_features=keep_features)
  dataset = provider.get_dataset(
      sequence_length=lengths, split=split, use_cached=False, shuffle=shuffle, seed=seed,
      shard_info=seqio.ShardInfo(index=shard_index, num_shards=num_shards),
      num_epochs=num_epochs)
  dataset = converter(dataset, task_feature_lengths=lengths)
  if batch_size is not None:
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
  return dataset

