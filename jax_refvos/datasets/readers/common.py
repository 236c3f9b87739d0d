"""Pieces every raw benchmark reader shares: the reader base, frames, RLE slots, final validation.

A reader parses a split's meta file once (in the main process) and hands out one small, picklable
task per video; `task.read()` (in a worker) reads that video's files, decodes every frame once to
validate it and returns a validated `VideoExample`. Every problem is an `InputError` whose message
names the file and the video/frame.
"""

import abc
import io
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from PIL import Image

from jax_refvos.datasets import rle
from jax_refvos.datasets.example import ABSENT, SchemaError, VideoExample
from jax_refvos.errors import InputError

_IMAGE_ERRORS = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)


class Reader(abc.ABC):
    """Base of the per-dataset readers: `video_ids()` and `task(video_id)`.

    Subclasses set `dataset`, `split`, `source` (the meta file, for messages) and `_videos` (video
    id -> the parsed meta entry, in any order) and implement `_make_task(video_id, entry)`.
    """

    dataset: str
    split: str
    source: Path
    _videos: Mapping[str, Any]

    def video_ids(self) -> list[str]:
        return sorted(self._videos)

    def prepare(self) -> None:
        """Parses the split-wide files (mask dicts); their errors concern every video.

        Readers whose meta file is the only split-wide file have nothing more to parse.
        """
        return None

    def task(self, video_id: str) -> Any:
        entry = self._videos.get(video_id)
        if entry is None:
            raise InputError(f"{self.source}: no video {video_id!r} in split {self.split!r}")
        return self._make_task(video_id, entry)

    @abc.abstractmethod
    def _make_task(self, video_id: str, entry: Any) -> Any:
        """The picklable task of one video, from its parsed meta entry."""

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self.dataset!r}, {self.split!r}, {len(self._videos)} videos)"
        )


def _require(path: Path, what: str, present: bool) -> Path:
    if not present:
        parent = path.parent
        found = sorted(p.name for p in parent.iterdir()) if parent.is_dir() else []
        hint = f" (found there: {', '.join(found[:10])})" if found else ""
        raise InputError(f"{path}: {what} is missing{hint}")
    return path


def require_dir(path: Path, what: str) -> Path:
    return _require(path, what, path.is_dir())


def require_file(path: Path, what: str) -> Path:
    return _require(path, what, path.is_file())


def check_video_id(video_id: str, source: Path) -> None:
    """Video ids become paths (ReVOS ids contain '/'); refuse ones that would leave the folder."""
    parts = PurePosixPath(video_id).parts
    if not video_id or video_id.startswith("/") or "\\" in video_id or ".." in parts:
        raise InputError(f"{source}: video id {video_id!r} is not a relative folder path")


def check_text(text: Any, where: str) -> str:
    if not isinstance(text, str) or not text.strip():
        raise InputError(f"{where}: empty expression text")
    return text


def read_frames(
    folder: Path, names: Sequence[str], video_id: str
) -> tuple[tuple[bytes, ...], int, int]:
    """The raw bytes of `<folder>/<name>.jpg` for every name, each fully decoded once to check it.

    Returns (bytes per frame, height, width); all frames must have the same size.
    """
    if not folder.is_dir():
        raise InputError(f"{folder}: frame folder of video {video_id!r} is missing")
    out, size = [], None
    for name in names:
        path = folder / f"{name}.jpg"
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise InputError(f"{path}: frame {name!r} of video {video_id!r} is missing") from None
        except OSError as e:
            raise InputError(f"{path}: cannot read frame of video {video_id!r} ({e})") from None
        try:
            with Image.open(io.BytesIO(data)) as im:
                im.load()
                frame_size = (im.height, im.width)
        except _IMAGE_ERRORS as e:
            raise InputError(
                f"{path}: frame {name!r} of video {video_id!r} does not decode ({e})"
            ) from None
        if size is None:
            size = frame_size
        elif frame_size != size:
            raise InputError(
                f"{path}: frame {name!r} of video {video_id!r} is {frame_size[1]}x{frame_size[0]}, "
                f"its first frame is {size[1]}x{size[0]}"
            )
        out.append(data)
    if size is None:
        raise InputError(f"{folder}: video {video_id!r} lists no frames")
    return tuple(out), size[0], size[1]


def read_label_png(path: Path, size: tuple[int, int], where: str) -> np.ndarray:
    """A single-channel annotation PNG (palette indices or grey values) as a 2-D integer array.

    RGB(A) files are converted to grey first (what `cv2.IMREAD_GRAYSCALE` does for the official
    ReasonVOS scorer). The size must equal the frame size `(h, w)`.
    """
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("RGB", "RGBA", "LA"):
                im = im.convert("L")
            arr = np.asarray(im)
    except FileNotFoundError:
        raise InputError(f"{path}: annotation of {where} is missing") from None
    except _IMAGE_ERRORS as e:
        raise InputError(f"{path}: annotation of {where} does not decode ({e})") from None
    if arr.ndim != 2:
        raise InputError(f"{path}: annotation of {where} is not a single-channel PNG")
    if arr.shape != tuple(size):
        raise InputError(
            f"{path}: annotation of {where} is {arr.shape[1]}x{arr.shape[0]}, "
            f"the frame is {size[1]}x{size[0]}"
        )
    return arr


def mask_counts(mask: np.ndarray) -> bytes:
    """COCO compressed counts of a bool mask; ABSENT (b"") when the mask is empty."""
    if not mask.any():
        return ABSENT
    return rle.encode(mask)["counts"].encode("ascii")


def rle_counts(r: Any, size: tuple[int, int], where: str) -> bytes:
    """One frame's COCO RLE from a JSON file (or null) -> compressed counts bytes, size checked."""
    if r is None:
        return ABSENT
    try:
        claimed = rle.rle_size(r)
    except rle.RleError as e:
        raise InputError(f"{where}: {e}") from None
    if claimed != tuple(size):
        raise InputError(
            f"{where}: RLE size {list(claimed)} differs from the frame size {list(size)}"
        )
    counts = r["counts"]
    if isinstance(counts, str):
        try:
            counts = counts.encode("ascii")
        except UnicodeEncodeError:
            raise InputError(f"{where}: RLE counts are not ASCII") from None
    elif isinstance(counts, list) and all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in counts
    ):
        counts = rle.counts_to_string(np.asarray(counts, np.int64)).encode("ascii")
    elif not isinstance(counts, bytes):
        raise InputError(f"{where}: RLE 'counts' must be a string or a list of integers")
    try:
        runs = rle.string_to_counts(counts)
    except rle.RleError as e:
        raise InputError(f"{where}: RLE does not decode ({e})") from None
    if (runs < 0).any() or int(runs.sum()) != size[0] * size[1]:
        raise InputError(
            f"{where}: RLE runs cover {int(runs.sum())} pixels, the frame has "
            f"{size[0]}x{size[1]} = {size[0] * size[1]}"
        )
    return counts


def rle_list(
    per_frame: Any, frames: Sequence[str], size: tuple[int, int], where: str
) -> tuple[bytes, ...]:
    """A JSON list with one RLE (or null) per frame -> counts bytes per frame."""
    if not isinstance(per_frame, list) or len(per_frame) != len(frames):
        got = len(per_frame) if isinstance(per_frame, list) else type(per_frame).__name__
        raise InputError(f"{where}: {got} RLE entries for {len(frames)} frames")
    return tuple(
        rle_counts(r, size, f"{where}, frame {name!r}")
        for r, name in zip(per_frame, frames, strict=True)
    )


def finish(build: Callable[[], VideoExample], source: Path | str) -> VideoExample:
    """Builds the example and runs the full schema validation; SchemaError -> InputError."""
    try:
        ex = build()
        ex.validate()
    except SchemaError as e:
        raise InputError(f"{source}: {e}") from None
    return ex


def first_seen(values: Iterable[Any]) -> list[Any]:
    """Distinct values in the order they first appear."""
    return list(dict.fromkeys(values))
