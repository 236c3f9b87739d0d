"""Weight readers: official PyTorch / HF / peft checkpoints -> our NNX parameters (no torch at
runtime), and our weights dir format (`weights_dir.py`: every component's config, the method)."""
