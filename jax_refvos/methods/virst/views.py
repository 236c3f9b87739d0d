"""VIRST's VLM and ST-Fusion views of the sampled frames of a video (`video_io.Video` or
`video_io.RecordVideo`), as the official eval builds them (fixture README "Dataset path"): the
VLM view at the UMT input size (448 px released, PIL bicubic), the ST-Fusion view at the SAM 2
size (1024 px released, PIL bilinear), both ImageNet-normalised and rounded through bfloat16.
"""

import numpy as np
from PIL import Image

VLM_SIZE = 448  # the UMT tower's input size (the fixture's VLM view)
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


def frame_views(
    video,
    vlm_idx: np.ndarray,
    sam_idx: np.ndarray,
    sam_size: int,
    vlm_size: int = VLM_SIZE,
):
    """VLM float32[tv, V, V, 3] (V = `vlm_size`, the UMT input; bicubic, ImageNet-normalised,
    bf16-rounded) and STF float32[ts, S, S, 3] (bilinear, normalised, bf16-rounded) views of the
    sampled frames, as `tests/methods/virst/test_virst_end_to_end_fixture.py`; only those frames are
    decoded."""
    import jax.numpy as jnp

    def prep(x: np.ndarray) -> np.ndarray:
        return ((x - IMAGENET_MEAN) / IMAGENET_STD).astype(jnp.bfloat16).astype(np.float32)

    vlm = np.empty((len(vlm_idx), vlm_size, vlm_size, 3), np.float32)
    stf = np.empty((len(sam_idx), sam_size, sam_size, 3), np.float32)
    for i, im in video.images(vlm_idx):
        small = np.asarray(im.resize((vlm_size,) * 2, Image.Resampling.BICUBIC))
        vlm[vlm_idx == i] = prep((small.astype(np.float64) * (1 / 255)).astype(np.float32))
        if i in sam_idx:
            big = np.asarray(im.resize((sam_size,) * 2, Image.Resampling.BILINEAR))
            stf[sam_idx == i] = prep(big.astype(np.float32) / 255)
    return vlm, stf
