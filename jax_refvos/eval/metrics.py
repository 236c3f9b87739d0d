"""Region similarity J and boundary F-measure, exactly as the DAVIS-2017 / MeViS evaluation code.

Follows `utils/evaluation/metrics.py` of AIDASLab/VIRST (= davis2017-evaluation `metrics.py`, used
by the MeViS `eval_mevis.py`): `db_eval_iou`, `f_measure`, `_seg2bmap`.

- J_t = |P ∩ G| / |P ∪ G|, and 1 when the union is empty.
- F_t: boundaries by `seg2bmap` (a pixel is on the boundary if it differs from its east, south or
  south-east neighbour; the last row compares east only, the last column south only, the
  bottom-right pixel is never a boundary), boundary pixels of one mask count as matched when a
  boundary pixel of the other lies in the disk x² + y² ≤ r² around them (`cv2.dilate` with
  `skimage.morphology.disk(r)`, nothing outside the image), r = ceil(0.008 · √(h² + w²)).
  Precision/recall special cases: no predicted boundary → (1, 0) unless the GT has none either
  → (1, 1); no GT boundary → (0, 1). F = 2PR / (P + R), 0 when P + R = 0.

Everything is vectorised over frames (`t`) with numpy and computed inside the bounding box of the
two masks: pixels outside it contribute nothing to any count, so cropping changes no number (the
crop keeps a one-pixel margin and the image border, which `seg2bmap` treats specially). Instead of
dilating whole images, the matched-pixel counts use row prefix sums of one boundary map and gather
them at the other map's boundary pixels, one disk row at a time: O(h·w + r·|boundary|) per frame.
Results equal the reference bit for bit on the tested cases (tests/eval/test_metrics.py).
"""

import math

import numpy as np
from jaxtyping import Bool, Float, Int

BOUND_TH = 0.008
# Frames per prefix-sum block: bounds the int32 scratch memory to ~16M elements per block.
_BLOCK_ELEMENTS = 1 << 24


def boundary_radius(height: int, width: int, bound_th: float = BOUND_TH) -> int:
    """Disk radius of the boundary tolerance: `bound_th` pixels if ≥ 1, else a fraction of the
    diagonal, computed exactly as the reference (`np.ceil(bound_th * np.linalg.norm(shape))`)."""
    if bound_th >= 1:
        return int(bound_th)
    return int(np.ceil(bound_th * np.linalg.norm((height, width))))


def boundary_map(masks: Bool[np.ndarray, "t h w"]) -> Bool[np.ndarray, "t h w"]:
    """DAVIS `_seg2bmap` for every frame: one-pixel boundaries offset towards the origin."""
    s = np.asarray(masks, bool)
    b = np.zeros_like(s)
    core = s[:, :-1, :-1]
    b[:, :-1, :-1] = (core ^ s[:, :-1, 1:]) | (core ^ s[:, 1:, :-1]) | (core ^ s[:, 1:, 1:])
    b[:, -1, :-1] = s[:, -1, :-1] ^ s[:, -1, 1:]
    b[:, :-1, -1] = s[:, :-1, -1] ^ s[:, 1:, -1]
    return b  # b[:, -1, -1] stays False: the reference never marks the bottom-right pixel


def _disk_half_widths(r: int) -> list[tuple[int, int]]:
    """(dy, a) for every row of the disk x² + y² ≤ r²: the row spans dx ∈ [-a, a]."""
    return [(dy, math.isqrt(r * r - dy * dy)) for dy in range(-r, r + 1)]


def _count_matched(
    src: Bool[np.ndarray, "t h w"], dst: Bool[np.ndarray, "t h w"], r: int
) -> Int[np.ndarray, " t"]:
    """Per frame, the number of `src` pixels with a `dst` pixel within the disk of radius r.

    Equals ``sum(src & cv2.dilate(dst, disk(r)))`` with zero border.
    """
    t, h, w = src.shape
    matched = np.zeros(t, np.int64)
    ti, yi, xi = np.nonzero(src)
    if ti.size == 0:
        return matched
    # Row prefix sums of dst, padded so every gather below stays in range:
    # padded[:, r + y, r + 1 + x] holds dst[:, y, x]; column 0 is the prefix sum's leading zero.
    hp, wp = h + 2 * r, w + 2 * r + 1
    prefix = np.zeros((t, hp, wp), np.int32)
    prefix[:, r : r + h, r + 1 : r + 1 + w] = dst
    np.cumsum(prefix, axis=2, out=prefix)
    flat = prefix.ravel()
    base = (ti * hp + yi + r) * wp + xi + r
    hit = np.zeros(ti.size, bool)
    for dy, a in _disk_half_widths(r):
        row = base + dy * wp
        hit |= flat[row + a + 1] > flat[row - a]
    return np.bincount(ti[hit], minlength=t)


def _crop(gt: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Crops both [t, h, w] masks to their joint bounding box plus a one-pixel margin (clipped to
    the image); None if both are empty everywhere."""
    any_fg = gt.any(axis=0) | pred.any(axis=0)
    rows, cols = np.flatnonzero(any_fg.any(axis=1)), np.flatnonzero(any_fg.any(axis=0))
    if rows.size == 0:
        return None
    h, w = any_fg.shape
    y0, y1 = max(rows[0] - 1, 0), min(rows[-1] + 2, h)
    x0, x1 = max(cols[0] - 1, 0), min(cols[-1] + 2, w)
    return gt[:, y0:y1, x0:x1], pred[:, y0:y1, x0:x1]


def _frame_scores_block(gt: np.ndarray, pred: np.ndarray, r: int) -> tuple[np.ndarray, np.ndarray]:
    t = gt.shape[0]
    cropped = _crop(gt, pred)
    if cropped is None:  # both empty in every frame: J = 1 and (P, R) = (1, 1)
        return np.ones(t), np.ones(t)
    gt, pred = cropped
    inter = np.count_nonzero(gt & pred, axis=(1, 2))
    union = np.count_nonzero(gt | pred, axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        j = inter / union
    j[union == 0] = 1.0

    gt_b, pred_b = boundary_map(gt), boundary_map(pred)
    n_fg = np.count_nonzero(pred_b, axis=(1, 2))
    n_gt = np.count_nonzero(gt_b, axis=(1, 2))
    fg_match = _count_matched(pred_b, gt_b, r)
    gt_match = _count_matched(gt_b, pred_b, r)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(n_fg > 0, fg_match / n_fg, 1.0)
        recall = np.where(n_gt > 0, gt_match / n_gt, 1.0)
    # Reference special cases: boundary only in the prediction -> (0, 1); only in the GT -> (1, 0).
    precision = np.where((n_fg > 0) & (n_gt == 0), 0.0, precision)
    recall = np.where((n_fg == 0) & (n_gt > 0), 0.0, recall)
    denom = precision + recall
    with np.errstate(invalid="ignore", divide="ignore"):
        f = np.where(denom > 0, 2 * precision * recall / denom, 0.0)
    return j, f


def _as_bool(x) -> np.ndarray:
    x = np.asarray(x)
    return x if x.dtype == bool else x != 0


def frame_scores(
    gt: Bool[np.ndarray, "t h w"], pred: Bool[np.ndarray, "t h w"], bound_th: float = BOUND_TH
) -> tuple[Float[np.ndarray, " t"], Float[np.ndarray, " t"]]:
    """Per-frame (J, F) of binary masks, float64 in [0, 1]; any non-zero value is foreground."""
    gt, pred = _as_bool(gt), _as_bool(pred)
    if gt.shape != pred.shape or gt.ndim != 3:
        raise ValueError(f"gt {gt.shape} and pred {pred.shape} must both be [t, h, w]")
    t, h, w = gt.shape
    r = boundary_radius(h, w, bound_th)
    step = max(1, _BLOCK_ELEMENTS // ((h + 2 * r) * (w + 2 * r + 1)))
    parts = [
        _frame_scores_block(gt[i : i + step], pred[i : i + step], r) for i in range(0, t, step)
    ]
    if not parts:
        return np.zeros(0), np.zeros(0)
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def region_similarity(
    gt: Bool[np.ndarray, "t h w"], pred: Bool[np.ndarray, "t h w"]
) -> Float[np.ndarray, " t"]:
    """Per-frame J (DAVIS `db_eval_iou`)."""
    gt, pred = _as_bool(gt), _as_bool(pred)
    inter = np.count_nonzero(gt & pred, axis=(-2, -1))
    union = np.count_nonzero(gt | pred, axis=(-2, -1))
    with np.errstate(invalid="ignore", divide="ignore"):
        j = np.asarray(inter / union, np.float64)
    j[union == 0] = 1.0
    return j


def boundary_f_measure(
    gt: Bool[np.ndarray, "t h w"], pred: Bool[np.ndarray, "t h w"], bound_th: float = BOUND_TH
) -> Float[np.ndarray, " t"]:
    """Per-frame boundary F (DAVIS `db_eval_boundary`)."""
    return frame_scores(gt, pred, bound_th)[1]
