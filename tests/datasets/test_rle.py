"""COCO RLE codec against pycocotools (the reference C implementation)."""

import numpy as np
import pytest
from pycocotools import mask as cocomask

from jax_refvos.datasets import rle


def _ref_encode(mask):
    out = cocomask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in out["size"]], "counts": out["counts"].decode("ascii")}


def _cases():
    rng = np.random.default_rng(0)
    for _ in range(300):
        h, w = (int(v) for v in rng.integers(1, 40, size=2))
        yield rng.random((h, w)) < rng.random()
    for h, w in [(1, 1), (1, 7), (7, 1), (5, 4)]:
        yield np.zeros((h, w), bool)
        yield np.ones((h, w), bool)
        m = np.zeros((h, w), bool)
        m[0, 0] = True  # first run of zeros is empty
        yield m
        m = np.zeros((h, w), bool)
        m[-1, -1] = True
        yield m
    big = np.zeros((1080, 1920), bool)  # counts that need many 5-bit groups, negative deltas
    big[100:1000, 5:1900] = True
    big[500, :] = False
    yield big
    yield np.ones((2500, 2500), bool)  # a single run of 6.25M


def test_encode_equals_pycocotools():
    for m in _cases():
        assert rle.encode(m) == _ref_encode(m), m.shape


def test_decode_inverts_pycocotools():
    for m in _cases():
        ref = cocomask.encode(np.asfortranarray(m.astype(np.uint8)))
        np.testing.assert_array_equal(rle.decode(ref), m)  # bytes counts, pycocotools' own form
        np.testing.assert_array_equal(rle.decode(rle.encode(m)), m)
        assert rle.area(rle.encode(m)) == int(cocomask.area(ref))


def test_uncompressed_counts():
    m = np.array([[0, 1, 1], [0, 0, 1]], bool)  # column-major: 0 0 1 0 1 1
    assert rle.mask_to_counts(m).tolist() == [2, 1, 1, 2]
    np.testing.assert_array_equal(rle.decode({"size": [2, 3], "counts": [2, 1, 1, 2]}), m)
    ref = cocomask.frPyObjects({"size": [2, 3], "counts": [2, 1, 1, 2]}, 2, 3)
    np.testing.assert_array_equal(cocomask.decode(ref).astype(bool), m)


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        ({"size": [2, 3], "counts": "\x7f"}, "outside the RLE alphabet"),
        ({"size": [2, 3], "counts": "0P"}, "truncated"),
        ({"size": [2, 3], "counts": [1, 1]}, "cover 2 pixels"),
        ({"size": [2, 3], "counts": [7, -1]}, "negative"),
        ({"size": [2], "counts": "0"}, "size"),
        ({"size": [2, 3]}, "'size' and 'counts'"),
        ({"size": [2, 3], "counts": 5}, "'counts' must be"),
        ({"size": [2, 3], "counts": "o" * 13 + "0"}, "too large"),
    ],
)
def test_malformed_rle_raises(bad, match):
    with pytest.raises(rle.RleError, match=match):
        rle.decode(bad)
