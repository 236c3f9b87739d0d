"""The SAM 2 training sample (`pipeline/sam2_sample.py`): clips, objects, prompt draws."""

import numpy as np
import pipeline_fixtures as pf
import pytest

from jax_refvos.pipeline import PipelineConfig
from jax_refvos.pipeline.dataset import make_dataset
from jax_refvos.pipeline.sam2_sample import (
    ABSENT,
    box_points,
    click_from_gt,
    sam2_sample,
)

S = 32


def _cfg(**kw):
    kw = {"batch_size": 1, "sam_size": S, "mask_size": S, **kw}
    return PipelineConfig.sam2(mixture={"x": ("unused", 1.0)}, **kw)


def _sample(ex, seed, **kw):
    return sam2_sample(ex, 0, -1, np.random.default_rng(seed), _cfg(**kw))


def test_clip_is_consecutive_frames_and_objects_are_visible_on_its_first_frame():
    ex, masks = pf.make_video("v", 12)
    for seed in range(20):
        s = _sample(ex, seed)
        idx = s["frame_index"]
        assert s["frame_valid"].all() and (np.diff(idx) == 1).all()
        n = int(s["obj_valid"].sum())
        assert 1 <= n <= 3
        # every chosen object is visible on the clip's first frame (track 1 is absent on frame 0)
        assert s["masks"][:n, 0].any(axis=(-2, -1)).all()
        assert not s["masks"][n:].any()


def test_short_video_is_padded_and_second_initial_frame_is_a_real_frame():
    ex, _ = pf.make_video("v", 3)
    for seed in range(30):
        s = _sample(ex, seed)
        assert s["frame_valid"].tolist() == [True] * 3 + [False] * 5
        assert (s["frame_index"][3:] == -1).all()
        if s["init_valid"][1]:
            assert 1 <= s["init_frames"][1] < 3
        assert s["init_frames"][0] == 0
        if s["correct_frame"] >= 0:
            assert s["use_pt"] and s["correct_frame"] not in s["init_frames"][s["init_valid"]]


def test_prompt_kinds_follow_the_official_probabilities():
    ex, _ = pf.make_video("v", 12)
    draws = [_sample(ex, seed) for seed in range(400)]
    use_pt = np.mean([d["use_pt"] for d in draws])
    two_init = np.mean([d["init_valid"][1] for d in draws])
    corrected = np.mean([d["correct_frame"] >= 0 for d in draws if d["use_pt"]])
    boxes = [
        (d["init_labels"][j, 0] == [2, 3]).all()
        for d in draws
        if d["use_pt"]
        for j in range(int(d["obj_valid"].sum()))
    ]
    assert abs(use_pt - 0.5) < 0.08 and abs(two_init - 0.5) < 0.08
    # one initial frame: corrected frames 1 or 2 (P 1/2 of an extra one); two: none extra
    assert abs(corrected - 0.25) < 0.08
    assert abs(np.mean(boxes) - 0.5) < 0.08
    for d in draws:
        if not d["use_pt"]:
            assert (d["init_labels"] == ABSENT).all() and d["correct_frame"] == -1


def test_clicks_lie_in_the_mask_and_boxes_around_it():
    rng = np.random.default_rng(0)
    mask = np.zeros((S, S), bool)
    mask[5:15, 8:20] = True
    for _ in range(50):
        (x, y), label = click_from_gt(mask, rng)
        assert label == 1 and mask[int(y), int(x)]
        pts, labels = box_points(mask, rng)
        assert labels.tolist() == [2, 3]
        # corners within 10 % of the box side (1.1 / 0.9 px) of (8, 5) and (19, 14)
        assert np.abs(pts - [[8, 5], [19, 14]]).max() <= 1.2
    (x, y), label = click_from_gt(np.zeros((S, S), bool), rng)
    assert label == 0  # an empty mask: a background click


def test_same_seed_same_sample_and_the_grain_pipeline_batches_it(tmp_path):
    ex, _ = pf.make_video("v", 12)
    a, b = _sample(ex, 3), _sample(ex, 3)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    path = pf.write_dir(tmp_path, "synth", videos=4)
    ds = make_dataset(
        PipelineConfig.sam2(
            mixture={"synth": (path, 1.0)}, sam_size=S, mask_size=S, batch_size=2, read_threads=1
        ),
        process_index=0,
        process_count=1,
    )
    batch = next(iter(ds))
    assert batch["frames"].shape == (2, 8, S, S, 3) and batch["masks"].shape == (2, 3, 8, S, S)
    assert batch["init_points"].shape == (2, 3, 2, 2, 2)


def test_mask_size_must_equal_the_image_size():
    ex, _ = pf.make_video("v", 12)
    with pytest.raises(ValueError, match="mask_size"):
        sam2_sample(ex, 0, -1, np.random.default_rng(0), _cfg(mask_size=16))
