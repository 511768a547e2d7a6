"""SeqIO tasks and mixtures of HyperT5; importing this package registers them."""
