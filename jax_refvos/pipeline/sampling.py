"""Frame sampling rules of VIRST and GLUS (pure numpy; the caller passes the rng).

Every function returns indices only; decoding happens later and only for the chosen frames.
Randomness comes from the `np.random.Generator` Grain hands to `random_map`, never from global
state, so a sample is a pure function of (record, seed, element index).
"""

import math

import numpy as np
from jaxtyping import Bool, Int


def virst_vlm_indices(
    num_frames: int, rng: np.random.Generator, *, max_frames: int = 64, min_frames: int = 8
) -> Int[np.ndarray, "t"]:
    """VIRST "flex" VLM frames: video frame indices, a multiple of 4 long, in temporal order.

    `data/rvos_dataset.py::RVOSDataset.sample_data_eval` (policy "flex"): when the video is
    longer than `min_frames`, T = 4 * floor(min(max_frames, L) / 4) equal integer segments
    `linspace(0, L, T + 1).astype(int)` and one uniform draw inside each; a video of exactly
    `min_frames` frames is used whole; a shorter one is padded by repeating its last index.
    """
    if max_frames % 4 or min_frames % 4 or not 0 < min_frames <= max_frames:
        raise ValueError(f"frame caps must be multiples of 4 with 0 < min <= max, got {min_frames}")
    if num_frames < 1:
        raise ValueError("a video needs at least one frame")
    if num_frames > min_frames:
        t = (min(max_frames, num_frames) // 4) * 4
        split = np.linspace(0, num_frames, t + 1).astype(np.int64)
        return rng.integers(split[:-1], split[1:]).astype(np.int64)
    # DEVIATION(virst): the training sampler keeps a video of <= 8 frames unpadded (T may then not
    # be a multiple of 4); we pad it like the eval sampler does, as the 4-frame clip encoder needs.
    idx = np.arange(num_frames, dtype=np.int64)
    return np.concatenate([idx, np.full(min_frames - num_frames, num_frames - 1, np.int64)])


def virst_sam_positions(
    num_vlm: int, rng: np.random.Generator, *, max_frames: int = 32
) -> Int[np.ndarray, "s"]:
    """Positions (into the VLM frame list) of the SAM frames: min(32, T) drawn, kept in order.

    `RVOSDataset._get_item`: `sorted(random.sample(frame_indices, seg_image_length))`.
    """
    k = min(max_frames, num_vlm)
    return np.sort(rng.choice(num_vlm, size=k, replace=False)).astype(np.int64)


def virst_eval_anchors(num_sam: int) -> Int[np.ndarray, "k"]:
    """TDAU anchors at evaluation: round-half-even(linspace(0, T-1, max(1, T // 4))).

    `model/VIRST.py::select_keyframes(is_evaluation=True)`; T=32 gives [0,4,9,13,18,22,27,31].
    """
    if num_sam == 1:
        return np.zeros(1, np.int64)
    k = max(1, num_sam // 4)
    return np.rint(np.linspace(0, num_sam - 1, k)).astype(np.int64)  # rint rounds half to even


def virst_train_anchors(
    num_sam: int, rng: np.random.Generator, *, num_anchors: int = 3, forward: int = 5
) -> tuple[Int[np.ndarray, "k"], Bool[np.ndarray, "s"]]:
    """Training anchors and the window SAM2 processes around them.

    `select_keyframes(is_evaluation=False)`: K = min(3, T) anchors from a random permutation,
    sorted; the extra frames are a+1..a+5 and a-1, a-2 of every anchor, inside [0, T).

    Returns:
      anchors: int64[k] SAM-frame indices, sorted.
      window: bool[s], anchors plus their forward/backward windows.
    """
    window = np.zeros(num_sam, bool)
    if num_sam == 1:
        window[0] = True
        return np.zeros(1, np.int64), window
    k = min(num_anchors, num_sam)
    anchors = np.sort(rng.permutation(num_sam)[:k]).astype(np.int64)
    for a in anchors:
        window[a : min(num_sam, a + forward + 1)] = True
        window[max(0, a - 2) : a] = True
    return anchors, window


def quarter_bounds(num_frames: int, parts: int = 4) -> Int[np.ndarray, "p1"]:
    """`np.linspace(0, T, parts + 1, dtype=int)`: the bins GLUS draws context frames from."""
    return np.linspace(0, num_frames, parts + 1).astype(np.int64)


def glus_train_frames(
    num_frames: int, rng: np.random.Generator, *, context: int = 4, query: int = 4
) -> tuple[Int[np.ndarray, "c"], Int[np.ndarray, "q"]]:
    """GLUS training: one uniform context frame per quarter, `query` consecutive query frames.

    `dataset/refer_video_seg_dataset.py::ReferVideoSegDataset.__getitem__`: start
    `s ~ U{0..T-4}`; context `c_j ~ U{b_j..b_{j+1}-1}` with `b = linspace(0, T, 5).astype(int)`.
    """
    if num_frames < max(context, query):
        raise ValueError(f"GLUS needs >= {max(context, query)} frames, got {num_frames}")
    start = int(rng.integers(0, num_frames - query + 1))
    b = quarter_bounds(num_frames, context)
    ctx = rng.integers(b[:-1], b[1:]).astype(np.int64)
    return ctx, np.arange(start, start + query, dtype=np.int64)


def glus_eval_frames(
    num_frames: int, *, context: int = 4, query: int = 4
) -> tuple[Int[np.ndarray, "c"], Int[np.ndarray, "q"]]:
    """GLUS evaluation: the fixed mid-quarter context frames and a centred query window.

    Context (`inference_iter.py`): `c_j = min(b_j + ceil(T/4) // 2, b_{j+1} - 1)`; T=100 gives
    [12, 37, 62, 87]. The official inference slides the query window over the whole video (that
    is `eval/`'s job); a static eval sample takes the centred window. Videos shorter than the
    window repeat their last frame (the official loaders drop them and score them 0).
    """
    b = quarter_bounds(num_frames, context)
    off = math.ceil(num_frames / context) // 2
    ctx = np.minimum(b[:-1] + off, np.maximum(b[1:] - 1, 0))
    start = max(0, (num_frames - query) // 2)
    q = np.minimum(np.arange(start, start + query), num_frames - 1)
    return np.maximum(ctx, 0).astype(np.int64), q.astype(np.int64)
