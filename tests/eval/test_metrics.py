"""J and F against hand-computed cases and against the official DAVIS code on hard random cases."""

import davis_reference as davis
import numpy as np
import pytest

from jax_refvos.eval import metrics


def test_boundary_map_hand_written():
    s = np.zeros((1, 5, 6), bool)
    s[0, 1:3, 1:4] = True  # a 2x3 block
    want = np.array(
        [
            [1, 1, 1, 1, 0, 0],  # row 0: the south / south-east neighbours are in the block
            [1, 0, 0, 1, 0, 0],
            [1, 1, 1, 1, 0, 0],
            [0, 0, 0, 0, 0, 0],
            [0, 0, 0, 0, 0, 0],
        ],
        bool,
    )
    np.testing.assert_array_equal(metrics.boundary_map(s)[0], want)


def test_boundary_map_border_rules():
    s = np.ones((1, 3, 4), bool)  # full frame: no transitions anywhere, even at the image border
    assert not metrics.boundary_map(s).any()
    s = np.zeros((1, 3, 4), bool)
    s[0, 2, 3] = True  # only the bottom-right pixel: seg2bmap never marks that pixel
    want = np.zeros((3, 4), bool)
    want[1, 2] = want[1, 3] = want[2, 2] = True
    np.testing.assert_array_equal(metrics.boundary_map(s)[0], want)


@pytest.mark.parametrize(
    ("h", "w", "r"), [(480, 854, 8), (720, 1280, 12), (240, 320, 4), (1, 1, 1)]
)
def test_boundary_radius(h, w, r):
    assert metrics.boundary_radius(h, w) == r


def test_special_cases_by_hand():
    empty, full = np.zeros((1, 9, 9), bool), np.zeros((1, 9, 9), bool)
    full[0, 2:6, 3:7] = True
    j, f = metrics.frame_scores(empty, empty)
    assert (j[0], f[0]) == (1.0, 1.0)  # nothing to find, nothing found
    j, f = metrics.frame_scores(empty, full)
    assert (j[0], f[0]) == (0.0, 0.0)  # GT boundary empty: (P, R) = (0, 1) -> F = 0
    j, f = metrics.frame_scores(full, empty)
    assert (j[0], f[0]) == (0.0, 0.0)  # prediction boundary empty: (P, R) = (1, 0) -> F = 0
    j, f = metrics.frame_scores(full, full)
    assert (j[0], f[0]) == (1.0, 1.0)
    everything = np.ones((1, 9, 9), bool)  # no boundary at all: J = 0 but F = 1 (official quirk)
    j, f = metrics.frame_scores(everything, empty)
    assert (j[0], f[0]) == (0.0, 1.0)


def test_shift_within_and_beyond_tolerance():
    h = w = 100  # r = ceil(0.008 * 141.4) = 2
    gt = np.zeros((1, h, w), bool)
    gt[0, 40:60, 40:60] = True
    shifted = [metrics.frame_scores(gt, np.roll(gt, d, axis=2))[1][0] for d in (1, 2, 3, 6, 30)]
    assert shifted[:2] == [1.0, 1.0]  # within the tolerance disk every boundary pixel matches
    assert 1.0 > shifted[2] > shifted[3] > 0.0
    assert shifted[4] == 0.0  # disjoint, far apart: no boundary pixel within r


def _random_case(rng, kind):
    t = int(rng.integers(1, 4))
    h, w = (int(v) for v in rng.integers(1, 80, size=2))
    gt, pred = np.zeros((t, h, w), np.uint8), np.zeros((t, h, w), np.uint8)
    for i in range(t):
        for m in (gt, pred):
            if kind == "noise":
                m[i] = rng.random((h, w)) < rng.uniform(0.02, 0.6)
            elif kind == "blobs":
                for _ in range(int(rng.integers(1, 4))):
                    y, x = rng.integers(0, h), rng.integers(0, w)
                    m[i, y : y + rng.integers(1, h + 1), x : x + rng.integers(1, w + 1)] = 1
            elif kind == "pixel":
                m[i, rng.integers(0, h), rng.integers(0, w)] = 1
            elif kind == "border":
                m[i, -int(rng.integers(1, h + 1)) :, :] = 1
                m[i, :, -int(rng.integers(1, w + 1)) :] = 1
        if kind == "one_empty":
            gt[i] = rng.random((h, w)) < 0.3
    return gt, pred * 255


@pytest.mark.parametrize("kind", ["noise", "blobs", "pixel", "border", "one_empty"])
def test_frame_scores_equal_official(kind):
    rng = np.random.default_rng(abs(hash(kind)) % 2**32)
    for _ in range(40):
        gt, pred = _random_case(rng, kind)
        j, f = metrics.frame_scores(gt, pred)
        want = np.array([davis.frame_j_f(g, p) for g, p in zip(gt, pred, strict=True)])
        np.testing.assert_allclose(j, want[:, 0], rtol=0, atol=1e-12)
        np.testing.assert_allclose(f, want[:, 1], rtol=0, atol=1e-12)


def test_large_radius_and_moving_object_equal_official():
    rng = np.random.default_rng(7)
    t, h, w = 3, 481, 855  # odd sizes, r = 8
    yy, xx = np.mgrid[:h, :w]
    gt = np.stack(
        [((yy - 240) / 110) ** 2 + ((xx - 300 - 40 * i) / 150) ** 2 < 1 for i in range(t)]
    )
    pred = np.roll(gt, (5, -9), axis=(1, 2)) ^ (rng.random(gt.shape) < 0.001)
    j, f = metrics.frame_scores(gt, pred)
    want = np.array([davis.frame_j_f(g, p) for g, p in zip(gt, pred, strict=True)])
    np.testing.assert_allclose(np.stack([j, f], 1), want, rtol=0, atol=1e-12)


def test_block_splitting_changes_nothing(monkeypatch):
    rng = np.random.default_rng(3)
    gt = rng.random((7, 30, 41)) < 0.3
    pred = rng.random((7, 30, 41)) < 0.3
    whole = metrics.frame_scores(gt, pred)
    monkeypatch.setattr(metrics, "_BLOCK_ELEMENTS", 1)  # one frame per block
    split = metrics.frame_scores(gt, pred)
    np.testing.assert_array_equal(whole[0], split[0])
    np.testing.assert_array_equal(whole[1], split[1])


def test_region_and_boundary_helpers_agree_with_frame_scores():
    rng = np.random.default_rng(5)
    gt, pred = rng.random((4, 20, 25)) < 0.4, rng.random((4, 20, 25)) < 0.4
    j, f = metrics.frame_scores(gt, pred)
    np.testing.assert_array_equal(metrics.region_similarity(gt, pred), j)
    np.testing.assert_array_equal(metrics.boundary_f_measure(gt, pred), f)
