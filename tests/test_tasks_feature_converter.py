"""HyperFeatureConverter: model feature names, shapes, the shift, loss weights, packing."""

import numpy as np
import pytest
import tensorflow as tf

from hypert5_tasks import feature_converter


def _dataset(examples, with_hyper=True):
  keys = ["inputs", "targets"] + (["hyper_inputs"] if with_hyper else [])
  signature = {k: tf.TensorSpec([None], tf.int32) for k in keys}
  signature["task_name"] = tf.TensorSpec([], tf.string)
  return tf.data.Dataset.from_generator(
      lambda: ({**{k: np.array(e[k], np.int32) for k in keys}, "task_name": e.get("task_name", "t")}
               for e in examples),
      output_signature=signature)


EXAMPLES = [
    {"hyper_inputs": [11, 12, 13, 1], "inputs": [3, 4, 1], "targets": [7, 8, 1]},
    {"hyper_inputs": [21, 1], "inputs": [5, 1], "targets": [9, 1]},
]


def _as_numpy(ds):
  return list(ds.as_numpy_iterator())


def test_padded_features_shift_and_loss_weights():
  converter = feature_converter.HyperFeatureConverter()
  lengths = {"hyper_inputs": 6, "inputs": 5, "targets": 4}
  first, second = _as_numpy(converter(_dataset(EXAMPLES), lengths))
  assert set(first) == {"hyper_encoder_input_tokens", "encoder_input_tokens",
                        "decoder_input_tokens", "decoder_target_tokens", "decoder_loss_weights"}
  np.testing.assert_array_equal(first["hyper_encoder_input_tokens"], [11, 12, 13, 1, 0, 0])
  np.testing.assert_array_equal(first["encoder_input_tokens"], [3, 4, 1, 0, 0])
  np.testing.assert_array_equal(first["decoder_target_tokens"], [7, 8, 1, 0])
  np.testing.assert_array_equal(first["decoder_input_tokens"], [0, 7, 8, 1])
  np.testing.assert_array_equal(first["decoder_loss_weights"], [1.0, 1.0, 1.0, 0.0])  # EOS counts
  assert first["decoder_loss_weights"].dtype == np.float32
  np.testing.assert_array_equal(second["decoder_input_tokens"], [0, 9, 1, 0])


def test_batched_shapes():
  converter = feature_converter.HyperFeatureConverter()
  lengths = {"hyper_inputs": 6, "inputs": 5, "targets": 4}
  batch = next(converter(_dataset(EXAMPLES), lengths).batch(2).as_numpy_iterator())
  assert batch["hyper_encoder_input_tokens"].shape == (2, 6)
  assert batch["encoder_input_tokens"].shape == (2, 5)
  for key in ("decoder_input_tokens", "decoder_target_tokens", "decoder_loss_weights"):
    assert batch[key].shape == (2, 4)


def test_packing_with_hyper_inputs_is_refused():
  with pytest.raises(ValueError, match="cannot pack examples that have hyper inputs"):
    feature_converter.HyperFeatureConverter(pack=True)


def test_packing_without_hyper_inputs_segment_ids_and_positions():
  converter = feature_converter.HyperFeatureConverter(pack=True, hyper_inputs=False)
  (row,) = _as_numpy(converter(_dataset(EXAMPLES), {"inputs": 6, "targets": 6}))
  assert "hyper_encoder_input_tokens" not in row
  np.testing.assert_array_equal(row["encoder_input_tokens"], [3, 4, 1, 5, 1, 0])
  np.testing.assert_array_equal(row["encoder_segment_ids"], [1, 1, 1, 2, 2, 0])
  np.testing.assert_array_equal(row["encoder_positions"], [0, 1, 2, 0, 1, 0])
  np.testing.assert_array_equal(row["decoder_target_tokens"], [7, 8, 1, 9, 1, 0])
  np.testing.assert_array_equal(row["decoder_segment_ids"], [1, 1, 1, 2, 2, 0])
  np.testing.assert_array_equal(row["decoder_positions"], [0, 1, 2, 0, 1, 0])
  # The shift restarts with the start token 0 at each packed example.
  np.testing.assert_array_equal(row["decoder_input_tokens"], [0, 7, 8, 0, 9, 0])
  np.testing.assert_array_equal(row["decoder_loss_weights"], [1, 1, 1, 1, 1, 0])


def test_downstream_mode_drops_hyper_inputs():
  converter = feature_converter.HyperFeatureConverter(hyper_inputs=False)
  rows = _as_numpy(converter(_dataset(EXAMPLES), {"inputs": 5, "targets": 4}))
  assert "hyper_encoder_input_tokens" not in rows[0]
  np.testing.assert_array_equal(rows[0]["encoder_input_tokens"], [3, 4, 1, 0, 0])


def test_too_long_features_fail_the_length_check():
  converter = feature_converter.HyperFeatureConverter()
  with pytest.raises(tf.errors.InvalidArgumentError):
    _as_numpy(converter(_dataset(EXAMPLES), {"hyper_inputs": 2, "inputs": 5, "targets": 4}))


def test_keep_features():
  converter = feature_converter.HyperFeatureConverter(keep_features=("task_name",))
  rows = _as_numpy(converter(_dataset(EXAMPLES), {"hyper_inputs": 6, "inputs": 5, "targets": 4}))
  assert rows[0]["task_name"] == b"t"
  with pytest.raises(ValueError, match="cannot keep features"):
    feature_converter.HyperFeatureConverter(keep_features=("answer_choices",))
  with pytest.raises(ValueError, match="cannot be used with pack=True"):
    feature_converter.HyperFeatureConverter(pack=True, hyper_inputs=False,
                                            keep_features=("task_name",))
