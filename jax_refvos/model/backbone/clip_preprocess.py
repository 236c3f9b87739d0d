"""CLIP image preprocessing as GLUS/LISA run it, in numpy + PIL (no torch), channels-last.

Reproduces transformers' PIL `CLIPImageProcessor` defaults (the 4.x class GLUS uses;
`CLIPImageProcessorPil` in transformers 5.x), step by step:
1. RGB uint8; resize with PIL BICUBIC so the short side is `size` and the long side
   `int(size * long / short)` (truncated);
2. center crop `crop_size` x `crop_size` at top = (H - crop) // 2, left = (W - crop) // 2;
3. x * (1/255) in float64, cast to float32;
4. (x - mean) / std in float32 with the OpenAI CLIP mean and std.
The same operations in the same precision give bit-identical results.

DEVIATION(transformers 5.x): the default 5.x `CLIPImageProcessor` resizes with torchvision
(tensor bicubic, antialiased) instead of PIL; GLUS was trained with the PIL path, followed here.
"""

from collections.abc import Sequence

import numpy as np
import PIL.Image

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def resized_shape(height: int, width: int, size: int) -> tuple[int, int]:
    """(height, width) with the short side `size` and the long side int(size * long / short)."""
    if width <= height:
        return int(size * height / width), size
    return size, int(size * width / height)


def preprocess(
    image: np.ndarray | PIL.Image.Image,
    *,
    size: int = 224,
    crop_size: int = 224,
    mean: Sequence[float] = CLIP_MEAN,
    std: Sequence[float] = CLIP_STD,
) -> np.ndarray:
    """One RGB frame (uint8[H, W, 3] or a PIL image) -> float32[crop_size, crop_size, 3].

    Raises:
        ValueError: not an RGB uint8 image, or `crop_size` larger than `size`.
    """
    if crop_size > size:
        raise ValueError(f"crop_size {crop_size} exceeds the resize target {size}")
    if isinstance(image, PIL.Image.Image):
        pil = image.convert("RGB") if image.mode != "RGB" else image
    else:
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
            raise ValueError(
                f"expected an RGB uint8 image [H, W, 3], got {image.dtype}{list(image.shape)}"
            )
        pil = PIL.Image.fromarray(image)
    height, width = resized_shape(pil.height, pil.width, size)
    resized = np.asarray(pil.resize((width, height), resample=PIL.Image.Resampling.BICUBIC))
    top, left = (height - crop_size) // 2, (width - crop_size) // 2
    crop = resized[top : top + crop_size, left : left + crop_size]
    x = (crop.astype(np.float64) * (1 / 255)).astype(np.float32)
    return (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)


def preprocess_frames(frames: Sequence[np.ndarray] | np.ndarray, **kwargs) -> np.ndarray:
    """Frames uint8[t, H, W, 3] (or a list of frames of any sizes) -> float32[t, 224, 224, 3]."""
    return np.stack([preprocess(f, **kwargs) for f in frames])
