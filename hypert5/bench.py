"""`python -m hypert5.bench`: the accelerator benchmark of train's step (hypert5/tools/bench.py)."""

if __name__ == "__main__":
  from hypert5.tools import bench

  bench.run_command()
