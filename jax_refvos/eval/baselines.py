"""Reference predictions that need no model, written in the official prediction layout.

- ``union``: every expression predicts the union of all objects its video's expressions refer to
  (the "segment everything that is annotated" baseline; it shows how much a method gains from
  actually reading the expression).
- ``oracle``: the expression's own ground truth (scores J&F = 100; an end-to-end check of the
  writer, the layout and the scorer).
- ``empty``: nothing (J = F = 0 except on frames where the target is absent).
- ``first_mask``: each target object's mask on the first frame where it appears, copied to
  every later frame (nothing before it); the expression predicts the union. What a
  semi-supervised VOS method that does not track at all scores (SAM 2's reference point).
"""

from pathlib import Path

import numpy as np

from jax_refvos import console
from jax_refvos.datasets import mevis_layout
from jax_refvos.eval import masks_io
from jax_refvos.fileio import atomic_directory, atomic_write_bytes

KINDS = ("union", "oracle", "empty", "first_mask")


def _target_masks(masks, anno_ids, video, size, source):
    """bool[t, h, w]: union of `anno_ids` in every frame of `video`."""
    rles = mevis_layout.expression_rles(masks, anno_ids, len(video.frames), source=source)
    out = np.zeros((len(video.frames), *size), bool)
    for i, frame in enumerate(video.frames):
        for anno_id, per_frame in zip(anno_ids, rles, strict=True):
            where = f"{source}: anno_id {anno_id}, frame {frame!r}"
            mask = mevis_layout.decode_frame(per_frame[i], size, where=where)
            if mask is not None:
                out[i] |= mask
    return out


def _first_mask_copies(masks, anno_ids, video, size, source):
    """bool[t, h, w]: the union over `anno_ids` of each object's first non-empty mask, held
    from that frame to the end."""
    out = np.zeros((len(video.frames), *size), bool)
    for anno_id in anno_ids:
        own = _target_masks(masks, (anno_id,), video, size, source)
        seen = np.flatnonzero(own.reshape(len(own), -1).any(-1))
        if len(seen):
            out[seen[0] :] |= own[seen[0]]
    return out


def write_baseline(
    dataset_root: str | Path,
    split: str,
    pred_dir: str | Path,
    kind: str = "union",
    *,
    overwrite: bool = False,
    progress: bool = True,
) -> int:
    """Writes `<pred_dir>/<vid>/<exp_id>/<frame>.png` for every expression; returns their count."""
    if kind not in KINDS:
        raise ValueError(f"unknown baseline {kind!r}; choose from {KINDS}")
    split_path = mevis_layout.split_dir(dataset_root, split)
    videos = mevis_layout.load_videos(split_path)
    masks = mevis_layout.load_mask_dict(split_path) if kind != "empty" else {}
    source = split_path / mevis_layout.MASK_FILE
    count = 0
    with atomic_directory(pred_dir, overwrite=overwrite) as tmp:
        for video in console.progress(
            videos, desc=f"{kind} baseline", unit="video", enabled=progress
        ):
            size = mevis_layout.video_frame_size(split_path, video)
            shared = None
            if kind == "union":
                ids = sorted({a for e in video.expressions for a in (e.anno_ids or ())})
                shared = _target_masks(masks, ids, video, size, source)
            elif kind == "empty":
                shared = np.zeros((len(video.frames), *size), bool)
            shared_png = (
                [masks_io.encode_mask_png(m) for m in shared] if shared is not None else None
            )
            for exp in video.expressions:
                if shared_png is None:
                    pick = _first_mask_copies if kind == "first_mask" else _target_masks
                    own = pick(masks, exp.anno_ids or (), video, size, source)
                    pngs = [masks_io.encode_mask_png(m) for m in own]
                else:
                    pngs = shared_png
                for frame, png in zip(video.frames, pngs, strict=True):
                    atomic_write_bytes(tmp / video.video_id / exp.exp_id / f"{frame}.png", png)
                count += 1
    return count
