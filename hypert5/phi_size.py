"""`python -m hypert5.phi_size`: the size of phi beside a few-shot key/value cache (hypert5/tools/phi_size.py)."""

if __name__ == "__main__":
  from hypert5.tools import phi_size

  phi_size.run_command()
