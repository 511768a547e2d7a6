"""Training: the optimizer, the train loop's batches (data.py), the one set-up that
builds a jitted train step from a config (trainer_setup.py, shared by the loop,
`hypert5.plan` and `hypert5.bench`) and the loop itself (loop.py)."""
