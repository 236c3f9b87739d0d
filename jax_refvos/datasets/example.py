"""`VideoExample`: one video with all its expressions and per-object masks (record schema v1).

Every benchmark reader produces this, every record file stores it, the input pipeline consumes it.
Frames stay as the dataset's encoded JPEG bytes (decoded lazily, only the frames a sample uses);
masks stay as COCO compressed RLE counts, one per (track, frame).

Serialised form (the same payload in ArrayRecord and TFRecord files): a `tf.train.Example` with

    schema_version int64[1]      dataset, split, video_id bytes[1]      height, width int64[1]
    has_masks int64[1]           frame_names, frames bytes[t]           extra bytes[1] (JSON object)
    track_keys bytes[n]          track_object_ids int64[n] (-1 = unknown)
    track_rles bytes[n * t]      track-major; b"" = the object is absent in that frame (MeViS null)
    foreground_rles bytes[t or 0], has_foreground int64[1]   ReVOS `mask_dict_foreground.json`
    exp_ids, exp_texts bytes[e]  exp_kinds int64[e] (index into EXPRESSION_KINDS = ReVOS type_id)
    exp_object_counts int64[e], exp_object_ids int64[sum]   the dataset's obj ids, as listed
    exp_target_counts int64[e], exp_targets int64[sum]      indices into the tracks (the union is
                                                            the expression's mask)
"""

import dataclasses
import io
import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from jaxtyping import Bool, UInt8
from PIL import Image
from tensorflow_datasets.proto import tf_example_pb2

from jax_refvos.datasets import rle

SCHEMA_VERSION = 1
EXPRESSION_KINDS = ("referring", "reasoning", "no_target")
ABSENT = b""  # an RLE slot for a frame where the object does not appear

Indices = Sequence[int] | np.ndarray | None


class SchemaError(ValueError):
    """A `VideoExample` that breaks the schema (readers turn it into an `InputError`)."""


@dataclasses.dataclass(frozen=True)
class Track:
    """One annotated object: its key (MeViS/ReVOS anno_id, palette datasets the object id)."""

    key: str
    object_id: int  # the dataset's object id, -1 when unknown
    rles: tuple[bytes, ...]  # COCO compressed counts per frame, ABSENT where not present


@dataclasses.dataclass(frozen=True)
class Expression:
    """One referring/reasoning expression; `masks()` is the union of its target tracks."""

    exp_id: str
    text: str
    kind: str  # one of EXPRESSION_KINDS
    object_ids: tuple[int, ...]  # the dataset's object ids, as listed (GLUS contrastive keys)
    targets: tuple[int, ...]  # indices into the video's tracks
    _video: "VideoExample | None" = dataclasses.field(default=None, repr=False, compare=False)

    def masks(self, indices: Indices = None) -> Bool[np.ndarray, "t h w"]:
        """bool[t, h, w] for the given frame indices (all frames by default)."""
        if self._video is None:
            raise SchemaError(f"expression {self.exp_id!r} is not attached to a video")
        return self._video.union_masks(self.targets, indices)


@dataclasses.dataclass(frozen=True)
class VideoExample:
    dataset: str
    split: str
    video_id: str
    frame_names: tuple[str, ...]
    frame_bytes: tuple[bytes, ...]  # encoded JPEG (or PNG) files, unchanged
    height: int
    width: int
    tracks: tuple[Track, ...]
    expressions: tuple[Expression, ...]
    has_masks: bool  # False for splits distributed without annotations
    foreground: tuple[bytes, ...] | None = None
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        bound = tuple(dataclasses.replace(e, _video=self) for e in self.expressions)
        object.__setattr__(self, "expressions", bound)

    @property
    def num_frames(self) -> int:
        return len(self.frame_names)

    def _indices(self, indices: Indices) -> np.ndarray:
        if indices is None:
            return np.arange(self.num_frames)
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < 0 or idx.max() >= self.num_frames):
            raise IndexError(f"frame index out of range [0, {self.num_frames}): {idx.tolist()}")
        return idx

    def frame(self, i: int) -> UInt8[np.ndarray, "h w 3"]:
        return decode_image(self.frame_bytes[i], (self.height, self.width))

    def frames(self, indices: Indices = None) -> UInt8[np.ndarray, "t h w 3"]:
        """uint8[t, h, w, 3] RGB frames (all by default)."""
        idx = self._indices(indices)
        out = np.empty((len(idx), self.height, self.width, 3), np.uint8)
        for j, i in enumerate(idx):
            out[j] = self.frame(int(i))
        return out

    def track_masks(self, track: int, indices: Indices = None) -> Bool[np.ndarray, "t h w"]:
        return self.union_masks((track,), indices)

    def union_masks(
        self, tracks: Sequence[int], indices: Indices = None
    ) -> Bool[np.ndarray, "t h w"]:
        """bool[t, h, w]: the union of the given tracks' masks on the given frames."""
        if not self.has_masks:
            raise SchemaError(f"video {self.video_id!r} ({self.split}) has no annotations")
        idx = self._indices(indices)
        out = np.zeros((len(idx), self.height, self.width), bool)
        for k in tracks:
            rles = self.tracks[k].rles
            for j, i in enumerate(idx):
                if rles[i]:
                    out[j] |= _decode_rle(rles[i], self.height, self.width)
        return out

    def foreground_masks(self, indices: Indices = None) -> Bool[np.ndarray, "t h w"] | None:
        if self.foreground is None:
            return None
        idx = self._indices(indices)
        out = np.zeros((len(idx), self.height, self.width), bool)
        for j, i in enumerate(idx):
            if self.foreground[i]:
                out[j] = _decode_rle(self.foreground[i], self.height, self.width)
        return out

    def validate(self, *, check_counts: bool = True) -> None:
        """Raises `SchemaError` naming the offending frame/track/expression.

        `check_counts` also parses every RLE and checks that its runs cover h*w pixels.
        """
        validate(self, check_counts=check_counts)

    def to_bytes(self) -> bytes:
        return serialize(self)

    @staticmethod
    def from_bytes(data: bytes) -> "VideoExample":
        return deserialize(data)


def _decode_rle(counts: bytes, h: int, w: int) -> np.ndarray:
    return rle.counts_to_mask(rle.string_to_counts(counts), h, w)


def decode_image(data: bytes, size: tuple[int, int] | None = None) -> UInt8[np.ndarray, "h w 3"]:
    """Decodes encoded image bytes to uint8 RGB; checks the size when given."""
    with Image.open(io.BytesIO(data)) as im:
        arr = np.asarray(im.convert("RGB"))
    if size is not None and arr.shape[:2] != tuple(size):
        raise SchemaError(f"frame is {arr.shape[1]}x{arr.shape[0]}, expected {size[1]}x{size[0]}")
    return arr


def validate(ex: VideoExample, *, check_counts: bool = True) -> None:
    t = ex.num_frames
    if not ex.video_id:
        raise SchemaError("empty video id")
    if t == 0:
        raise SchemaError(f"video {ex.video_id!r}: no frames")
    if len(ex.frame_bytes) != t:
        raise SchemaError(f"video {ex.video_id!r}: {len(ex.frame_bytes)} frames for {t} names")
    if len(set(ex.frame_names)) != t:
        raise SchemaError(f"video {ex.video_id!r}: a frame name is listed twice")
    if ex.height <= 0 or ex.width <= 0:
        raise SchemaError(f"video {ex.video_id!r}: bad frame size {ex.height}x{ex.width}")
    keys = [tr.key for tr in ex.tracks]
    if len(set(keys)) != len(keys):
        raise SchemaError(f"video {ex.video_id!r}: duplicate track keys")
    slots = [(f"track {tr.key!r}", tr.rles) for tr in ex.tracks]
    if ex.foreground is not None:
        slots.append(("foreground", ex.foreground))
    for what, rles in slots:
        if ex.has_masks and len(rles) != t:
            raise SchemaError(f"video {ex.video_id!r}, {what}: {len(rles)} RLEs for {t} frames")
        if not ex.has_masks and any(rles):
            raise SchemaError(f"video {ex.video_id!r}, {what}: masks in a split without masks")
        if check_counts:
            for name, counts in zip(ex.frame_names, rles, strict=False):
                if counts:
                    _check_counts(counts, ex, f"{what}, frame {name!r}")
    ids = [e.exp_id for e in ex.expressions]
    if len(set(ids)) != len(ids):
        raise SchemaError(f"video {ex.video_id!r}: duplicate expression ids")
    for e in ex.expressions:
        where = f"video {ex.video_id!r}, expression {e.exp_id!r}"
        if not e.text.strip():
            raise SchemaError(f"{where}: empty expression text")
        if e.kind not in EXPRESSION_KINDS:
            raise SchemaError(f"{where}: kind {e.kind!r} is not one of {EXPRESSION_KINDS}")
        bad = [k for k in e.targets if not 0 <= k < len(ex.tracks)]
        if bad:
            raise SchemaError(f"{where}: target track index {bad[0]} out of range")


def _check_counts(counts: bytes, ex: VideoExample, where: str) -> None:
    try:
        runs = rle.string_to_counts(counts)
    except rle.RleError as e:
        raise SchemaError(f"video {ex.video_id!r}, {where}: RLE does not decode ({e})") from None
    total = int(runs.sum())
    if total != ex.height * ex.width or (runs < 0).any():
        raise SchemaError(
            f"video {ex.video_id!r}, {where}: RLE covers {total} pixels, the frame has "
            f"{ex.height}x{ex.width} = {ex.height * ex.width}"
        )


# ----------------------------------------------------------------------------- serialisation


def _bytes(feature, values: Sequence[bytes | str]) -> None:
    feature.bytes_list.value.extend(v.encode() if isinstance(v, str) else v for v in values)


def _ints(feature, values: Sequence[int]) -> None:
    feature.int64_list.value.extend(int(v) for v in values)


def to_tf_example(ex: VideoExample) -> tf_example_pb2.Example:
    proto = tf_example_pb2.Example()
    f = proto.features.feature
    _ints(f["schema_version"], [SCHEMA_VERSION])
    _bytes(f["dataset"], [ex.dataset])
    _bytes(f["split"], [ex.split])
    _bytes(f["video_id"], [ex.video_id])
    _ints(f["height"], [ex.height])
    _ints(f["width"], [ex.width])
    _ints(f["has_masks"], [int(ex.has_masks)])
    _bytes(f["extra"], [json.dumps(dict(ex.extra), sort_keys=True)])
    _bytes(f["frame_names"], ex.frame_names)
    _bytes(f["frames"], ex.frame_bytes)
    _bytes(f["track_keys"], [tr.key for tr in ex.tracks])
    _ints(f["track_object_ids"], [tr.object_id for tr in ex.tracks])
    _bytes(f["track_rles"], [r for tr in ex.tracks for r in tr.rles])
    _bytes(f["foreground_rles"], ex.foreground or ())
    _ints(f["has_foreground"], [int(ex.foreground is not None)])
    _bytes(f["exp_ids"], [e.exp_id for e in ex.expressions])
    _bytes(f["exp_texts"], [e.text for e in ex.expressions])
    _ints(f["exp_kinds"], [EXPRESSION_KINDS.index(e.kind) for e in ex.expressions])
    _ints(f["exp_object_counts"], [len(e.object_ids) for e in ex.expressions])
    _ints(f["exp_object_ids"], [o for e in ex.expressions for o in e.object_ids])
    _ints(f["exp_target_counts"], [len(e.targets) for e in ex.expressions])
    _ints(f["exp_targets"], [k for e in ex.expressions for k in e.targets])
    return proto


def serialize(ex: VideoExample) -> bytes:
    return to_tf_example(ex).SerializeToString(deterministic=True)


def _split(flat: Sequence[int], counts: Sequence[int]) -> list[tuple[int, ...]]:
    if sum(counts) != len(flat) or any(c < 0 for c in counts):
        raise SchemaError("ragged expression lists do not add up")
    out, pos = [], 0
    for c in counts:
        out.append(tuple(int(v) for v in flat[pos : pos + c]))
        pos += c
    return out


def from_tf_example(proto: tf_example_pb2.Example) -> VideoExample:
    f = proto.features.feature

    def raw(key):
        if key not in f:
            raise SchemaError(f"record has no feature {key!r}")
        return f[key].bytes_list.value

    def text(key):
        return [v.decode() for v in raw(key)]

    def ints(key):
        if key not in f:
            raise SchemaError(f"record has no feature {key!r}")
        return list(f[key].int64_list.value)

    version = ints("schema_version")
    if version != [SCHEMA_VERSION]:
        raise SchemaError(f"record schema version {version} (this reader knows {SCHEMA_VERSION})")
    frame_names = tuple(text("frame_names"))
    keys, obj_ids, rles = text("track_keys"), ints("track_object_ids"), list(raw("track_rles"))
    n = len(keys)
    per = len(rles) // n if n else 0
    if n and len(rles) != per * n:
        raise SchemaError("track RLE list is ragged")
    tracks = tuple(
        Track(keys[k], obj_ids[k], tuple(rles[k * per : (k + 1) * per])) for k in range(n)
    )
    exp_objects = _split(ints("exp_object_ids"), ints("exp_object_counts"))
    exp_targets = _split(ints("exp_targets"), ints("exp_target_counts"))
    kinds = ints("exp_kinds")
    expressions = tuple(
        Expression(i, x, EXPRESSION_KINDS[k], o, g)
        for i, x, k, o, g in zip(
            text("exp_ids"), text("exp_texts"), kinds, exp_objects, exp_targets, strict=True
        )
    )
    has_fg = ints("has_foreground") == [1]
    return VideoExample(
        dataset=text("dataset")[0],
        split=text("split")[0],
        video_id=text("video_id")[0],
        frame_names=frame_names,
        frame_bytes=tuple(raw("frames")),
        height=ints("height")[0],
        width=ints("width")[0],
        tracks=tracks,
        expressions=expressions,
        has_masks=ints("has_masks") == [1],
        foreground=tuple(raw("foreground_rles")) if has_fg else None,
        extra=json.loads(raw("extra")[0] or b"{}"),
    )


def deserialize(data: bytes) -> VideoExample:
    try:
        proto = tf_example_pb2.Example.FromString(data)
    except Exception as e:  # protobuf's DecodeError
        raise SchemaError(f"record is not a tf.train.Example ({e})") from None
    return from_tf_example(proto)
