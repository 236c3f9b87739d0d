"""COCO run-length encoding (RLE) of binary masks, vectorised in numpy.

Bit-exact with pycocotools (`maskApi.c`): runs are taken over the mask in column-major (Fortran)
order, the first run counts zeros (it may be 0), and the compressed string form stores each count
as a little-endian sequence of 5-bit groups (ASCII offset 48, bit 0x20 = "more follows", bit 0x10 of
the last group = sign), with counts[i] replaced by counts[i] - counts[i-2] for i > 2 (sic: not
i >= 2, as in the reference C code).

An RLE here is the JSON-friendly dict ``{"size": [h, w], "counts": str}`` (MeViS `mask_dict.json`,
ReVOS, COCO annotations). `decode` also accepts ``bytes`` counts (pycocotools' own output) and the
uncompressed form with a list of ints.
"""

from collections.abc import Mapping
from typing import Any

import numpy as np
from jaxtyping import Bool, Int

# A 64-bit count needs at most 13 groups of 5 bits; the reference decoder shifts a `long`, so a
# group count past 12 (60 bits) cannot come from a valid encoder.
_MAX_GROUPS = 12


class RleError(ValueError):
    """A malformed RLE. Callers add where it came from (file, annotation id, frame)."""


def mask_to_counts(mask: Bool[np.ndarray, "h w"]) -> Int[np.ndarray, " r"]:
    """Column-major run lengths of a 2-D mask, starting with a (possibly empty) run of zeros."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise RleError(f"expected a 2-D mask, got shape {mask.shape}")
    flat = mask.astype(bool, copy=False).ravel(order="F")
    if flat.size == 0:
        return np.zeros(1, np.int64)
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    edges = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(edges)
    if flat[0]:
        counts = np.concatenate([[0], counts])
    return counts.astype(np.int64)


def counts_to_mask(
    counts: Int[np.ndarray, " r"], height: int, width: int
) -> Bool[np.ndarray, "h w"]:
    """Inverse of `mask_to_counts`; raises `RleError` if the counts do not cover h*w pixels."""
    counts = np.asarray(counts, np.int64)
    if counts.ndim != 1:
        raise RleError("counts must be a flat list of integers")
    if counts.size and counts.min() < 0:
        raise RleError("negative run length")
    total = int(counts.sum())
    if total != height * width:
        raise RleError(
            f"run lengths cover {total} pixels, but size {[height, width]} has {height * width}"
        )
    values = (np.arange(counts.size) % 2).astype(bool)
    return np.repeat(values, counts).reshape(width, height).T


def counts_to_string(counts: Int[np.ndarray, " r"]) -> str:
    """pycocotools `rleToString`: run lengths -> compressed ASCII string."""
    counts = np.asarray(counts, np.int64)
    x = counts.copy()
    x[3:] -= counts[1:-2]
    n = x.size
    groups = np.zeros((n, _MAX_GROUPS + 1), np.uint8)
    lengths = np.zeros(n, np.int64)
    active = np.ones(n, bool)
    for k in range(_MAX_GROUPS + 1):
        if not active.any():
            break
        c = x & 0x1F
        x = x >> 5  # arithmetic shift, like C's `long`
        more = np.where(c & 0x10, x != -1, x != 0)
        groups[:, k] = (c | (more.astype(np.int64) << 5)) + 48
        lengths += active
        active &= more
    keep = np.arange(groups.shape[1]) < lengths[:, None]
    return groups[keep].tobytes().decode("ascii")


def string_to_counts(s: str | bytes) -> Int[np.ndarray, " r"]:
    """pycocotools `rleFrString`: compressed ASCII string -> run lengths."""
    raw = s.encode("ascii", errors="replace") if isinstance(s, str) else bytes(s)
    b = np.frombuffer(raw, np.uint8).astype(np.int64) - 48
    if b.size == 0:
        return np.zeros(0, np.int64)
    if b.min() < 0 or b.max() > 63:
        raise RleError("counts string has characters outside the RLE alphabet")
    more = (b & 0x20) != 0
    if more[-1]:
        raise RleError("counts string is truncated (last group says more follows)")
    ends = np.flatnonzero(~more)
    starts = np.concatenate([[0], ends[:-1] + 1])
    lengths = ends - starts + 1
    if lengths.max() > _MAX_GROUPS:
        raise RleError("counts string holds a value too large for 64 bits")
    group_of = np.repeat(np.arange(ends.size), lengths)
    shift = 5 * (np.arange(b.size) - starts[group_of])
    x = np.add.reduceat((b & 0x1F) << shift, starts)
    negative = (b[ends] & 0x10) != 0
    x[negative] -= np.left_shift(1, 5 * lengths[negative])
    counts = x.copy()
    counts[0::2] = np.concatenate([x[:1], np.cumsum(x[2::2])])
    counts[1::2] = np.cumsum(x[1::2])
    return counts


def encode(mask: Bool[np.ndarray, "h w"]) -> dict[str, Any]:
    """Binary mask -> ``{"size": [h, w], "counts": str}`` (COCO compressed RLE)."""
    mask = np.asarray(mask)
    counts = mask_to_counts(mask)
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": counts_to_string(counts)}


def rle_size(rle: Mapping[str, Any]) -> tuple[int, int]:
    """The ``(h, w)`` an RLE claims, validated."""
    if not isinstance(rle, Mapping) or "size" not in rle or "counts" not in rle:
        raise RleError("an RLE must be an object with 'size' and 'counts'")
    size = rle["size"]
    if (
        not isinstance(size, list | tuple)
        or len(size) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in size)
    ):
        raise RleError(f"'size' must be [height, width] with non-negative integers, got {size!r}")
    return int(size[0]), int(size[1])


def decode(rle: Mapping[str, Any]) -> Bool[np.ndarray, "h w"]:
    """COCO RLE (compressed string/bytes or uncompressed list counts) -> bool[h, w]."""
    h, w = rle_size(rle)
    counts = rle["counts"]
    if isinstance(counts, str | bytes):
        counts = string_to_counts(counts)
    elif isinstance(counts, list | tuple) and all(
        isinstance(v, int) and not isinstance(v, bool) for v in counts
    ):
        counts = np.asarray(counts, np.int64)
    else:
        raise RleError("'counts' must be a string or a list of integers")
    return counts_to_mask(counts, h, w)


def area(rle: Mapping[str, Any]) -> int:
    """Number of foreground pixels, without materialising the mask."""
    counts = rle["counts"]
    counts = string_to_counts(counts) if isinstance(counts, str | bytes) else np.asarray(counts)
    return int(np.sum(counts[1::2]))
