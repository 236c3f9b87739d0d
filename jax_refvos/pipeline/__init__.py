"""Grain input pipeline: record shards -> static-shape batches for VIRST and GLUS.

    from jax_refvos import pipeline
    cfg = pipeline.PipelineConfig.virst(mixture={"mevis": ("data/records/mevis_train", 1.0)})
    it = iter(pipeline.make_dataset(cfg, process_index=0, process_count=1))
    batch = next(it)            # dict of numpy arrays, uint8 images, *_valid masks
    state = it.get_state()      # or grain.checkpoint.CheckpointSave(it) in an Orbax Composite

Images are uint8; normalise on device with `normalize_imagenet` / `normalize_clip`.
"""

from jax_refvos.pipeline.config import PipelineConfig
from jax_refvos.pipeline.dataset import META_KEYS, make_dataset
from jax_refvos.pipeline.image_ops import normalize_clip, normalize_imagenet
from jax_refvos.pipeline.tokenizer import TextTokenizer, load_tokenizer

__all__ = [
    "META_KEYS",
    "PipelineConfig",
    "TextTokenizer",
    "load_tokenizer",
    "make_dataset",
    "normalize_clip",
    "normalize_imagenet",
]
