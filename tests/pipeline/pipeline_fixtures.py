"""Tiny record directories and configs for the pipeline tests (frames 32x48, sam 64, vlm 32)."""

import io
from pathlib import Path

import numpy as np
from PIL import Image

from jax_refvos.datasets import records, rle
from jax_refvos.datasets.example import ABSENT, Expression, Track, VideoExample
from jax_refvos.pipeline import PipelineConfig

H, W = 32, 48
TEXTS = (
    "the small red circle moving left",
    "the two blue squares that stop",
    "which shape goes back the way it came?",
    "the large green star above the yellow triangle",
)


def jpeg(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def make_video(
    video_id: str, num_frames: int, *, seed: int = 0, dataset: str = "synth", num_exps: int = 4
) -> tuple[VideoExample, np.ndarray]:
    """A video with 3 tracks and `num_exps` expressions; returns (example, masks[k, t, h, w])."""
    rng = np.random.default_rng(seed)
    frames = tuple(jpeg(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)) for _ in range(num_frames))
    masks = np.zeros((3, num_frames, H, W), bool)
    for k in range(3):
        for t in range(num_frames):
            y, x = rng.integers(0, H - 8), rng.integers(0, W - 8)
            masks[k, t, y : y + 8 + k * 3, x : x + 10] = True
    masks[1, 0] = False
    tracks = tuple(
        Track(
            str(100 + k),
            k + 1,
            tuple(
                rle.encode(masks[k, t])["counts"].encode() if masks[k, t].any() else ABSENT
                for t in range(num_frames)
            ),
        )
        for k in range(3)
    )
    targets = ((0,), (1, 2), (2,), (0, 1))
    exps = tuple(
        Expression(
            str(i), TEXTS[i % 4], "referring", tuple(t + 1 for t in targets[i % 4]), targets[i % 4]
        )
        for i in range(num_exps)
    )
    ex = VideoExample(
        dataset=dataset,
        split="train",
        video_id=video_id,
        frame_names=tuple(f"{i:05d}" for i in range(num_frames)),
        frame_bytes=frames,
        height=H,
        width=W,
        tracks=tracks,
        expressions=exps,
        has_masks=True,
    )
    return ex, masks


def write_dir(
    root: Path,
    name: str,
    *,
    videos: int = 6,
    fmt: str = "arrayrecord",
    shards: int = 2,
    lengths=(3, 9, 12, 20, 5, 16),
    num_exps: int = 4,
) -> str:
    exs = [
        make_video(
            f"{name}_{i}",
            lengths[i % len(lengths)],
            seed=i,
            dataset=name,
            num_exps=1 + (i + num_exps - 1) % num_exps,
        )[0]
        for i in range(videos)
    ]
    out = root / f"{name}_{fmt}"
    records.write_records(exs, out, format=fmt, num_shards=shards, dataset=name)
    return str(out)


def tiny_cfg(method: str, mixture: dict, **kw) -> PipelineConfig:
    base = dict(
        mixture=mixture,
        batch_size=2,
        sam_size=64,
        mask_size=16,
        vlm_size=32,
        vlm_frames=16,
        sam_frames=8,
        max_text_len=160,
        read_threads=1,
        read_buffer=2,
        shuffle_buffer=4,
    )
    base.update(kw)
    if method == "glus":
        base["vlm_size"] = kw.get("vlm_size", 24)
        base["max_text_len"] = kw.get("max_text_len", 320)
        return PipelineConfig.glus(**base)
    return PipelineConfig.virst(**base)
