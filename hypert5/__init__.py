"""HyperT5: a hypermodel writes a frozen T5's PEFT parameters from a few examples.

The Python API (hypert5/inference/api.py; README "Python API"):

  run = hypert5.load("runs/tiny")       # a trained run: hypermodel, downstream T5, vocabulary
  phi = run.phi([(x1, y1), (x2, y2)])   # phi from a few examples
  run.score(x, choices, phi); run.generate(x, phi); run.save_adapter(phi, "my_adapter")

Its names load on first use, so `import hypert5` imports neither JAX nor
TensorFlow (the commands and `hypert5.bench`/`hypert5.plan` rely on that).
"""

from hypert5 import cli as _cli

if _cli.launched_as_command():
  _cli.set_up_command_environment()

_API = ("load", "Run", "read_examples", "context_segments", "ExamplesError")
__all__ = list(_API)


def __getattr__(name):
  if name in _API:
    from hypert5.inference import api  # noqa: PLC0415  (`import hypert5` stays light: the API loads on first use)
    return getattr(api, name)
  raise AttributeError(f"module 'hypert5' has no attribute {name!r}")


def __dir__():
  return sorted(set(globals()) | set(_API))
