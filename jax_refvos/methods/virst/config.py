"""VIRST's part of a training config (`configs/virst.py`): typed sections and trainable rules.

The trainer owns `method`, `seed`, `steps`, the cadences, `mesh` and `optim`
(`training/run_config.py`); these are VIRST's. Unknown or mistyped keys fail early with the
section named (`config_lib.to_dataclass`).
"""

import dataclasses

from jax_refvos.datasets.synthetic import SynthConfig
from jax_refvos.methods.virst.anchor_updater import AnchorConfig
from jax_refvos.methods.virst.losses import VirstLossConfig
from jax_refvos.training.trainable import EVERYTHING, TrainableSpec


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelSection:
    """How the model is made. With `init` (a VIRST weights dir) every shape comes from the
    weights dir's recorded components; the size keys only shape a model built from `preset`."""

    preset: str = "tiny"  # tiny | 7b (methods/virst/presets.py), when not starting from `init`
    init: str = ""  # VIRST weights dir to start from ("" = random init of `preset`)
    image_size: int = 128  # tiny: SAM2 input side
    vlm_size: int = 80  # tiny: UMT input side
    llm_width: int = 64  # tiny: LLM width
    sam_width: int = 256  # tiny: SAM2 d_model
    fusion_grid: int = 0  # tiny: ST-Fusion grid side (0 = image_size / 128)
    initial_seg_fusion: bool = True
    lora_rank: int = 0  # LoRA adapters on the LLM's decoder layers (0 = none)
    lora_alpha: float = 16.0


@dataclasses.dataclass(frozen=True, kw_only=True)
class DataSection:
    synth_root: str = ""  # generated when the train records are missing ("" = never)
    train_records: str = ""  # `refvos convert` output (a dir with manifest.json)
    tokenizer_dir: str = ""  # "" = model.init's, else the synthetic one; relative = inside init
    batch_size: int = 2  # videos per process and step
    vlm_frames: int = 8
    sam_frames: int = 8
    max_expressions: int = 2
    max_text_len: int = 128
    num_workers: int = 0


# Config section -> the dataclass that consumes it.
SECTIONS = {
    "model": ModelSection,
    "data": DataSection,
    "anchors": AnchorConfig,
    "loss": VirstLossConfig,
    "synth": SynthConfig,
}
SCALARS = frozenset({"variant", "trainable"})

# VIRST's recipe (reference/virst.md §6.3, mostly inferred), for a model built from official
# weights: UMT and Hiera frozen, LoRA on the LLM, SegPrompter + ISF + the `[SEG]` row trained,
# SAM2's decoder trained.
VIRST_PAPER = TrainableSpec(
    trainable=(
        r"^seg_prompter/",
        r"^initial_seg_fusion_module/",
        r"^seg_model/sam_mask_decoder/",
        r"/lora_[AB]/",  # lora.LoraLinear adapters (peft names)
        r"^lm/model/embed_tokens/",
        r"^lm/lm_head/",
    ),
    frozen=(r"^vision_tower/", r"^seg_model/image_encoder/"),
)
# config `trainable` -> spec; from scratch (the tiny preset) everything trains.
TRAINABLE = {"everything": EVERYTHING, "virst_paper": VIRST_PAPER}
