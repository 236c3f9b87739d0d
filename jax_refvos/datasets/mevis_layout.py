"""Reading the MeViS on-disk layout (also ReVOS-style splits and our synthetic benchmark).

Layout (as MeViS distributes it; VIRST reads it in `utils/evaluation/eval_rvos.py`; ReVOS and the
LV-VIS referring conversion use the same files, `load_meta` reads any of them)::

    <root>/<split>/JPEGImages/<vid>/<frame>.jpg
    <root>/<split>/meta_expressions.json   {"videos": {vid: {"frames": [..], "expressions":
        {exp_id: {"exp": str, "obj_id": [int], "anno_id": [int]}}}}}
    <root>/<split>/mask_dict.json          {"<anno_id>": [COCO RLE or null, one per frame]}

Everything here validates as it reads and raises `InputError` naming the file and the item, so a
malformed dataset fails with one clear message instead of a traceback deep inside a worker.
"""

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from jaxtyping import Bool
from PIL import Image

from jax_refvos.datasets import rle
from jax_refvos.errors import InputError
from jax_refvos.fileio import load_json

META_FILE = "meta_expressions.json"
MASK_FILE = "mask_dict.json"
IMAGE_DIR = "JPEGImages"

RleOrNone = Mapping[str, Any] | None


@dataclasses.dataclass(frozen=True)
class Expression:
    exp_id: str
    text: str
    obj_ids: tuple[int, ...]
    anno_ids: tuple[int, ...] | None  # None in splits without annotations (MeViS valid)
    type_id: int | None = None  # ReVOS: 0 referring, 1 reasoning, 2 no target


@dataclasses.dataclass(frozen=True)
class Video:
    video_id: str
    frames: tuple[str, ...]
    expressions: tuple[Expression, ...]
    vid_id: Any = None  # MeViS/ReVOS carry a running id per video (kept as given)


def split_dir(root: str | Path, split: str) -> Path:
    """`<root>/<split>`, which must exist."""
    path = Path(root) / split
    if not path.is_dir():
        root = Path(root)
        found = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
        hint = f" (found: {', '.join(found)})" if found else ""
        raise InputError(f"{path}: no such split directory{hint}")
    return path


def _is_int(v: Any) -> bool:
    # Integer strings ("3") are accepted too: GLUS casts ReVOS/LV-VIS ids with int().
    return (isinstance(v, int) and not isinstance(v, bool)) or (
        isinstance(v, str) and v.strip().removeprefix("-").isdecimal()
    )


def _int_list(value: Any, where: str, key: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(_is_int(v) for v in value):
        raise InputError(f"{where}: {key!r} must be a list of integers, got {value!r}")
    return tuple(int(v) for v in value)


def check_frame_list(frames: Any, where: str) -> list[str]:
    """A meta entry's 'frames': a non-empty list of distinct frame names."""
    if not isinstance(frames, list) or not frames or not all(isinstance(f, str) for f in frames):
        raise InputError(f"{where}: 'frames' must be a non-empty list of frame names")
    if len(set(frames)) != len(frames):
        raise InputError(f"{where}: 'frames' lists a frame twice")
    return frames


def load_videos(split_path: str | Path) -> list[Video]:
    """Parses and validates `meta_expressions.json`; videos and expressions in file order."""
    return load_meta(Path(split_path) / META_FILE)


def load_meta(path: str | Path) -> list[Video]:
    """Parses and validates a MeViS-style meta file (ReVOS: `meta_expressions_<split>_.json`)."""
    path = Path(path)
    meta = load_json(path)
    if not isinstance(meta, dict) or not isinstance(meta.get("videos"), dict):
        raise InputError(f"{path}: expected an object with a 'videos' object")
    videos = []
    for vid, entry in meta["videos"].items():
        where = f"{path}: video {vid!r}"
        if not isinstance(entry, dict):
            raise InputError(f"{where}: expected an object")
        frames = check_frame_list(entry.get("frames"), where)
        exps = entry.get("expressions")
        if not isinstance(exps, dict):
            raise InputError(f"{where}: 'expressions' must be an object")
        expressions = []
        for exp_id, e in exps.items():
            ewhere = f"{where}, expression {exp_id!r}"
            if not isinstance(e, dict) or not isinstance(e.get("exp"), str):
                raise InputError(f"{ewhere}: expected an object with an 'exp' string")
            obj_ids = _int_list(e["obj_id"], ewhere, "obj_id") if "obj_id" in e else ()
            anno_ids = _int_list(e["anno_id"], ewhere, "anno_id") if "anno_id" in e else None
            type_id = e.get("type_id")
            if type_id is not None and (not isinstance(type_id, int) or isinstance(type_id, bool)):
                raise InputError(f"{ewhere}: 'type_id' must be an integer, got {type_id!r}")
            expressions.append(Expression(str(exp_id), e["exp"], obj_ids, anno_ids, type_id))
        videos.append(Video(str(vid), tuple(frames), tuple(expressions), entry.get("vid_id")))
    return videos


def load_mask_dict(split_path: str | Path) -> dict[str, list[RleOrNone]]:
    """Parses `mask_dict.json` and checks its shape (entries are validated when decoded)."""
    path = Path(split_path) / MASK_FILE
    masks = load_json(path)
    if not isinstance(masks, dict):
        raise InputError(f"{path}: expected an object mapping anno_id to a list of RLEs")
    for anno_id, per_frame in masks.items():
        if not isinstance(per_frame, list):
            raise InputError(
                f"{path}: anno_id {anno_id}: expected a list with one RLE or null per frame"
            )
    return masks


def frame_path(split_path: str | Path, video_id: str, frame: str) -> Path:
    return Path(split_path) / IMAGE_DIR / video_id / f"{frame}.jpg"


def video_frame_size(split_path: str | Path, video: Video) -> tuple[int, int]:
    """(h, w) of a video, from its first frame's header; checks every listed frame exists."""
    folder = Path(split_path) / IMAGE_DIR / video.video_id
    if not folder.is_dir():
        raise InputError(f"{folder}: frame directory of video {video.video_id!r} is missing")
    present = {p.name for p in folder.iterdir()}
    missing = [f for f in video.frames if f"{f}.jpg" not in present]
    if missing:
        shown = ", ".join(f"{f}.jpg" for f in missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise InputError(f"{folder}: {len(missing)} listed frame(s) missing on disk: {shown}")
    first = folder / f"{video.frames[0]}.jpg"
    try:
        with Image.open(first) as im:
            w, h = im.size
    except (OSError, SyntaxError) as e:
        raise InputError(f"{first}: not a readable image ({e})") from None
    return h, w


def expression_rles(
    masks: Mapping[str, list[RleOrNone]], anno_ids: Sequence[int], num_frames: int, *, source: Path
) -> list[list[RleOrNone]]:
    """The per-frame RLE lists of an expression's targets, checked against the frame count."""
    out = []
    for anno_id in anno_ids:
        per_frame = masks.get(str(anno_id))
        if per_frame is None:
            raise InputError(f"{source}: anno_id {anno_id} is referenced but not present")
        if len(per_frame) != num_frames:
            raise InputError(
                f"{source}: anno_id {anno_id} has {len(per_frame)} entries for {num_frames} frames"
            )
        out.append(per_frame)
    return out


def decode_frame(
    r: RleOrNone, size: tuple[int, int], *, where: str
) -> Bool[np.ndarray, "h w"] | None:
    """Decodes one frame's RLE (`None` = absent -> None), checking it against the frame `size`."""
    if r is None:
        return None
    try:
        claimed = rle.rle_size(r)
        if claimed != tuple(size):
            raise InputError(
                f"{where}: RLE size {list(claimed)} differs from the frame size {list(size)}"
            )
        return rle.decode(r)
    except rle.RleError as e:
        raise InputError(f"{where}: RLE does not decode ({e})") from None
