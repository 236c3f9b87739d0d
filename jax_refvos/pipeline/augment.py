"""Optional augmentations (off by default: neither reference augments RVOS frames).

Each draws its parameters once per sample from the Grain rng and applies them to every view and
mask of the sample, so frames, masks and text stay consistent.
"""

import re

import numpy as np

_LR = re.compile(r"\b(left|right|leftmost|rightmost)\b")
_SWAP = {"left": "right", "right": "left", "leftmost": "rightmost", "rightmost": "leftmost"}


def flip_text(text: str) -> str:
    """Swaps left/right words, so a flipped clip keeps its referring expression true."""
    return _LR.sub(lambda m: _SWAP[m.group(1)], text)


def draw(rng: np.random.Generator, hflip_prob: float, color_jitter: float) -> dict:
    """One sample's augmentation parameters (draws nothing when both are off)."""
    params = {"flip": False, "brightness": 1.0, "contrast": 1.0}
    if hflip_prob > 0:
        params["flip"] = bool(rng.random() < hflip_prob)
    if color_jitter > 0:
        params["brightness"] = float(rng.uniform(1 - color_jitter, 1 + color_jitter))
        params["contrast"] = float(rng.uniform(1 - color_jitter, 1 + color_jitter))
    return params


def apply_image(x: np.ndarray, params: dict) -> np.ndarray:
    """uint8[..., h, w, 3] -> same; flip along w, then brightness and contrast."""
    if params["flip"]:
        x = x[..., ::-1, :]
    b, c = params["brightness"], params["contrast"]
    if b != 1.0 or c != 1.0:
        y = x.astype(np.float32) * b
        mean = y.mean(axis=(-3, -2, -1), keepdims=True)
        x = np.clip((y - mean) * c + mean + 0.5, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(x)


def apply_mask(m: np.ndarray, params: dict) -> np.ndarray:
    """bool[..., h, w] -> same (flip only)."""
    return np.ascontiguousarray(m[..., ::-1]) if params["flip"] else m
