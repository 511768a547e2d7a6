"""`python -m hypert5.peft_sweep`: hypert5/experiments/peft_sweep.py.

Section 6, PEFT from random, shared and hypermodel inits.
"""

if __name__ == "__main__":
  from hypert5.experiments import peft_sweep

  peft_sweep.run_command()
