"""The models: T5 v1.1 in Flax (Linen) with prefix and LoRA hooks, phi's shapes,
the hypermodel that writes phi, decoding and scoring, and the logical axis names
and rules that shard them over a mesh. Nothing here reads files or data."""
