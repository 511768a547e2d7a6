"""HuggingFace import/export, `hypert5.convert` and `hypert5.score`, and their errors."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import make_hf_t5
from transformers import T5ForConditionalGeneration

from hypert5 import errors, score
from hypert5.formats import checkpoints, hf
from hypert5.text.vocab import Vocabulary

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_module(module, *args):
  return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                        cwd=REPO, timeout=300)


def hf_log_likelihoods(model, examples):
  out = []
  for inputs, targets in examples:
    with torch.no_grad():
      logits = model(input_ids=torch.tensor([inputs]),
                     labels=torch.tensor([targets])).logits[0]
    logp = torch.log_softmax(logits, -1)[torch.arange(len(targets)), torch.tensor(targets)]
    out.append(float(logp.sum()))
  return out


def test_score_cli_matches_huggingface_log_likelihoods(tmp_path, hf_t5_dir):
  vocab = Vocabulary(os.path.join(hf_t5_dir, "spiece.model"))
  lines = [{"inputs": "the king and the queen", "targets": "a castle"},
           {"inputs": [5, 6, 7, 1], "targets": [8, 9, 10, 11, 1]},
           {"inputs": "night", "targets": [12]},
           {"inputs": "river of gold and silver and wine", "targets": "the sea. the wind."}]
  data = tmp_path / "data.jsonl"
  data.write_text("".join(json.dumps(x) + "\n" for x in lines))
  ids = []
  for x in lines:
    enc = lambda v: v if isinstance(v, list) else vocab.encode(v) + [1]
    ids.append((enc(x["inputs"]), enc(x["targets"])))
  want = hf_log_likelihoods(T5ForConditionalGeneration.from_pretrained(hf_t5_dir).eval(), ids)
  for checkpoint in (hf_t5_dir, str(tmp_path / "native")):
    if checkpoint != hf_t5_dir:
      result = run_module("hypert5.convert", "--from=hf", f"--src={hf_t5_dir}",
                          f"--dst={checkpoint}")
      assert result.returncode == 0, result.stderr
    out = tmp_path / "scores.jsonl"
    result = run_module("hypert5.score", f"--checkpoint={checkpoint}", f"--data={data}",
                        f"--output={out}", "--batch_size=3")
    assert result.returncode == 0, result.stderr
    got = [json.loads(line) for line in out.read_text().splitlines()]
    assert [g["num_target_tokens"] for g in got] == [len(t) for _, t in ids]
    np.testing.assert_allclose([g["log_likelihood"] for g in got], want, atol=1e-4, rtol=1e-5)


def test_native_round_trip_and_hf_export(tmp_path, hf_t5_dir):
  cfg, params = hf.load_hf_checkpoint(hf_t5_dir)
  checkpoints.save_model(str(tmp_path / "native"), params, cfg,
                         os.path.join(hf_t5_dir, "spiece.model"))
  cfg2, params2, vocab = checkpoints.load_model(str(tmp_path / "native"))
  assert cfg2 == cfg and vocab.endswith("spiece.model")
  for a, b in zip(*map(lambda t: __import__("jax").tree.leaves(t), (params, params2))):
    np.testing.assert_array_equal(a, b)
  # Export back to HuggingFace: transformers loads it and the tensors are identical.
  hf.save_hf_checkpoint(str(tmp_path / "exported"), params2, cfg2)
  original = hf.read_safetensors(os.path.join(hf_t5_dir, "model.safetensors"))
  exported = hf.read_safetensors(str(tmp_path / "exported" / "model.safetensors"))
  assert set(exported) == set(original) - {"encoder.embed_tokens.weight",
                                           "decoder.embed_tokens.weight"}
  for key in exported:
    np.testing.assert_array_equal(exported[key], original[key])
  reloaded = T5ForConditionalGeneration.from_pretrained(str(tmp_path / "exported"))
  assert not reloaded.config.scale_decoder_outputs


def test_sharded_safetensors_index(tmp_path, hf_t5_dir):
  tensors = hf.read_safetensors(os.path.join(hf_t5_dir, "model.safetensors"))
  names = sorted(tensors)
  shards = {"model-00001-of-00002.safetensors": names[: len(names) // 2],
            "model-00002-of-00002.safetensors": names[len(names) // 2:]}
  weight_map = {}
  for file, keys in shards.items():
    hf.write_safetensors(str(tmp_path / file), {k: tensors[k] for k in keys})
    weight_map.update({k: file for k in keys})
  (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
  shutil.copy(os.path.join(hf_t5_dir, "config.json"), tmp_path)
  _, sharded = hf.load_hf_checkpoint(str(tmp_path))
  _, single = hf.load_hf_checkpoint(hf_t5_dir)
  for a, b in zip(*map(lambda t: __import__("jax").tree.leaves(t), (sharded, single))):
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("dtype, stored", [(torch.bfloat16, "BF16"), (torch.float16, "F16")])
def test_half_precision_checkpoint_written_by_transformers_loads_exactly(tmp_path, dtype, stored):
  """transformers (5: always safetensors) saves bf16/fp16; we read it through the library."""
  from safetensors import safe_open
  model = make_hf_t5(tmp_path / "f32")
  full = model.shared.weight.detach().numpy().copy()
  model.to(dtype).save_pretrained(str(tmp_path / "half"))
  path = str(tmp_path / "half" / "model.safetensors")
  with safe_open(path, framework="pt") as f:
    assert {f.get_slice(k).get_dtype() for k in f.keys()} == {stored}
  cfg, params = hf.load_hf_checkpoint(str(tmp_path / "half"))
  assert {x.dtype for x in __import__("jax").tree.leaves(params)} == {np.dtype(np.float32)}
  ours = hf.to_hf_state_dict(params, cfg)
  theirs = {k: v.float().numpy() for k, v in model.state_dict().items()}
  assert set(ours) <= set(theirs) and "lm_head.weight" in ours
  for key, value in ours.items():  # half -> float32 is exact, and so are the transposes
    np.testing.assert_array_equal(value, theirs[key], err_msg=key)
  assert not np.array_equal(ours["shared.weight"], full)  # the rounded values, not the originals


def test_bf16_written_by_us_reads_back_in_torch(tmp_path):
  import ml_dtypes
  from safetensors.torch import load_file
  values = np.random.RandomState(0).randn(3, 5).astype(np.float32)
  hf.write_safetensors(str(tmp_path / "x.safetensors"),
                       {"w": values.astype(ml_dtypes.bfloat16), "v": values})
  back = hf.read_safetensors(str(tmp_path / "x.safetensors"))
  assert back["w"].dtype == ml_dtypes.bfloat16 and back["v"].dtype == np.float32
  np.testing.assert_array_equal(back["w"], values.astype(ml_dtypes.bfloat16))
  loaded = load_file(str(tmp_path / "x.safetensors"))
  assert loaded["w"].dtype == torch.bfloat16
  np.testing.assert_array_equal(loaded["w"].float().numpy(),
                                values.astype(ml_dtypes.bfloat16).astype(np.float32))
  np.testing.assert_array_equal(loaded["v"].numpy(), values)


def test_unreadable_safetensors_names_the_file(tmp_path, hf_t5_dir):
  broken = tmp_path / "broken"
  shutil.copytree(hf_t5_dir, broken)
  (broken / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
  with pytest.raises(errors.CheckpointError,
                     match=r"broken/model\.safetensors: not a safetensors file"):
    hf.load_hf_checkpoint(str(broken))
  from safetensors.torch import save_file
  save_file({"w": torch.zeros(2, dtype=torch.float8_e5m2)}, str(tmp_path / "f8.safetensors"))
  with pytest.raises(errors.CheckpointError,
                     match=r"f8\.safetensors: tensor 'w' has unsupported dtype F8_E5M2"):
    hf.read_safetensors(str(tmp_path / "f8.safetensors"))


def test_tied_checkpoint_without_lm_head(tmp_path):
  make_hf_t5(tmp_path, tie_word_embeddings=True, feed_forward_proj="relu")
  stored = hf.read_safetensors(str(tmp_path / "model.safetensors"))
  assert "lm_head.weight" not in stored  # transformers drops the tied copy
  cfg, params = hf.load_hf_checkpoint(str(tmp_path))
  assert cfg.tie_word_embeddings and cfg.scale_decoder_outputs and "logits_dense" not in params


@pytest.fixture
def broken_copy(tmp_path, hf_t5_dir):
  def make(edit_config=None, edit_tensors=None):
    target = tmp_path / "broken"
    shutil.copytree(hf_t5_dir, target)
    if edit_config:
      config = json.loads((target / "config.json").read_text())
      edit_config(config)
      (target / "config.json").write_text(json.dumps(config))
    if edit_tensors:
      tensors = dict(hf.read_safetensors(str(target / "model.safetensors")))
      edit_tensors(tensors)
      hf.write_safetensors(str(target / "model.safetensors"), tensors)
    return str(target)
  return make


def test_bad_checkpoints_give_one_clear_error(tmp_path, broken_copy):
  with pytest.raises(errors.CheckpointError, match="no such checkpoint directory"):
    hf.load_hf_checkpoint(str(tmp_path / "missing"))
  with pytest.raises(errors.CheckpointError, match=r"config\.json: model_type is 'bert'"):
    hf.load_hf_checkpoint(broken_copy(edit_config=lambda c: c.update(model_type="bert")))


def test_mismatched_shape_names_file_and_key(broken_copy):
  def shrink(t):
    t["decoder.block.1.layer.2.DenseReluDense.wo.weight"] = np.zeros((32, 40), np.float32)
  with pytest.raises(errors.CheckpointError,
                     match=r"model\.safetensors: key 'decoder\.block\.1\.layer\.2\.DenseReluDense"
                           r"\.wo\.weight' has shape \[32, 40\]"):
    hf.load_hf_checkpoint(broken_copy(edit_tensors=shrink))


def test_unknown_key_names_file_and_key(broken_copy):
  def extra(t):
    t["encoder.block.7.layer.0.layer_norm.weight"] = np.ones(32, np.float32)
  with pytest.raises(errors.CheckpointError, match=r"unknown key 'encoder\.block\.7\.layer\.0"):
    hf.load_hf_checkpoint(broken_copy(edit_tensors=extra))


def test_pickle_checkpoints_are_refused(tmp_path, hf_t5_dir):
  shutil.copy(os.path.join(hf_t5_dir, "config.json"), tmp_path)
  (tmp_path / "pytorch_model.bin").write_bytes(b"\x80\x04not really a pickle")
  with pytest.raises(errors.CheckpointError,
                     match="Pickle checkpoints are refused.*save_pretrained"):
    hf.load_hf_checkpoint(str(tmp_path))


def test_failed_conversion_leaves_nothing_at_dst(tmp_path, broken_copy):
  src = broken_copy(edit_tensors=lambda t: t.pop("encoder.final_layer_norm.weight"))
  dst = tmp_path / "out" / "converted"
  result = run_module("hypert5.convert", "--from=hf", f"--src={src}", f"--dst={dst}")
  assert result.returncode == 1
  assert "missing key 'encoder.final_layer_norm.weight'" in result.stderr
  assert not dst.exists()
  assert not (tmp_path / "out").exists() or os.listdir(tmp_path / "out") == []


def test_malformed_data_line_names_file_and_line(tmp_path, hf_t5_dir):
  vocab = Vocabulary(os.path.join(hf_t5_dir, "spiece.model"))
  data = tmp_path / "data.jsonl"
  data.write_text('{"inputs": "a", "targets": "b"}\n\n{"inputs": "a", "targets": \n')
  with pytest.raises(score.DataError, match=r"data\.jsonl:3: invalid JSON"):
    score.read_examples(str(data), vocab, 131, 1)
  data.write_text('{"inputs": "a"}\n')
  with pytest.raises(score.DataError, match=r"data\.jsonl:1: missing key 'targets'"):
    score.read_examples(str(data), vocab, 131, 1)
  data.write_text('{"inputs": [1, 2, 400], "targets": [1]}\n')
  with pytest.raises(score.DataError, match=r"data\.jsonl:1: 'inputs': token id 400 is outside"):
    score.read_examples(str(data), vocab, 131, 1)
  data.write_text('{"inputs": "text", "targets": [1]}\n')
  with pytest.raises(score.DataError, match="no SentencePiece vocabulary"):
    score.read_examples(str(data), None, 131, 1)


def test_score_cli_reports_bad_line_without_writing_output(tmp_path, hf_t5_dir):
  data = tmp_path / "data.jsonl"
  data.write_text('{"inputs": "a", "targets": "b"}\nnot json\n')
  out = tmp_path / "scores.jsonl"
  result = run_module("hypert5.score", f"--checkpoint={hf_t5_dir}", f"--data={data}",
                      f"--output={out}")
  assert result.returncode == 1 and "data.jsonl:2: invalid JSON" in result.stderr
  assert not out.exists()
