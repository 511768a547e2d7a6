"""`python -m hypert5.input_bench`: the input pipeline's cost by design and task count (hypert5/tools/input_bench.py)."""

if __name__ == "__main__":
  from hypert5.tools import input_bench

  input_bench.run_command()
