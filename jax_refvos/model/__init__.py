"""Building-block models in Flax NNX: SAM 2 / 2.1 (`model.sam2`) and the vision-language
backbones (`model.backbone`); the methods built from them live in `jax_refvos/methods/`."""
