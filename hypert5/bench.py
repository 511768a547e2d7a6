"""`python -m hypert5.bench`: hypert5/tools/bench.py, the accelerator benchmark of train's step."""

if __name__ == "__main__":
  from hypert5.tools import bench

  bench.run_command()
