"""What a sample transform receives, how it picks expressions, and stable integer keys.

An element is `(dataset_index, record_bytes, exp_index)`: `exp_index = -1` in training (the
sampler draws up to `max_expressions` distinct expressions, as both references do with
`np.random.choice(..., replace=False)`), or the one expression an eval element stands for.
"""

import zlib

import numpy as np

from jax_refvos.datasets.example import VideoExample

Element = tuple[int, bytes, int]
TRAIN = -1


def stable_key(*parts) -> np.int32:
    """A 31-bit CRC32 of the parts' text: equal for equal inputs in every process and run."""
    text = "\x1f".join(str(p) for p in parts)
    return np.int32(zlib.crc32(text.encode()) & 0x7FFFFFFF)


def choose_expressions(
    ex: VideoExample, exp_index: int, rng: np.random.Generator, max_expressions: int
) -> list[int]:
    """Indices of the expressions of this sample (drawn without replacement in training)."""
    if exp_index != TRAIN:
        return [exp_index]
    n = len(ex.expressions)
    if n == 0:
        raise ValueError(f"video {ex.video_id!r} has no expressions (filter it out first)")
    return [int(i) for i in rng.choice(n, size=min(max_expressions, n), replace=False)]


def trainable(data: bytes, min_frames: int) -> bool:
    """Training keeps videos with masks, >= 1 expression and >= `min_frames` frames."""
    ex = VideoExample.from_bytes(data)
    return ex.has_masks and bool(ex.expressions) and ex.num_frames >= min_frames


def common_keys(ex: VideoExample, ds_index: int, exps: list[int], cap: int) -> dict:
    """Per-sample bookkeeping shared by both methods (object-contrastive keys included).

    `obj_key` hashes the sorted object-id set (GLUS positives: same video, same sorted obj_id
    array); `exp_key` the expression id; `video_key` the (dataset, video) pair.
    """
    exp_index = np.full(cap, -1, np.int32)
    exp_key = np.zeros(cap, np.int32)
    obj_key = np.zeros(cap, np.int32)
    for j, e in enumerate(exps):
        expr = ex.expressions[e]
        exp_index[j] = e
        exp_key[j] = stable_key(ex.dataset, ex.video_id, expr.exp_id)
        obj_key[j] = stable_key(ex.dataset, ex.video_id, sorted(expr.object_ids))
    return {
        "expr_valid": np.arange(cap) < len(exps),
        "exp_index": exp_index,
        "exp_key": exp_key,
        "obj_key": obj_key,
        "video_key": stable_key(ex.dataset, ex.video_id),
        "dataset_index": np.int32(ds_index),
        "num_frames": np.int32(ex.num_frames),
        "orig_size": np.array([ex.height, ex.width], np.int32),
        "example_valid": np.bool_(True),
    }


def expression_masks(ex: VideoExample, exp: int, indices) -> np.ndarray:
    """bool[t, h, w] ground truth (all-False when the split has no masks)."""
    if not ex.has_masks:
        return np.zeros((len(indices), ex.height, ex.width), bool)
    return ex.expressions[exp].masks(indices)
