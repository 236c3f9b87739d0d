"""Decode, resize and normalise frames and masks the way the references do (host side, numpy).

Views:
  * VIRST VLM (UMT, VideoChat-Flash `umt_encoder.py::UMTImageProcessor`): square resize to 448
    with PIL bicubic, /255, ImageNet mean/std.
  * GLUS VLM (CLIP, transformers `CLIPImageProcessor` defaults): shortest side to 224 with PIL
    bicubic, centre crop 224, /255, CLIP mean/std.
  * SAM2 (both): square resize to 1024 ignoring the aspect ratio, /255, ImageNet mean/std.
  * Masks: binary, resized like VIRST's `data/transforms.py::SAM2MaskTransform` (bilinear on
    uint8 {0,1}).

Images stay uint8 in the batch; `normalize_imagenet` / `normalize_clip` work on numpy arrays on
the host and on jax arrays on device (the default: 4x less host->device traffic).
"""

import io

import numpy as np
from jaxtyping import Bool, UInt8
from PIL import Image

from jax_refvos.datasets.example import VideoExample

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], np.float32)
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], np.float32)


def normalize(x, mean, std):
    """(x / 255 - mean) / std over the last (channel) axis; numpy or jax in, float32 out."""
    return (x.astype(np.float32) / np.float32(255.0) - mean) / std


def normalize_imagenet(x):
    """SAM2 and UMT normalisation (ImageNet mean/std); uint8[..., 3] -> float32[..., 3]."""
    return normalize(x, IMAGENET_MEAN, IMAGENET_STD)


def normalize_clip(x):
    """CLIP normalisation (OpenAI CLIP mean/std); uint8[..., 3] -> float32[..., 3]."""
    return normalize(x, CLIP_MEAN, CLIP_STD)


def decode_frames(ex: VideoExample, indices) -> dict[int, Image.Image]:
    """Decodes each distinct frame index once; {index: RGB PIL image}."""
    out = {}
    for i in sorted({int(i) for i in np.asarray(indices).reshape(-1)}):
        with Image.open(io.BytesIO(ex.frame_bytes[i])) as im:
            # DEVIATION(virst): VIRST decodes its VLM frames with cv2 and its SAM frames with
            # PIL; we decode every frame once with PIL (JPEG decoders may differ by 1 LSB).
            out[i] = im.convert("RGB")
    return out


def resize_square(img: Image.Image, size: int, resample: int) -> UInt8[np.ndarray, "s s 3"]:
    """Square resize ignoring the aspect ratio (PIL, antialiased when downscaling)."""
    return np.asarray(img.resize((size, size), resample=resample))


def vlm_view_virst(img: Image.Image, size: int) -> UInt8[np.ndarray, "s s 3"]:
    """UMT view: `transformers.image_transforms.resize` = PIL bicubic to (size, size)."""
    return resize_square(img, size, Image.Resampling.BICUBIC)


def vlm_view_clip(img: Image.Image, size: int) -> UInt8[np.ndarray, "s s 3"]:
    """CLIP view: shortest side to `size` (long side truncated like HF), centre crop."""
    w, h = img.size
    if w <= h:
        new_w, new_h = size, int(size * h / w)
    else:
        new_w, new_h = int(size * w / h), size
    arr = np.asarray(img.resize((new_w, new_h), resample=Image.Resampling.BICUBIC))
    top, left = (new_h - size) // 2, (new_w - size) // 2
    return arr[top : top + size, left : left + size]


def sam_view(img: Image.Image, size: int) -> UInt8[np.ndarray, "s s 3"]:
    """SAM2 view: bilinear to (size, size), aspect ratio ignored.

    VIRST (`SAM2Transform`) resizes the PIL image with torchvision, i.e. PIL bilinear: exact.
    """
    # DEVIATION(glus): GLUS's `SAM2Transforms` resizes the float tensor (torchvision, antialias);
    # we resize uint8 with PIL's antialiased bilinear (same filter, rounded to 1/255).
    return resize_square(img, size, Image.Resampling.BILINEAR)


def resize_mask(mask: Bool[np.ndarray, "h w"], size: int) -> Bool[np.ndarray, "s s"]:
    """Binary mask to (size, size): bilinear on uint8 {0, 1}, as `SAM2MaskTransform` does."""
    # DEVIATION(virst): torchvision's antialiased uint8 bilinear is PIL's algorithm (torchvision
    # tests it against PIL to +-1); we call PIL directly.
    im = Image.fromarray(mask.astype(np.uint8))
    return np.asarray(im.resize((size, size), resample=Image.Resampling.BILINEAR)) > 0


def resize_masks(masks: Bool[np.ndarray, "t h w"], size: int) -> Bool[np.ndarray, "t s s"]:
    out = np.zeros((len(masks), size, size), bool)
    for j, m in enumerate(masks):
        out[j] = resize_mask(m, size)
    return out
