"""`python -m hypert5.plan`: the memory plan of train's step on a pod's mesh (hypert5/tools/plan.py)."""

if __name__ == "__main__":
  from hypert5.tools import plan

  plan.run_command()
