"""The official MeViS/DAVIS scoring, assembled from independent reference code (test-only).

Per-frame J and F come from `vos_benchmark` (PyPI; its `_seg2bmap` and boundary F are the
davis2017-evaluation code, with `cv2.dilate` + `skimage.morphology.disk`), ground truth from
pycocotools, predictions through `cv2.imread(..., IMREAD_GRAYSCALE)`; the loop restates
`utils/evaluation/eval_rvos.py` of AIDASLab/VIRST: GT = uint8 sum of the expression's anno masks,
all listed frames scored, expression = mean over frames, split = mean over expressions, and an
expression whose video folder is missing scores [0, 0].

The imports are hard on purpose: `bash launch/test.sh` installs them (the [test] extra plus
`vos-benchmark`), and a missing reference must fail the run, not skip the scorer's checks.
"""

import json
import os

import cv2
import numpy as np
from pycocotools import mask as cocomask
from vos_benchmark import evaluator


def frame_j_f(gt: np.ndarray, pred: np.ndarray) -> tuple[float, float]:
    """DAVIS J and F of one frame; both empty -> (1, 1) as db_eval_iou / f_measure give."""
    ev = evaluator.Evaluator(boundary=0.008)
    ev.feed_frame((pred != 0).astype(np.uint8), (gt != 0).astype(np.uint8))
    if not ev.object_iou:
        return 1.0, 1.0
    return float(ev.object_iou[1][0]), float(ev.boundary_f[1][0])


def expression_scores(dataset_root, split, pred_dir, zero=()) -> dict[str, tuple[float, float]]:
    """{"<vid>/<exp_id>": (J, F)} as fractions, in the official way; keys in `zero` score (0, 0)
    without being read (the official loop crashes on a partly missing expression)."""
    base = os.path.join(dataset_root, split)
    with open(os.path.join(base, "meta_expressions.json")) as f:
        videos = json.load(f)["videos"]
    with open(os.path.join(base, "mask_dict.json")) as f:
        mask_dict = json.load(f)
    out = {}
    for vid, video in videos.items():
        for exp_id, exp in video["expressions"].items():
            key = f"{vid}/{exp_id}"
            if key in zero or not os.path.exists(os.path.join(pred_dir, vid)):
                out[key] = (0.0, 0.0)
                continue
            frames = video["frames"]
            first = cv2.imread(
                os.path.join(pred_dir, vid, exp_id, f"{frames[0]}.png"), cv2.IMREAD_GRAYSCALE
            )
            h, w = first.shape
            js, fs = [], []
            for i, frame in enumerate(frames):
                gt = np.zeros((h, w), np.uint8)
                for anno_id in exp["anno_id"]:
                    rle = mask_dict[str(anno_id)][i]
                    if rle:
                        gt += cocomask.decode(
                            {"size": rle["size"], "counts": rle["counts"].encode()}
                        )
                pred = cv2.imread(
                    os.path.join(pred_dir, vid, exp_id, f"{frame}.png"), cv2.IMREAD_GRAYSCALE
                )
                j, f = frame_j_f(gt, pred)
                js.append(j)
                fs.append(f)
            out[key] = (float(np.mean(js)), float(np.mean(fs)))
    return out


def split_scores(per_expression: dict[str, tuple[float, float]]) -> tuple[float, float, float]:
    """(J, F, J&F) in percent, unrounded."""
    j = float(np.mean([v[0] for v in per_expression.values()]))
    f = float(np.mean([v[1] for v in per_expression.values()]))
    return 100 * j, 100 * f, 100 * (j + f) / 2
