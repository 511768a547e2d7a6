"""The embedded benchmarks, by name: the one place that says which there are.

The commands that run one (`hypert5.demo`, `hypert5.peft_sweep`) pick it by its flag
(`--rules`, `--control`, none for the default) and read the rest from its row here. The
demo's configs (configs/demo.py) name the same benchmarks by the same flags without
importing this module, so that they load without TensorFlow; tests/test_configs.py checks
that the two agree.
"""

from __future__ import annotations

import dataclasses
import types

from hypert5_tasks import embedded, embedded_fewshot, embedded_icl


@dataclasses.dataclass(frozen=True)
class Spec:
  """One embedded benchmark: what generates it, and what the commands need to know of it."""
  generator: types.ModuleType  # embedded_icl or embedded_fewshot
  config: embedded_icl.BenchmarkConfig | embedded_fewshot.BenchmarkConfig
  title: str  # how the demo's results name it
  flag: str  # what picks it: --FLAG on the commands, ',FLAG' in configs/demo.py; "" the default
  # The default's extras in the demo: learning curves along MTF, and the controls (another
  # task's or the mirror's examples, the rule said outright: its instructed tasks).
  curves_and_controls: bool = False

  @property
  def name(self) -> str:
    return self.config.name

  @property
  def families(self) -> tuple[str, ...]:
    return self.config.families

  @property
  def num_shots(self) -> int:
    """Examples in a held-out task's few-shot set."""
    return self.config.num_shots

  @property
  def train_mixture(self) -> str:
    return embedded.train_mixture_name(self.name)

  @property
  def test_mixture(self) -> str:
    return embedded.test_mixture_name(self.name)

  @property
  def instructed_mixture(self) -> str:
    return embedded.instructed_mixture_name(self.name)

  def heldout_families(self) -> dict[str, str]:
    """Held-out task name -> its family, in the test mixture's order."""
    return self.generator.heldout_families(self.config)

  def heldout_task_names(self) -> list[str]:
    return list(self.heldout_families())

  def generate(self):
    """Its pools and tasks, made once per process (the generators cache them)."""
    return self.generator.generate(self.config)

  def register(self) -> None:
    self.generator.register(self.config)


BENCHMARKS = {spec.name: spec for spec in (
    Spec(embedded_icl, embedded_icl.BenchmarkConfig(), "embedded in-context benchmark", flag="",
         curves_and_controls=True),
    Spec(embedded_fewshot, embedded_fewshot.BenchmarkConfig(), "embedded rules benchmark",
         flag="rules"),
    # The control: only the constant family, every task answering `black` or `white`,
    # inputs without options (the answer word appears in an example only as its output).
    # Reading the examples is all it takes (which word do they give?), with no rule to
    # infer and nothing to copy; an example-blind model still scores exactly 50%. At the
    # demo's budget, it is where a hypermodel that has learned to read shows it
    # (docs/demo.md).
    Spec(embedded_fewshot, embedded_fewshot.BenchmarkConfig(
        name="embedded_constant", families=("constant",), fixed_choices=("black", "white"),
        show_options=False), "embedded control benchmark (constant family)", flag="control"),
)}


def by_flag(flag: str) -> Spec:
  """The benchmark a command-line flag picks ("" for the default)."""
  for spec in BENCHMARKS.values():
    if spec.flag == flag:
      return spec
  raise ValueError(f"no embedded benchmark has the flag {flag!r}; flags: "
                   f"{', '.join(repr(s.flag) for s in BENCHMARKS.values())}")


def of_task(task: str) -> Spec | None:
  """The benchmark a held-out task belongs to; None for any other task."""
  for spec in BENCHMARKS.values():
    if task in spec.heldout_families():
      return spec
  return None
