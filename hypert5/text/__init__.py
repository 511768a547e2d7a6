"""Text in and out: the SentencePiece vocabulary (without TensorFlow), how few-shot
contexts are written, and the metrics answers are scored with. The tasks
(hypert5_tasks) and the inference path share them."""
