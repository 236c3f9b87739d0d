"""Frame-sampling rules against the VIRST / GLUS specs."""

import numpy as np
import pytest

from jax_refvos.pipeline import sampling


@pytest.mark.parametrize("length", [9, 10, 13, 31, 64, 65, 100, 400])
def test_virst_flex_one_frame_per_equal_segment(length):
    rng = np.random.default_rng(length)
    for _ in range(20):
        idx = sampling.virst_vlm_indices(length, rng)
        t = (min(64, length) // 4) * 4
        assert len(idx) == t and t % 4 == 0
        split = np.linspace(0, length, t + 1).astype(int)
        assert np.all(idx >= split[:-1]) and np.all(idx < split[1:])
        assert np.all(np.diff(idx) > 0)


@pytest.mark.parametrize("length", [1, 3, 7, 8])
def test_virst_short_videos_padded_to_8(length):
    idx = sampling.virst_vlm_indices(length, np.random.default_rng(0))
    assert idx.tolist() == list(range(length)) + [length - 1] * (8 - length)


def test_virst_sam_subset_sorted_within_vlm():
    rng = np.random.default_rng(0)
    for n in (8, 12, 32, 64):
        pos = sampling.virst_sam_positions(n, rng)
        assert len(pos) == min(32, n) and len(set(pos.tolist())) == len(pos)
        assert np.all(np.diff(pos) > 0) and pos.max() < n


def test_virst_eval_anchors_round_half_even():
    assert sampling.virst_eval_anchors(32).tolist() == [0, 4, 9, 13, 18, 22, 27, 31]
    assert sampling.virst_eval_anchors(12).tolist() == [0, 6, 11]  # 5.5 -> 6 (even)
    assert sampling.virst_eval_anchors(20).tolist() == [0, 5, 10, 14, 19]  # 9.5 -> 10
    assert sampling.virst_eval_anchors(1).tolist() == [0]
    assert sampling.virst_eval_anchors(3).tolist() == [0]


def test_virst_train_anchors_and_window():
    rng = np.random.default_rng(1)
    for t in (1, 2, 5, 32):
        for _ in range(20):
            anchors, window = sampling.virst_train_anchors(t, rng)
            assert len(anchors) == min(3, t) and np.all(np.diff(anchors) > 0)
            want = np.zeros(t, bool)
            for a in anchors:
                for d in (-2, -1, 0, 1, 2, 3, 4, 5):
                    if 0 <= a + d < t:
                        want[a + d] = True
            np.testing.assert_array_equal(window, want)


@pytest.mark.parametrize("length", [4, 5, 7, 30, 101])
def test_glus_train_quarters_and_consecutive_queries(length):
    rng = np.random.default_rng(length)
    b = np.linspace(0, length, 5).astype(int)
    starts = set()
    for _ in range(50):
        ctx, q = sampling.glus_train_frames(length, rng)
        assert np.all(ctx >= b[:-1]) and np.all(ctx < b[1:])
        assert np.all(np.diff(q) == 1) and q[0] >= 0 and q[-1] < length
        starts.add(int(q[0]))
    assert starts <= set(range(length - 3))


def test_glus_eval_context_mid_quarter():
    ctx, q = sampling.glus_eval_frames(100)
    assert ctx.tolist() == [12, 37, 62, 87]
    assert q.tolist() == [48, 49, 50, 51]
    ctx, q = sampling.glus_eval_frames(2)
    assert ctx.max() < 2 and q.max() < 2
    with pytest.raises(ValueError):
        sampling.glus_train_frames(3, np.random.default_rng(0))
