"""Small random `VideoExample`s for tests (frames are real JPEGs, masks real COCO RLE)."""

import io

import numpy as np
from PIL import Image

from jax_refvos.datasets import rle
from jax_refvos.datasets.example import ABSENT, Expression, Track, VideoExample


def jpeg_bytes(pixels: np.ndarray, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def make_example(
    video_id: str = "v0",
    *,
    seed: int = 0,
    num_frames: int = 4,
    height: int = 24,
    width: int = 32,
    num_tracks: int = 3,
    dataset: str = "synth",
    split: str = "train",
    has_masks: bool = True,
    foreground: bool = False,
) -> tuple[VideoExample, np.ndarray]:
    """Returns (example, masks bool[num_tracks, t, h, w]); track 1 is absent in frame 0."""
    rng = np.random.default_rng(seed)
    frames = tuple(
        jpeg_bytes(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
        for _ in range(num_frames)
    )
    masks = rng.random((num_tracks, num_frames, height, width)) < 0.3
    if num_tracks > 1:
        masks[1, 0] = False
    tracks = []
    for k in range(num_tracks):
        rles = tuple(
            (rle.encode(masks[k, i])["counts"].encode() if masks[k, i].any() else ABSENT)
            if has_masks
            else ABSENT
            for i in range(num_frames)
        )
        tracks.append(Track(str(100 + k), k + 1, rles if has_masks else ()))
    exps = (
        Expression("0", "the first thing", "referring", (1,), (0,)),
        Expression("1", "both things moving left", "reasoning", (1, 2), (0, 1)),
        Expression("2", "nothing at all", "no_target", (), ()),
    )
    fg = None
    if foreground:
        fg = tuple(rle.encode(masks[:, i].any(0))["counts"].encode() for i in range(num_frames))
    ex = VideoExample(
        dataset=dataset,
        split=split,
        video_id=video_id,
        frame_names=tuple(f"{i:05d}" for i in range(num_frames)),
        frame_bytes=frames,
        height=height,
        width=width,
        tracks=tuple(tracks),
        expressions=exps,
        has_masks=has_masks,
        foreground=fg,
        extra={"source": "unit-test"},
    )
    return ex, masks
