"""Prediction masks on disk: `<pred_dir>/<vid>/<exp_id>/<frame>.png`, single channel, 0 or 255.

Reading accepts any single-channel PNG (L, 1, P, I, I;16): a non-zero value is foreground, as in the
official scorers. Multi-channel images are rejected rather than guessed at.
"""

import io
from pathlib import Path

import numpy as np
from jaxtyping import Bool
from PIL import Image

from jax_refvos.errors import InputError
from jax_refvos.fileio import atomic_write_bytes

SINGLE_CHANNEL_MODES = frozenset({"1", "L", "P", "I", "I;16", "I;16B", "I;16L", "F"})


def read_mask(path: str | Path, size: tuple[int, int] | None = None) -> Bool[np.ndarray, "h w"]:
    """Reads one prediction PNG as bool[h, w]; checks the mode and, if given, the (h, w) size."""
    try:
        with Image.open(path) as im:
            if im.mode not in SINGLE_CHANNEL_MODES:
                raise InputError(f"{path}: expected a single-channel mask PNG, got mode {im.mode}")
            if size is not None and (im.height, im.width) != tuple(size):
                raise InputError(
                    f"{path}: prediction is {im.height}x{im.width} (h x w), "
                    f"but the frame is {size[0]}x{size[1]}"
                )
            return np.asarray(im) != 0
    except FileNotFoundError:
        raise InputError(f"{path}: prediction file missing") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise InputError(f"{path}: not a readable PNG ({e})") from None


def encode_mask_png(mask: Bool[np.ndarray, "h w"]) -> bytes:
    """bool[h, w] -> bytes of an 8-bit grayscale PNG holding 0 / 255."""
    buf = io.BytesIO()
    Image.fromarray(np.where(np.asarray(mask), 255, 0).astype(np.uint8), mode="L").save(buf, "PNG")
    return buf.getvalue()


def write_mask(path: str | Path, mask: Bool[np.ndarray, "h w"]) -> None:
    """Writes one prediction PNG atomically (temp file + rename)."""
    atomic_write_bytes(path, encode_mask_png(mask))
