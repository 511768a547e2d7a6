"""hypert5.input_bench: the train loop's batches timed on replicas written in the real formats."""

import dataclasses
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from hypert5.tools import bench, input_bench, replicas

MTF = {"hyper_inputs": 1024, "inputs": 384, "targets": 128}
TINY = replicas.ReplicaSize(p3_rows=48, metaicl_lines=48, sni_instances=20, c4_documents=120,
                               c4_shards=2, only=2)


def test_required_rate_is_the_bench_flops_at_40_percent_of_peak():
  for kind in ("prefix", "lora"):
    config = bench.preset_config("large", kind)
    config.data.hyper_inputs_length, config.data.inputs_length = 1024, 384
    config.data.targets_length = 128
    per_example = bench.train_flops(config) / config.batch_size
    got = input_bench.required_examples_per_s(MTF, kind, 989e12)
    assert got == pytest.approx(0.4 * 989e12 / per_example, rel=1e-12)
  # Independently: T5-Large (24 + 24 layers, d 1024, H 1024, f 2816) forward over
  # 1024 hypermodel tokens costs about 2 x 0.30e9 x 1024 plus attention (~0.72 TFLOPs),
  # ~0.87 TFLOPs with its decoder; x3 for training, plus 2x the frozen model's ~0.39:
  # about 3.4 TFLOPs an example, 116 examples/s at 40% of 989 TFLOP/s.
  assert 100 < input_bench.required_examples_per_s(MTF, "prefix", 989e12) < 130
  demand = input_bench.demand(MTF)
  assert demand["TPU v4 host (4 chips)"] == pytest.approx(
      demand["H100 SXM / H200 (1 GPU)"] * 4 * 275 / 989, rel=1e-12)
  assert demand["H100 SXM / H200 (1 GPU)"] == pytest.approx(max(
      input_bench.required_examples_per_s(MTF, k, 989e12) for k in ("prefix", "lora")))


def test_verdict_divides_the_demand_by_the_rate_of_one_core():
  m = input_bench.Measurement("p3", "p3_t0_train", tasks=8, lengths=MTF, batch_size=32,
                              startup_s=1.0, warmup_batches=0, batches=10, examples=320,
                              tokens=320_000, wall_s=2.0, cpu_s=4.0)  # 80 examples a core-second
  rows = {r["target"]: r for r in input_bench.verdict(m)}
  gpu = rows["H100 SXM / H200 (1 GPU)"]
  assert m.examples_per_core_s == 80 and m.tokens_per_s == 160_000
  assert gpu["cores_per_accelerator"] == pytest.approx(gpu["examples_per_s_needed"] / 80)
  assert gpu["host_cores_needed"] == math.ceil(8 * gpu["examples_per_s_needed"] / 80)
  assert gpu["fed"] and gpu["host_cores_needed"] <= 112
  slow = dataclasses.replace(m, cpu_s=400.0)  # 0.8 examples a core-second: never fed
  assert not any(r["fed"] for r in input_bench.verdict(slow))
  # A Python stage slower than the host's demand starves it, whatever its cores.
  serial = dataclasses.replace(m, serial_records_per_s={256: gpu["examples_per_s_needed"] * 4},
                               generator_chunk=256)
  rows = {r["target"]: r for r in input_bench.verdict(serial)}
  assert not rows["H100 SXM / H200 (1 GPU)"]["fed"]  # 8 GPUs need 8x
  assert rows["TPU v4 host (4 chips)"]["fed"]  # one v4 host: ~1.1x one GPU's


def test_imports_and_plans_without_tensorflow():
  code = ("import sys; from hypert5.tools import input_bench as b; "
          "b.demand(b.config_of('p3').data.to_dict() and "
          "{'hyper_inputs': 1024, 'inputs': 384, 'targets': 128}); "
          "print(sorted(m for m in ('tensorflow', 'seqio') if m in sys.modules))")
  result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
  assert result.returncode == 0, result.stderr[-2000:]
  assert result.stdout.strip() == "[]"


def test_unknown_mixture_is_one_error_naming_it_before_any_work(tmp_path):
  with pytest.raises(ValueError, match=r"--mixture='p4'.*pass one or more.*p3.*sni_def"):
    input_bench.run(["p3", "p4"], replica_dir=str(tmp_path), batches=1, warmup_batches=0,
                    batch_size=1)
  assert not os.listdir(tmp_path)  # nothing written
  result = subprocess.run([sys.executable, "-m", "hypert5.input_bench", "--mixture=c4"],
                          capture_output=True, text=True, timeout=120)
  assert result.returncode != 0
  assert "--mixture='c4' is not a training mixture" in result.stderr
  assert "Traceback" not in result.stderr


def test_missing_data_names_the_variable_and_what_to_pass(monkeypatch, tmp_path):
  monkeypatch.delenv("HYPERT5_SNI_DIR", raising=False)
  with pytest.raises(ValueError, match=r"sni_def: HYPERT5_SNI_DIR is not set.*--replica_dir"):
    input_bench.data_plan(["sni_def"], None)
  monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))  # no c4/en/3.1.0 there
  with pytest.raises(ValueError, match=rf"caclm: TFDS_DATA_DIR={tmp_path} does not hold it"):
    input_bench.data_plan(["caclm"], None)


@pytest.fixture(scope="module")
def replica(tmp_path_factory):
  yield str(tmp_path_factory.mktemp("replica"))
  import hypert5_tasks
  hypert5_tasks.register_all()  # back to the environment's folders for later tests


@pytest.mark.parametrize("mixture,pipeline", [
    ("caclm", "indexed"), ("p3", "indexed"), ("metaicl_hr_to_lr", "indexed"),
    ("sni_def", "indexed"), ("p3", "tfdata"), ("sni_def", "grain")])
def test_measures_the_batches_train_reads(replica, mixture, pipeline, monkeypatch):
  monkeypatch.delenv("HYPERT5_VOCAB", raising=False)
  plan = input_bench.data_plan([mixture], replica)
  written = replicas.ensure_replicas(plan, [mixture], TINY)
  root = plan[input_bench.DATA_OF[input_bench.benchmark_of(mixture)][0]]
  with open(os.path.join(root, "REPLICA.json")) as f:
    assert json.load(f)["partial"]
  assert root in written or pipeline != "indexed"
  for key, value in plan.items():
    monkeypatch.setenv(key, value)
  input_bench.register(plan)
  config = input_bench.config_of(mixture, pipeline)
  config.data.cache_dir = os.path.join(replica, "cache")
  far = 3 if pipeline == "tfdata" else 100_000  # tfdata replays the batches before
  m = input_bench.measure(config, mixture, batches=3, warmup_batches=1, batch_size=4,
                          max_tasks=2, resume_positions=(0, far), pipeline=pipeline)
  assert (m.batches, m.examples, m.pipeline) == (3, 12, pipeline)
  assert m.tasks == (1 if mixture == "caclm" else 2)
  assert m.lengths == {"caclm": {"hyper_inputs": 384, "inputs": 40, "targets": 136}}.get(
      mixture, MTF)
  assert m.wall_s > 0 and m.cpu_s > 0 and m.examples_per_s > 0 and m.examples_per_core_s > 0
  assert m.rss_gb > 0.1 and m.peak_rss_gb >= m.rss_gb
  assert set(m.resume_s) == {"0", str(far)} and all(v > 0 for v in m.resume_s.values())
  if pipeline == "tfdata":  # P3's Python reader, timed alone, before and after chunking
    from hypert5_tasks import records
    assert set(m.serial_records_per_s) == {1, records.GENERATOR_CHUNK}
    assert m.generator_chunk == records.GENERATOR_CHUNK
    assert all(rate > 0 for rate in m.serial_records_per_s.values())
  else:  # the reader runs once, when the cache is built
    assert m.serial_records_per_s is None and m.generator_chunk is None
  if pipeline == "indexed" and root in written:
    assert m.preprocess_s > 0  # built here, and timed apart from the first batch

  # The timed batches are batches 2-4 of the pipeline's stream (a function of the
  # config): their tokens, counted again from a fresh stream started there.
  from hypert5 import experiment
  from hypert5.training import data
  features = experiment.batch_features(experiment.build_models(config), False)
  stream = input_bench._batches(config, pipeline, features, 4, 2)
  batches = [next(stream) for _ in range(3)]
  assert m.tokens == sum(int(np.count_nonzero(b[k])) for b in batches
                         for k in input_bench.TOKEN_FEATURES)
  hyper = np.concatenate([b["hyper_encoder_input_tokens"] for b in batches])
  assert hyper.shape == (12, m.lengths["hyper_inputs"])
  assert (hyper > 0).sum(axis=1).min() > 10  # real contexts, not padding
  if pipeline == "indexed":  # what train reads
    train = data.train_batches(config, features, local_batch_size=4, shard_index=0,
                               num_shards=1, start_batch=2, form=experiment.data_form(config))
    for ours in batches:
      theirs = next(train)
      for key in ours:
        np.testing.assert_array_equal(ours[key], theirs[key])


def test_unknown_pipeline_is_an_error_naming_the_known_ones(tmp_path):
  with pytest.raises(ValueError, match=r"--pipeline='spark'.*tfdata, indexed, grain"):
    input_bench.run(["p3"], replica_dir=str(tmp_path), pipelines=["spark"])
  assert not os.listdir(tmp_path)


@pytest.mark.parametrize("with_context", [False, True])
def test_chunked_generator_yields_the_records_one_at_a_time_would(monkeypatch, with_context):
  from hypert5_tasks import records

  def generate():  # 7 records: chunks of 3 leave a partial one; lists of 0-2 values
    for i in range(7):
      extra = {"context": [f"pair {j}" for j in range(i % 3)]} if with_context else {}
      yield records.make_record(f"task {i % 2}", f"input {i}", f"target {i}",
                                answer_choices=[f"c{j}" for j in range(i % 3)],
                                label=i % 3 - 1, **extra)

  def rows(chunk):
    monkeypatch.setattr(records, "GENERATOR_CHUNK", chunk)
    dataset = records.records_from_generator(generate, with_context=with_context)
    assert dataset.element_spec == (records.CONTEXT_SIGNATURE if with_context
                                    else records.QUERY_SIGNATURE)
    return list(dataset.as_numpy_iterator())

  one, chunked = rows(1), rows(3)
  assert len(one) == len(chunked) == 7
  for a, b in zip(one, chunked):
    assert a.keys() == b.keys()
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])
  assert chunked[5]["answer_choices"].tolist() == [b"c0", b"c1"]
  assert chunked[3]["answer_choices"].shape == (0,) and chunked[3]["label"] == -1
