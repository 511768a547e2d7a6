"""Inference: the one path that pads, scores and decodes batches (infer.py), the
Python API over a trained run (api.py) and the evaluator of benchmark mixtures
(evaluate.py). The API imports neither TensorFlow nor SeqIO; the evaluator reads
SeqIO tasks."""
