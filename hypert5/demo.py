"""`python -m hypert5.demo`: the whole pipeline at small scale on the embedded benchmark (hypert5/experiments/demo.py)."""

if __name__ == "__main__":
  from hypert5.experiments import demo

  demo.run_command()
