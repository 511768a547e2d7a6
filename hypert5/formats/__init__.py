"""What is written to disk and read back: HuggingFace safetensors, native model
folders and Orbax training checkpoints, and adapters (ours and HuggingFace PEFT's)."""
