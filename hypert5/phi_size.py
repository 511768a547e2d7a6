"""`python -m hypert5.phi_size`: hypert5/tools/phi_size.py.

The size of phi beside a few-shot key/value cache.
"""

if __name__ == "__main__":
  from hypert5.tools import phi_size

  phi_size.run_command()
