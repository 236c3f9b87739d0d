"""SAM 2 / SAM 2.1 in Flax NNX (batch-first, channels-last), verified against `sam2` 1.1.0.

    from jax_refvos.weights import sam2_torch
    predictor = sam2_torch.load_video_predictor("sam2.1_hiera_tiny.pt", "sam2.1_hiera_t")

(`weights/sam2_torch.py` reads the official `.pt`; this package knows no checkpoint format.)
"""

from jax_refvos.model.sam2.config import PRESETS, Sam2Config, from_name
from jax_refvos.model.sam2.image_encoder import ImageEncoder
from jax_refvos.model.sam2.image_predictor import Sam2ImagePredictor
from jax_refvos.model.sam2.mask_decoder import MaskDecoder
from jax_refvos.model.sam2.memory_attention import MemoryAttention
from jax_refvos.model.sam2.memory_bank import MemoryBank
from jax_refvos.model.sam2.memory_encoder import MemoryEncoder
from jax_refvos.model.sam2.prompt_encoder import PromptEncoder
from jax_refvos.model.sam2.propagation import propagate_chunk
from jax_refvos.model.sam2.sam2_model import Sam2Model
from jax_refvos.model.sam2.video_predictor import Sam2VideoPredictor

__all__ = [
    "PRESETS",
    "ImageEncoder",
    "MaskDecoder",
    "MemoryAttention",
    "MemoryBank",
    "MemoryEncoder",
    "PromptEncoder",
    "Sam2Config",
    "Sam2ImagePredictor",
    "Sam2Model",
    "Sam2VideoPredictor",
    "from_name",
    "propagate_chunk",
]
