"""SAM 2 training sample: one video -> a clip of consecutive frames, its objects, their prompts.

Follows the official trainer (facebookresearch/sam2 `training/dataset/vos_sampler.py::
RandomUniformSampler`, `training/model/sam2.py::SAM2Train.prepare_prompt_inputs`, and
`sam2/modeling/sam2_utils.py::sample_box_points` / `get_next_point`) for everything that can
be decided before the model runs; the corrective clicks, which depend on the model's masks, are
drawn on the device from `corr_seed`. Shapes (t = sam_frames, the clip length, 8; o =
max_objects, 3; S = sam_size = mask_size):

    frames        uint8[t, S, S, 3]   consecutive frames from a random start (SAM 2 view)
    frame_valid   bool[t]             real frames (a prefix; a video shorter than t is padded)
    frame_index   int32[t]            video frame of each clip frame (-1 pad)
    masks         bool[o, t, S, S]    each object's own mask
    obj_valid     bool[o]             real objects (visible on the clip's first frame)
    use_pt        bool                prompts are clicks/boxes (else the GT mask), P = 0.5
    init_frames   int32[2]            initial conditioning frames: 0, and a random later one
    init_valid    bool[2]             (1 or 2 of them, drawn uniformly)
    correct_frame int32               a tracked frame that also gets corrective clicks (-1 none)
    init_points   float32[o, 2, 2, 2] per object and initial frame: a noisy box as 2 corner
    init_labels   int32[o, 2, 2]        points (labels 2, 3; P = 0.5 of point prompts) or one
                                        click (label 1 or 0, then ABSENT: no point)
    init_multimask bool[o, 2]         the frame's first decode is multimask (one click)
    corr_seed     uint32[2]           the device's randomness for corrective clicks
    + video_key, dataset_index, num_frames, orig_size, example_valid
"""

import numpy as np

from jax_refvos.datasets.example import VideoExample
from jax_refvos.pipeline import augment, element, image_ops
from jax_refvos.pipeline.config import PipelineConfig

PROB_POINT_INPUT = 0.5  # prob_to_use_pt_input_for_train
PROB_BOX_INPUT = 0.5  # prob_to_use_box_input_for_train (of the point-input samples)
NUM_INIT_COND_FRAMES = 2  # num_init_cond_frames_for_train, rand_init_cond_frames_for_train
NUM_FRAMES_TO_CORRECT = 2  # num_frames_to_correct_for_train, rand_frames_to_correct_for_train
BOX_NOISE, BOX_NOISE_BOUND = 0.1, 20.0  # sample_box_points defaults
START_TRIES = 10  # random starts tried for one with a visible object
ABSENT = -2  # a label for "no point" (= model.sam2.sam2_model.ABSENT_POINT)


def box_points(mask: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """`sample_box_points`: the mask's box corners, each moved by up to 10 % of the box side
    (at most 20 px), clamped to the image; labels 2 (top left), 3 (bottom right)."""
    h, w = mask.shape
    ys, xs = np.nonzero(mask)
    if len(xs):  # `mask_to_box`: min/max of the mask's pixel coordinates
        box = np.array([xs.min(), ys.min(), xs.max(), ys.max()], np.float32)
    else:
        box = np.zeros(4, np.float32)
    max_dx = min((box[2] - box[0]) * BOX_NOISE, BOX_NOISE_BOUND)
    max_dy = min((box[3] - box[1]) * BOX_NOISE, BOX_NOISE_BOUND)
    noise = (2 * rng.random(4) - 1) * np.array([max_dx, max_dy, max_dx, max_dy])
    box = np.clip(box + noise, 0, np.array([w, h, w, h], np.float32) - 1)
    return box.reshape(2, 2).astype(np.float32), np.array([2, 3], np.int32)


def click_from_gt(mask: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, int]:
    """`get_next_point(gt, pred=None, "uniform")`: a uniform pixel of the mask, label 1; on an
    empty mask (all correct against an empty prediction) a background pixel, label 0."""
    ys, xs = np.nonzero(mask)
    label = 1
    if not len(xs):
        ys, xs = np.nonzero(~mask)
        label = 0
    j = rng.integers(len(xs))
    return np.array([xs[j], ys[j]], np.float32), label


def _clip_start(ex: VideoExample, t: int, rng: np.random.Generator) -> tuple[int, list[int]]:
    """A random start of `t` consecutive frames whose first frame shows an object, and the
    tracks visible there (the sampler's `visible_object_ids`); [] when no try found one."""
    last = max(ex.num_frames - t, 0)
    for _ in range(START_TRIES):
        start = int(rng.integers(0, last + 1))
        first = [k for k in range(len(ex.tracks)) if ex.tracks[k].rles[start]]
        visible = [k for k in first if ex.track_masks(k, [start]).any()]
        if visible:
            return start, visible
    return start, []


def sam2_sample(
    ex: VideoExample, ds_index: int, exp_index: int, rng: np.random.Generator, cfg: PipelineConfig
) -> dict:
    del exp_index  # SAM 2 trains on objects, not expressions
    t, o, s = cfg.sam_frames, cfg.max_objects, cfg.sam_size
    if cfg.mask_size != s:
        raise ValueError("sam2 samples need mask_size == sam_size (clicks are in image pixels)")
    start, visible = _clip_start(ex, t, rng)
    idx = np.arange(start, min(start + t, ex.num_frames))
    n = len(idx)
    objs = [int(k) for k in rng.permutation(visible)[:o]]
    aug = augment.draw(rng, cfg.hflip_prob, cfg.color_jitter)
    images = image_ops.decode_frames(ex, idx)
    frames = np.zeros((t, s, s, 3), np.uint8)
    for j, i in enumerate(idx):
        frames[j] = image_ops.sam_view(images[int(i)], s)
    masks = np.zeros((o, t, s, s), bool)
    for j, k in enumerate(objs):
        masks[j, :n] = image_ops.resize_masks(ex.track_masks(k, idx), s)
    frames, masks = augment.apply_image(frames, aug), augment.apply_mask(masks, aug)

    # `prepare_prompt_inputs` (training): one draw per sample for the prompt kind and frames.
    use_pt = bool(rng.random() < PROB_POINT_INPUT)
    n_init = int(rng.integers(1, min(NUM_INIT_COND_FRAMES, n), endpoint=True))
    n_correct = n_init
    if use_pt and n_init < NUM_FRAMES_TO_CORRECT:
        n_correct = int(rng.integers(n_init, NUM_FRAMES_TO_CORRECT, endpoint=True))
    init_frames = np.zeros(2, np.int32)
    if n_init == 2:
        init_frames[1] = rng.integers(1, n)
    rest = [f for f in range(n) if f not in init_frames[:n_init]]
    correct_frame = -1
    if use_pt and n_correct > n_init and rest:
        correct_frame = int(rng.choice(rest))

    init_points = np.zeros((o, 2, 2, 2), np.float32)
    init_labels = np.full((o, 2, 2), ABSENT, np.int32)
    init_multimask = np.zeros((o, 2), bool)
    if use_pt:
        for j in range(len(objs)):
            for slot in range(n_init):
                gt = masks[j, init_frames[slot]]
                if rng.random() < PROB_BOX_INPUT:
                    init_points[j, slot], init_labels[j, slot] = box_points(gt, rng)
                else:
                    init_points[j, slot, 0], init_labels[j, slot, 0] = click_from_gt(gt, rng)
                    init_multimask[j, slot] = True
    return {
        "frames": frames,
        "frame_valid": np.arange(t) < n,
        "frame_index": np.concatenate([idx, np.full(t - n, -1)]).astype(np.int32),
        "masks": masks,
        "obj_valid": np.arange(o) < len(objs),
        "use_pt": np.bool_(use_pt),
        "init_frames": init_frames,
        "init_valid": np.arange(2) < n_init,
        "correct_frame": np.int32(correct_frame),
        "init_points": init_points,
        "init_labels": init_labels,
        "init_multimask": init_multimask,
        "corr_seed": rng.integers(0, 2**32, size=2, dtype=np.uint32),
        "video_key": element.stable_key(ex.dataset, ex.video_id),
        "dataset_index": np.int32(ds_index),
        "num_frames": np.int32(ex.num_frames),
        "orig_size": np.array([ex.height, ex.width], np.int32),
        "example_valid": np.bool_(True),
    }
