"""HyperFeatureConverter: task features -> the features the hypermodel and T5 read.

  hyper_encoder_input_tokens  [B, Lh] int32  hypermodel encoder input (task hyper_inputs)
  encoder_input_tokens        [B, Le] int32  downstream encoder input (task inputs)
  decoder_input_tokens        [B, Ld] int32  targets shifted right, 0 as the start token
  decoder_target_tokens       [B, Ld] int32  task targets
  decoder_loss_weights        [B, Ld] float32  1.0 on real target tokens (EOS included)
Packed (pack=True) it adds, in seqio's conventions (segment ids start at 1, 0 is padding):
  encoder_segment_ids, encoder_positions, decoder_segment_ids, decoder_positions  [B, L] int32

Task feature lengths are keyed `hyper_inputs`, `inputs`, `targets`.

Packing is refused while hyper inputs are used: every row carries its own
phi, generated from its own hyper input, so two examples of different tasks
cannot share a row. `hyper_inputs=False` drops the hyper inputs (tasks may
still carry them) for the downstream-only stages (LM pretraining of the small
T5, the T5-MTF baselines), which may pack.

`keep_features` passes scalar task metadata through to the batch (e.g.
task_name for an evaluator that groups rows by task); not with packing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import seqio
import tensorflow as tf

FeatureSpec = seqio.FeatureConverter.FeatureSpec

# Scalar features that may be kept (their dtype): task metadata.
KEEPABLE_FEATURES = {
    "task_name": tf.string,
    "label": tf.int32,
}


class HyperFeatureConverter(seqio.FeatureConverter):
  """Feature converter for a hypermodel plus a downstream encoder-decoder."""

  TASK_FEATURES = {
      "hyper_inputs": FeatureSpec(dtype=tf.int32),
      "inputs": FeatureSpec(dtype=tf.int32),
      "targets": FeatureSpec(dtype=tf.int32),
  }
  MODEL_FEATURES = {
      "hyper_encoder_input_tokens": FeatureSpec(dtype=tf.int32),
      "encoder_input_tokens": FeatureSpec(dtype=tf.int32),
      "decoder_input_tokens": FeatureSpec(dtype=tf.int32),
      "decoder_target_tokens": FeatureSpec(dtype=tf.int32),
      "decoder_loss_weights": FeatureSpec(dtype=tf.float32),
  }
  PACKING_FEATURE_DTYPES = {
      "encoder_segment_ids": tf.int32,
      "encoder_positions": tf.int32,
      "decoder_segment_ids": tf.int32,
      "decoder_positions": tf.int32,
  }

  def __init__(self, pack: bool = False, hyper_inputs: bool = True,
               keep_features: Sequence[str] = (), use_custom_packing_ops: bool = False,
               apply_length_check: bool = True, bos_id: int = 0):
    if pack and hyper_inputs:
      raise ValueError(
          "HyperFeatureConverter cannot pack examples that have hyper inputs: each row "
          "carries the phi generated from its own hyper input, so rows cannot mix tasks. "
          "Use pack=False, or hyper_inputs=False for downstream-only training.")
    unknown = sorted(set(keep_features) - set(KEEPABLE_FEATURES))
    if unknown:
      raise ValueError(f"cannot keep features {unknown}; keepable: {sorted(KEEPABLE_FEATURES)}")
    if pack and keep_features:
      raise ValueError("keep_features holds per-example values; it cannot be used with pack=True")
    self._hyper_inputs = hyper_inputs
    self._keep_features = tuple(keep_features)
    # Instance-level specs: the mode decides which features exist.
    self.TASK_FEATURES = {k: v for k, v in type(self).TASK_FEATURES.items()
                          if hyper_inputs or k != "hyper_inputs"}
    model_features = {k: v for k, v in type(self).MODEL_FEATURES.items()
                      if hyper_inputs or k != "hyper_encoder_input_tokens"}
    for name in self._keep_features:
      model_features[name] = FeatureSpec(dtype=KEEPABLE_FEATURES[name], rank=0)
    self.MODEL_FEATURES = model_features
    super().__init__(pack=pack, use_custom_packing_ops=use_custom_packing_ops,
                     apply_length_check=apply_length_check, bos_id=bos_id)

  @property
  def hyper_inputs(self) -> bool:
    return self._hyper_inputs

  @tf.autograph.experimental.do_not_convert
  def _model_example(self, features: Mapping[str, tf.Tensor]) -> dict[str, tf.Tensor]:
    targets = features["targets"]  # [Ld]
    example = {
        "encoder_input_tokens": features["inputs"],
        "decoder_target_tokens": targets,
        # Packed rows restart the shift at every segment boundary.
        "decoder_input_tokens": seqio.utils.make_autoregressive_inputs(
            targets, sequence_id=features.get("targets_segment_ids"), bos_id=self.bos_id),
        "decoder_loss_weights": tf.cast(tf.not_equal(targets, 0), tf.float32),
    }
    if self._hyper_inputs:
      example["hyper_encoder_input_tokens"] = features["hyper_inputs"]
    if self.pack:
      example["encoder_segment_ids"] = features["inputs_segment_ids"]
      example["encoder_positions"] = features["inputs_positions"]
      example["decoder_segment_ids"] = features["targets_segment_ids"]
      example["decoder_positions"] = features["targets_positions"]
    for name in self._keep_features:
      example[name] = features[name]
    return example

  def _convert_features(self, ds: tf.data.Dataset,
                        task_feature_lengths: Mapping[str, int]) -> tf.data.Dataset:
    lengths = {k: task_feature_lengths[k] for k in self.TASK_FEATURES}
    missing = [k for k in self._keep_features if k not in ds.element_spec]
    if missing:
      raise ValueError(f"keep_features {missing} are not features of the dataset")
    if self.pack:
      ds = seqio.utils.trim_and_pack_dataset(ds, lengths, self._use_custom_packing_ops)
    else:
      ds = seqio.utils.trim_and_pad_dataset(ds, lengths)
    return ds.map(self._model_example, num_parallel_calls=tf.data.AUTOTUNE)

  def get_model_feature_lengths(self, task_feature_lengths: Mapping[str, int]) -> dict[str, int]:
    encoder, decoder = task_feature_lengths["inputs"], task_feature_lengths["targets"]
    lengths = {
        "encoder_input_tokens": encoder,
        "decoder_input_tokens": decoder,
        "decoder_target_tokens": decoder,
        "decoder_loss_weights": decoder,
    }
    if self._hyper_inputs:
      lengths["hyper_encoder_input_tokens"] = task_feature_lengths["hyper_inputs"]
    if self.pack:
      lengths.update(encoder_segment_ids=encoder, encoder_positions=encoder,
                     decoder_segment_ids=decoder, decoder_positions=decoder)
    for name in self._keep_features:
      lengths[name] = 1  # scalars: seqio skips length checks of rank-0 features
    return lengths
