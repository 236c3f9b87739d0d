"""Weight import: official PyTorch checkpoints -> our NNX parameters (no torch at runtime)."""
