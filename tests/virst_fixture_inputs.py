"""Raw inputs and the model of a VIRST fixture directory (layout of shared/fixtures/virst_tiny_dev).

The fixture README ("Dataset path (eval)") gives three preprocessing recipes, each re-derived
bit-exact there: VLM 448 px (PIL bicubic, f64 /255, ImageNet norm, bf16), STF 1024 px (PIL
bilinear, f32 /255, norm, bf16) and propagation 1024 px uint8 (PIL default bicubic).
"""

import json
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from PIL import Image

from jax_refvos.methods.virst import model as virst
from jax_refvos.methods.virst.sam2_config import sam2_config_from_yaml
from jax_refvos.model.backbone.umt import UmtConfig
from jax_refvos.weights import hf

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


def rel_err(got, want) -> float:
    """max|got - want| / max|want| in float64."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.abs(got - want).max() / np.abs(want).max())


def jpegs(fixture: Path) -> list[Image.Image]:
    paths = sorted((fixture / "video" / "vid0").glob("*.jpg"))
    assert paths, f"{fixture}: no video/vid0/*.jpg"
    return [Image.open(p).convert("RGB") for p in paths]


def _normalize(x: np.ndarray) -> np.ndarray:
    return (x - IMAGENET_MEAN) / IMAGENET_STD


def _bf16(x: np.ndarray) -> np.ndarray:
    return x.astype(jnp.bfloat16).astype(np.float32)


def vlm_view(imgs: list[Image.Image]) -> np.ndarray:
    """[t, 448, 448, 3] float32: bicubic, f64 / 255, ImageNet norm, bf16-rounded."""
    out = []
    for im in imgs:
        x = np.asarray(im.resize((448, 448), Image.Resampling.BICUBIC)).astype(np.float64)
        out.append(_bf16(_normalize((x * (1 / 255)).astype(np.float32))))
    return np.stack(out)


def stf_view(imgs: list[Image.Image]) -> np.ndarray:
    """[t, 1024, 1024, 3] float32: bilinear, f32 / 255, ImageNet norm, bf16-rounded."""
    out = []
    for im in imgs:
        x = np.asarray(im.resize((1024, 1024), Image.Resampling.BILINEAR)).astype(np.float32)
        out.append(_bf16(_normalize(x / 255)))
    return np.stack(out)


def prop_view(imgs: list[Image.Image]) -> np.ndarray:
    """uint8 [t, 1024, 1024, 3] (PIL's default resize filter: bicubic)."""
    return np.stack([np.asarray(im.resize((1024, 1024))) for im in imgs])


def prompt(fixture: Path) -> dict:
    return json.loads((fixture / "prompt.json").read_text())


def official_state(fixture: Path) -> dict[str, np.ndarray]:
    return hf.read_safetensors(fixture / "virst_tiny.safetensors")


def official_config(
    fixture: Path, state: dict[str, np.ndarray], *, initial_seg_fusion: bool
) -> virst.VirstConfig:
    yaml = next(fixture.glob("sam2*.yaml"))
    return virst.VirstConfig.from_official(
        json.loads((fixture / "config_llm_virst.json").read_text()),
        umt=UmtConfig.from_json(json.loads((fixture / "config_umt_tiny.json").read_text())),
        sam2=sam2_config_from_yaml(yaml),
        vocab_size=state["model.embed_tokens.weight"].shape[0],
        source="config_llm_virst.json",
        initial_seg_fusion=initial_seg_fusion,
    )


def official_model(
    fixture: Path, state: dict[str, np.ndarray], *, initial_seg_fusion: bool
) -> virst.Virst:
    cfg = official_config(fixture, state, initial_seg_fusion=initial_seg_fusion)
    return virst.from_official_state(state, cfg, source=str(fixture / "virst_tiny.safetensors"))


def gt_masks_1024(acts) -> np.ndarray:
    """float32 [t, 1024, 1024] GT the official training losses used."""
    return np.unpackbits(acts["in_gt_masks_1024_packbits"], axis=-1).astype(np.float32)
