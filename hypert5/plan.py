"""`python -m hypert5.plan`: hypert5/tools/plan.py.

The memory plan of train's step on a pod's mesh.
"""

if __name__ == "__main__":
  from hypert5.tools import plan

  plan.run_command()
