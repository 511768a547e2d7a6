"""`python -m hypert5.input_bench`: hypert5/tools/input_bench.py.

The input pipeline's cost by design and task count.
"""

if __name__ == "__main__":
  from hypert5.tools import input_bench

  input_bench.run_command()
