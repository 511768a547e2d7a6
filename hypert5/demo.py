"""`python -m hypert5.demo`: hypert5/experiments/demo.py.

The whole pipeline at small scale on the embedded benchmark.
"""

if __name__ == "__main__":
  from hypert5.experiments import demo

  demo.run_command()
