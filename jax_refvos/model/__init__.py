"""Flax NNX models: SAM2 (`model.sam2`), and later the VLM backbones and the VIRST/GLUS heads."""
