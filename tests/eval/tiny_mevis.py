"""Builds a tiny MeViS-layout split full of hard cases, and predictions for it (test-only).

Odd frame sizes (37x53, 3x17, 64x48), 1-pixel objects, objects touching every border, objects
absent in some frames (null RLEs), overlapping multi-object targets, a target absent everywhere,
and predictions that are shifted / noisy / eroded / empty / full, saved in several PNG modes.
"""

import json
from pathlib import Path

import numpy as np
from PIL import Image

from jax_refvos.datasets import rle

# (video id, (h, w), frames)
VIDEOS = (("vid_odd", (37, 53), 5), ("vid_thin", (3, 17), 4), ("vid_multi", (64, 48), 6))


def _object_track(rng, kind: str, t: int, h: int, w: int) -> np.ndarray:
    masks = np.zeros((t, h, w), bool)
    for i in range(t):
        if kind == "blob":
            y, x = rng.integers(0, h), rng.integers(0, w)
            masks[i, y : y + rng.integers(1, h // 2 + 2), x : x + rng.integers(1, w // 2 + 2)] = (
                True
            )
        elif kind == "pixel":
            masks[i, rng.integers(0, h), rng.integers(0, w)] = True
        elif kind == "corner":  # touches the bottom-right corner, where seg2bmap is special
            masks[i, h - 1 - i % 2 :, w - 2 - i % 3 :] = True
        elif kind == "border":  # touches top and left, and the bottom row in odd frames
            masks[i, : max(1, h // 3), : max(1, w // 4)] = True
            if i % 2:
                masks[i, h - 1, :] = True
        elif kind == "noise":
            masks[i] = rng.random((h, w)) < 0.25
        if kind != "pixel" and i == t - 1:
            masks[i] = False  # absent in the last frame: a null RLE
    return masks


def make_split(root: Path, split: str = "valid_u", seed: int = 0) -> dict:
    """Writes `<root>/<split>`; returns {vid: {anno_id: bool[t, h, w]}} for building predictions."""
    rng = np.random.default_rng(seed)
    base = root / split
    meta, mask_dict, gt = {"videos": {}}, {}, {}
    anno = 0
    for vid, (h, w), t in VIDEOS:
        kinds = ["blob", "pixel", "corner", "border", "noise"]
        objects = {}
        for obj_id, kind in enumerate(kinds):
            objects[anno] = (obj_id, _object_track(rng, kind, t, h, w))
            anno += 1
        frames = [f"{i:05d}" for i in range(t)]
        (base / "JPEGImages" / vid).mkdir(parents=True)
        for name in frames:
            Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(
                base / "JPEGImages" / vid / f"{name}.jpg"
            )
        for a, (_, m) in objects.items():
            mask_dict[str(a)] = [rle.encode(f) if f.any() else None for f in m]
        ids = list(objects)
        # single targets, overlapping multi-object targets, and a target that never appears
        targets = [[ids[0]], [ids[1]], [ids[2]], [ids[3], ids[4]], [ids[0], ids[1], ids[2]]]
        exps = {
            str(k): {
                "exp": f"expression {k}",
                "obj_id": [objects[a][0] for a in tgt],
                "anno_id": tgt,
            }
            for k, tgt in enumerate(targets)
        }
        meta["videos"][vid] = {"vid_id": len(meta["videos"]), "frames": frames, "expressions": exps}
        gt[vid] = {a: m for a, (_, m) in objects.items()}
    mask_dict[str(anno)] = [None] * VIDEOS[-1][2]  # an object absent in every frame
    meta["videos"]["vid_multi"]["expressions"]["5"] = {
        "exp": "nothing",
        "obj_id": [9],
        "anno_id": [anno],
    }
    gt["vid_multi"][anno] = np.zeros((VIDEOS[-1][2], *VIDEOS[-1][1]), bool)
    (base / "meta_expressions.json").write_text(json.dumps(meta))
    (base / "mask_dict.json").write_text(json.dumps(mask_dict))
    return gt


def _perturb(rng, masks: np.ndarray, style: int) -> np.ndarray:
    t, h, w = masks.shape
    if style == 0:
        return np.roll(masks, (int(rng.integers(-2, 3)), int(rng.integers(-2, 3))), axis=(1, 2))
    if style == 1:
        return masks ^ (rng.random(masks.shape) < 0.1)
    if style == 2:
        return masks & np.roll(masks, 1, axis=2)
    if style == 3:
        out = masks.copy()
        out[::2] = False
        return out
    if style == 4:
        out = masks.copy()
        out[1::2] = True
        return out
    return masks.copy()


def _save_png(path: Path, mask: np.ndarray, mode: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "L255":
        Image.fromarray(mask.astype(np.uint8) * 255, "L").save(path)
    elif mode == "L1":
        Image.fromarray(mask.astype(np.uint8), "L").save(path)
    elif mode == "P":
        im = Image.fromarray(mask.astype(np.uint8), "P")
        im.putpalette([0, 0, 0, 255, 255, 255] + [0] * 762)
        im.save(path)
    else:
        Image.fromarray(mask).convert("1").save(path)


def make_predictions(root: Path, split: str, pred_dir: Path, gt: dict, seed: int = 1) -> None:
    """Perturbed predictions for every expression, cycling through styles and PNG modes."""
    rng = np.random.default_rng(seed)
    meta = json.loads((root / split / "meta_expressions.json").read_text())["videos"]
    k = 0
    for vid, video in meta.items():
        for exp_id, exp in video["expressions"].items():
            target = np.any([gt[vid][a] for a in exp["anno_id"]], axis=0)
            pred = _perturb(rng, target, k % 6)
            mode = ("L255", "L1", "P", "1")[k % 4]
            for frame, m in zip(video["frames"], pred, strict=True):
                _save_png(pred_dir / vid / exp_id / f"{frame}.png", m, mode)
            k += 1
