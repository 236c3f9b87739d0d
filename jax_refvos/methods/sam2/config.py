"""SAM 2's part of a training config (`configs/sam2.py`): typed sections, the tiny preset, the
trainable rule.

The trainer owns `method`, `seed`, `steps`, the cadences, `mesh` and `optim`
(`training/run_config.py`); these are SAM 2's. Unknown or mistyped keys fail early with the
section named (`config_lib.to_dataclass`).
"""

import dataclasses

from jax_refvos.datasets.synthetic import SynthConfig
from jax_refvos.model.sam2.config import (
    HieraConfig,
    MaskDecoderConfig,
    MemoryAttentionConfig,
    MemoryEncoderConfig,
    NeckConfig,
    Sam2Config,
    from_name,
)
from jax_refvos.training.trainable import EVERYTHING, TrainableSpec

PRESETS = ("tiny", "large")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelSection:
    """How the model is made: `tiny` from scratch at `image_size` / `width`; `large` from the
    official checkpoint `init` (a SAM 2 / 2.1 `.pt`, its architecture `model_cfg`) or a SAM 2
    weights dir (`refvos import-weights --kind sam2`)."""

    preset: str = "tiny"
    init: str = ""  # large: official .pt or a sam2 weights dir ("" = random init)
    model_cfg: str = "sam2.1_hiera_l"  # large: the official architecture (model/sam2/config.py)
    image_size: int = 128  # input side (tiny; large keeps the checkpoint's 1024 unless set)
    width: int = 64  # tiny: d_model of the neck, decoder and memory attention
    freeze_image_encoder: bool = False  # the official `freeze_image_encoder`
    # `multimask_output_for_tracking` (SAM 2.1: true). The tiny preset turns it off: trained
    # from scratch, three candidates on tracked frames let the model satisfy the min-loss
    # selection with memory-free colour groups (docs/sam2.md, "Status").
    multimask_tracking: bool = True


@dataclasses.dataclass(frozen=True, kw_only=True)
class DataSection:
    synth_root: str = ""  # generated when the train records are missing ("" = never)
    train_records: str = ""  # `refvos convert` output (a dir with manifest.json)
    batch_size: int = 2  # videos (clips) per process and step
    frames: int = 8  # clip length (the official num_frames)
    max_objects: int = 3  # objects per clip (the official max_num_objects)
    hflip_prob: float = 0.0
    num_workers: int = 0


@dataclasses.dataclass(frozen=True, kw_only=True)
class LossSection:
    """`MultiStepMultiMasksAndIous` weights and the click simulation (SAM 2.1 configs)."""

    mask_weight: float = 20.0
    dice_weight: float = 1.0
    iou_weight: float = 1.0
    class_weight: float = 1.0
    num_correction_points: int = 7
    prob_sample_from_gt: float = 0.1


SECTIONS = {
    "model": ModelSection,
    "data": DataSection,
    "loss": LossSection,
    "synth": SynthConfig,
}
SCALARS = frozenset({"variant"})

FROZEN_IMAGE_ENCODER = TrainableSpec(frozen=(r"^image_encoder/",))


def trainable(model: ModelSection) -> TrainableSpec:
    return FROZEN_IMAGE_ENCODER if model.freeze_image_encoder else EVERYTHING


def tiny_sam2(image_size: int = 128, width: int = 64) -> Sam2Config:
    """A small SAM 2.1 for CPU training from scratch: Hiera of 5 blocks (16-d), `width`-d
    neck, memory attention (2 layers) and decoder; the 2.1 flags and 7 memories as released."""
    trunk = HieraConfig(
        embed_dim=16,
        num_heads=1,
        stages=(1, 1, 2, 1),
        global_att_blocks=(3,),
        window_spec=(8, 4, 16, 8),
    )
    base = from_name("sam2.1_hiera_t")
    return dataclasses.replace(
        base,
        name="sam2.1_hiera_tiny_cpu",
        trunk=trunk,
        neck=NeckConfig(d_model=width, backbone_channel_list=trunk.channel_list),
        memory_attention=MemoryAttentionConfig(
            d_model=width, mem_dim=width // 4, num_layers=2, dim_feedforward=4 * width
        ),
        memory_encoder=MemoryEncoderConfig(in_dim=width, out_dim=width // 4),
        mask_decoder=MaskDecoderConfig(
            transformer_mlp_dim=4 * width,
            transformer_num_heads=4,
            iou_head_hidden_dim=width,
        ),
        image_size=image_size,
    )
