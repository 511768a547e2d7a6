"""A user's own few-shot benchmark: the README's "Your own tasks" run as written,
the tasks it registers, and bad input."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import seqio
from conftest import REPO

import hypert5_tasks
from hypert5.inference import evaluate as eval_lib
from hypert5_tasks import scoring
from hypert5_tasks import vocab as task_vocab

LENGTHS = {"hyper_inputs": 512, "inputs": 32, "targets": 8}
EMBEDDED_VOCAB = str(task_vocab.EMBEDDED_VOCAB_PATH)
WORDS = ("king queen river night light stone horse wind fire water gold bread wine song "
         "friend father mother lord lady soldier").split()


def write_jsonl(path, rows):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, "w", encoding="utf-8") as f:
    for row in rows:
      f.write((row if isinstance(row, str) else json.dumps(row)) + "\n")


def write_benchmark(folder, num_train=20, num_test=6, seed=0):
  """A classification task with options and a generation task with a definition."""
  rng = np.random.default_rng(seed)
  def line():
    return " ".join(rng.choice(WORDS, size=int(rng.integers(4, 8))))
  for split, count in (("train", num_train), ("test", num_test)):
    rows = []
    for _ in range(count):
      x = line()
      rows.append({"input": f"{x} Options: good, bad", "options": ["good", "bad"],
                   "output": ("good", "bad")[int("king" in x)]})
    write_jsonl(os.path.join(folder, "sentiment", f"{split}.jsonl"), rows)
    rows = [{"input": x, "output": " ".join(x.split()[:3])} for x in (line() for _ in range(count))]
    write_jsonl(os.path.join(folder, "title", f"{split}.jsonl"), rows)
  with open(os.path.join(folder, "title", "definition.txt"), "w") as f:
    f.write("Give the first three words.\n")


def readme_section(title="Your own tasks"):
  with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
    text = f.read()
  start = text.index(f"## {title}\n")
  end = text.find("\n## ", start + 1)
  return text[start:end if end >= 0 else None]


def code_blocks(section, language):
  """The fenced blocks of `section` whose fence names `language` ("" for none)."""
  blocks, current = [], None
  for line in section.splitlines(keepends=True):
    if line.startswith("```"):
      if current is None:
        current = [line[3:].strip()]
      else:
        if current[0] == language:
          blocks.append("".join(current[1:]))
        current = None
    elif current is not None:
      current.append(line)
  return blocks


def test_readme_your_own_tasks_runs_as_written(tmp_path):
  """Register, train configs/hypert5_mtf.py (runlocal) on it, evaluate with hypert5.eval."""
  section = readme_section()
  (module,) = [b for b in code_blocks(section, "python") if b.startswith("# my_tasks.py\n")]
  (commands,) = code_blocks(section, "sh")
  # The README's example lines are valid task lines.
  (layout,) = code_blocks(section, "")
  for row in re.findall(r"(\{.*\})", layout):
    assert {"input", "output"} <= set(json.loads(row))
  write_benchmark(tmp_path / "my_data")
  (tmp_path / "my_tasks.py").write_text(module)
  os.symlink(os.path.join(REPO, "configs"), tmp_path / "configs")
  env = dict(os.environ, HYPERT5_VOCAB=EMBEDDED_VOCAB)  # offline: the embedded vocabulary
  env["PYTHONPATH"] = os.pathsep.join(filter(None, [env.get("PYTHONPATH"), REPO]))
  # `python` is this interpreter, as in an activated venv.
  env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "")])
  result = subprocess.run(["bash", "-euc", commands], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=900)
  assert result.returncode == 0, result.stderr[-3000:]
  results = json.loads((tmp_path / "runs" / "my_tasks" / "eval_my_tasks_test" /
                        "results.json").read_text())
  assert results["benchmark"] == "my_tasks" and results["mixture"] == "my_tasks_test"
  tasks = results["tasks"]
  assert set(tasks) == {"my_tasks.sentiment", "my_tasks.title"}
  assert set(tasks["my_tasks.sentiment"]) == {"accuracy"}  # options: rank classification
  assert set(tasks["my_tasks.title"]) == {"rouge_l"}  # none: generation
  # 6 queries, two choices: accuracy is a multiple of 1/6.
  assert round(tasks["my_tasks.sentiment"]["accuracy"] * 6 / 100, 6).is_integer()
  assert 0 <= tasks["my_tasks.title"]["rouge_l"] <= 100
  assert results["average"] == pytest.approx(
      (tasks["my_tasks.sentiment"]["accuracy"] + tasks["my_tasks.title"]["rouge_l"]) / 2)
  predictions = (tmp_path / "runs" / "my_tasks" / "eval_my_tasks_test" /
                 "predictions.jsonl").read_text().splitlines()
  assert len(predictions) == 12
  assert {json.loads(p)["prediction"] for p in predictions[:6]} <= {"good", "bad"}
  # How many few-shot examples the hypermodel's input held, per task.
  for fit in results["context_fit"].values():
    assert 1 <= fit["examples_kept"] <= fit["examples_given"] <= 16
  assert set(results["context_fit"]) == set(tasks)
  # A model trained from scratch gets the vocabulary's size (2,100 ids -> 2,176), not T5's.
  config = json.loads((tmp_path / "runs" / "my_tasks" / "config.json").read_text())
  assert config["model"]["vocab_size"] == 2176
  # TensorFlow's C++ start-up lines (CUDA probing, oneDNN) stay out of the commands' output.
  assert "oneDNN" not in result.stderr and "cuda" not in result.stderr.lower()


def _register(tmp_path, name, **kwargs):
  return hypert5_tasks.register_jsonl_benchmark(name, str(tmp_path / "data"),
                                                vocabulary=EMBEDDED_VOCAB, **kwargs)


def _records(name, split, form="hyper"):
  task = seqio.get_mixture_or_task(name if form == "hyper" else f"{name}_{form}")
  return list(task.get_dataset(LENGTHS, split=split, shuffle=False, seed=0)
              .as_numpy_iterator())


def test_registers_tasks_mixtures_forms_and_their_scoring(tmp_path):
  write_benchmark(tmp_path / "data")
  names = _register(tmp_path, "usr_a")
  assert names == ["usr_a.sentiment", "usr_a.title"]
  for suffix in ("", "_concat", "_xonly"):
    assert [t.name for t in seqio.get_mixture_or_task(f"usr_a_test{suffix}").tasks] == [
        n + suffix for n in names]
    assert scoring.benchmark_of(f"usr_a_test{suffix}").name == "usr_a"
  sentiment, title = (seqio.get_mixture_or_task(n) for n in names)
  assert sentiment.score_metric_fns and not sentiment.predict_metric_fns
  assert title.predict_metric_fns and not title.score_metric_fns
  # Test queries: one fixed context per task, 16 train pairs after the definition.
  queries = _records("usr_a.title", "test")
  assert len(queries) == 6 and len({q["hyper_inputs_pretokenized"] for q in queries}) == 1
  context = queries[0]["hyper_inputs_pretokenized"].decode()
  assert context.startswith("Definition: Give the first three words. Input: ")
  assert context.count("Input: ") == 16
  train_inputs = [json.loads(line)["input"] for line in
                  (tmp_path / "data" / "title" / "train.jsonl").read_text().splitlines()]
  assert all(f"Input: {q['inputs_pretokenized'].decode()} Output:" not in context
             or q["inputs_pretokenized"].decode() in train_inputs for q in queries)
  # Training records: contexts drawn within the task, never the record itself.
  train = _records("usr_a.sentiment", "train")
  assert 10 < len(train) <= 20
  for r in train:
    text = r["hyper_inputs_pretokenized"].decode()
    assert f"Input: {r['inputs_pretokenized'].decode()} Output:" not in text
    assert text.startswith("Input: ") and list(r["answer_choices"]) == [b"good", b"bad"]
  assert {e["label"] for e in _records("usr_a.sentiment", "test", "xonly")} <= {0, 1}
  concat = _records("usr_a.title", "test", "concat")[0]["inputs_pretokenized"].decode()
  assert concat.startswith("Definition: ") and concat.endswith("Output:")


def test_scores_are_the_tasks_declared_metrics(tmp_path):
  write_benchmark(tmp_path / "data")
  _register(tmp_path, "usr_m", metric={"title": "exact_match"})
  title = seqio.get_mixture_or_task("usr_m.title")
  examples = [{"targets_pretokenized": "a b c", "references": ["a b c"]},
              {"targets_pretokenized": "d e f", "references": ["d e f"]}]
  got = eval_lib.score_task(title, examples, {"generate": [{"prediction": "A b c."},
                                                           {"prediction": "d e"}]})
  assert got == {"exact_match": 50.0}
  sentiment = seqio.get_mixture_or_task("usr_m.sentiment")
  examples = [{"targets_pretokenized": "good", "label": 0},
              {"targets_pretokenized": "bad", "label": 1}]
  got = eval_lib.score_task(sentiment, examples, {"rank": [{"scores": [-1.0, -2.0]},
                                                           {"scores": [-1.0, -3.0]}]})
  assert got == {"accuracy": 50.0}
  summary = eval_lib.aggregate(scoring.benchmark_of("usr_m_test"),
                               {"usr_m.sentiment_xonly": {"accuracy": 50.0},
                                "usr_m.title_xonly": {"exact_match": 100.0}})
  assert summary == {"groups": {"usr_m.sentiment": 50.0, "usr_m.title": 100.0},
                     "average": 75.0}
  with pytest.raises(ValueError, match="unknown metric 'bleu'"):
    _register(tmp_path, "usr_m2", metric="bleu")
  with pytest.raises(ValueError, match="needs 'options' on every line"):
    _register(tmp_path, "usr_m3", metric={"title": lambda targets, scores: {}})


@pytest.mark.parametrize("rows, match", [
    (['{"input": "a", "output": "b"', ], r"train.jsonl:1: invalid JSON"),
    ([{"input": "a", "output": "b"}, {"input": "c"}], r"train.jsonl:2: missing key 'output'"),
    ([{"input": "a", "options": ["x", "y"], "output": "z"}],
     r"train.jsonl:1: output 'z' is not one of its options \['x', 'y'\]"),
    ([{"input": "a", "output": "b", "label": 1}], r"train.jsonl:1: unknown key\(s\) \['label'\]"),
    ([{"input": "a", "options": ["b"], "output": "b"}, {"input": "c", "output": "d"}],
     r"train.jsonl:2: has no 'options' unlike"),
    ([], r"train.jsonl: no examples \(an empty split\)"),
])
def test_bad_lines_name_file_and_line_and_register_nothing(tmp_path, rows, match):
  write_benchmark(tmp_path / "data")
  write_jsonl(str(tmp_path / "data" / "zbad" / "train.jsonl"), rows)
  name = f"usr_bad{abs(hash(match)) % 10**6}"
  with pytest.raises(ValueError, match=re.escape(str(tmp_path / "data" / "zbad")) + "/" + match):
    _register(tmp_path, name)
  assert not [n for n in seqio.TaskRegistry.names() if n.startswith(name + ".")]
  assert f"{name}_train" not in seqio.MixtureRegistry.names()


def test_missing_folders_and_names_taken(tmp_path):
  with pytest.raises(FileNotFoundError, match=f"no folder {tmp_path / 'data'}"):
    _register(tmp_path, "usr_none")
  write_jsonl(str(tmp_path / "data" / "alone" / "test.jsonl"), [{"input": "a", "output": "b"}])
  with pytest.raises(FileNotFoundError, match=r"alone: test.jsonl needs a train.jsonl"):
    _register(tmp_path, "usr_alone")
  (tmp_path / "data" / "alone" / "definition.txt").write_text("Say b.")
  _register(tmp_path, "usr_alone")  # a definition is context enough
  record = _records("usr_alone.alone", "test")[0]
  assert record["hyper_inputs_pretokenized"] == b"Definition: Say b."
  assert "usr_alone_train" not in seqio.MixtureRegistry.names()  # nothing to train on
  with pytest.raises(ValueError, match="benchmark 'usr_alone' is registered already"):
    _register(tmp_path, "usr_alone")
  _register(tmp_path, "usr_alone", replace=True)
  with pytest.raises(ValueError, match=r"'embedded_fewshot' is registered already "
                                      r"\(embedded_fewshot_test\)"):
    _register(tmp_path, "embedded_fewshot")  # a built-in mixture is never replaced by mistake


def test_task_modules_variable_imports_a_file_once(tmp_path):
  write_benchmark(tmp_path / "data")
  module = tmp_path / "usr_module_tasks.py"
  data = str(tmp_path / "data")
  module.write_text("import hypert5_tasks\n"
                    f"hypert5_tasks.register_jsonl_benchmark('usr_env', {data!r}, "
                    f"vocabulary={EMBEDDED_VOCAB!r})\n")
  assert hypert5_tasks.import_task_modules(f" {module} ,") == ["usr_module_tasks"]
  assert "usr_env_test" in seqio.MixtureRegistry.names()
  # Imported once per process: naming it again does not register it again (which would fail).
  assert hypert5_tasks.import_task_modules(str(module)) == ["usr_module_tasks"]
  with pytest.raises(FileNotFoundError, match="HYPERT5_TASK_MODULES names 'nowhere.py'"):
    hypert5_tasks.import_task_modules("nowhere.py")
