"""Typed views of a training config's sections (`configs/virst.py`): unknown or mistyped keys
fail early with the section named (`config_lib.to_dataclass`)."""

import dataclasses

import ml_collections

from jax_refvos import config_lib, losses
from jax_refvos.datasets.synthetic import SynthConfig
from jax_refvos.model.anchor_updater import AnchorConfig
from jax_refvos.training.optim import OptimConfig


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelSection:
    preset: str = "tiny"  # tiny | 7b (model/virst_presets.py)
    init: str = ""  # weights dir to start from ("" = random init)
    image_size: int = 128
    vlm_size: int = 80
    llm_width: int = 64
    sam_width: int = 256
    fusion_grid: int = 0  # 0 = image_size / 128
    initial_seg_fusion: bool = True
    lora_rank: int = 0  # LoRA adapters on the LLM's decoder layers (0 = none)
    lora_alpha: float = 16.0


@dataclasses.dataclass(frozen=True, kw_only=True)
class DataSection:
    synth_root: str = ""  # generated when the train records are missing ("" = never)
    train_records: str = ""
    tokenizer_dir: str = ""  # "" = the synthetic tokenizer; relative = inside model.init
    batch_size: int = 2  # videos per process and step
    vlm_frames: int = 8
    sam_frames: int = 8
    max_expressions: int = 2
    max_text_len: int = 128
    num_workers: int = 0


@dataclasses.dataclass(frozen=True, kw_only=True)
class MeshSection:
    """Device counts per mesh axis; -1 = the rest; all 0 = automatic (`virst_loop.make_mesh`)."""

    data: int = -1
    fsdp: int = 1
    model: int = 1


# Config section -> the dataclass that consumes it (the scalars are the run's own settings).
SECTIONS = {
    "model": ModelSection,
    "data": DataSection,
    "mesh": MeshSection,
    "optim": OptimConfig,
    "anchors": AnchorConfig,
    "loss": losses.VirstLossConfig,
    "synth": SynthConfig,
}
SCALARS = {
    "variant",
    "seed",
    "steps",
    "log_every",
    "ckpt_every",
    "keep_checkpoints",
    "trainable",
    "skip_nonfinite",
    "peak_flops",
}


def validate(c: ml_collections.ConfigDict, source: str = "config") -> None:
    """Every section builds its dataclass; no unknown top-level key."""
    for key in c:
        if key in SCALARS:
            continue
        if key not in SECTIONS:
            raise ValueError(f"{source}: unknown section {key!r}")
        config_lib.to_dataclass(SECTIONS[key], c[key], where=f"{source}: {key}")
