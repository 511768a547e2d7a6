"""`python -m hypert5.peft_sweep`: section 6, PEFT from random, shared and hypermodel inits (hypert5/experiments/peft_sweep.py)."""

if __name__ == "__main__":
  from hypert5.experiments import peft_sweep

  peft_sweep.run_command()
