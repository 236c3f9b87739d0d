"""ReasonVOS (VideoLISA's benchmark): one mask folder per (source, video, object), a single split.

Follows the official files: VideoLISA `BENCHMARK.md`, `benchmark_check.py`,
`evaluation/reason_vos/eval_reason_vos.py`, and GLUS `dataset/reasonvos.py` +
`utils/eval_reason_vos.py` (GLUS README "Datasets Architecture"). `--root` = the ReasonVOS folder::

    <root>/JPEGImages/<vid>/<frame>.jpg
    <root>/Annotations/<source>_<vid>_<obj_id>/<frame>.png   binary mask (0 / non-zero), one per
                                                             listed frame
    <root>/meta_expressions.json
        {"videos": {vid: {"source": "MeViS" | "MOSE" | "BURST" | "VIPSeg", "frames": [..],
                          "expressions": [{"exp_text", "obj_id", "exp_id", "is_sent"}, ...]}}}

Variants accepted: `expressions` as an object keyed by id (VideoLISA's own scripts), `is_sent` on
the video instead of the expression, and the mask folder with the lower-cased source
(`benchmark_check.py` lower-cases it; the scorers do not). `exp_id` defaults to the list index
(GLUS writes predictions under that index). Frames keep the meta's order (GLUS does not sort).

ReasonVOS has no `type_id`. `kind` = "reasoning" for `is_sent` expressions (VideoLISA prompts them
as a question: "{sent}. Please output the segmentation masks.") and for expressions without the
flag, "referring" for `is_sent: false` (prompted as "Please segment the {class_name}"). The flags
are kept in `extra` = {"source": .., "is_sent": {exp_id: bool}}. The benchmark has one split; the
reader accepts the names used for it ("valid" in GLUS's loader, "test" in its README).
One `Track` per distinct `obj_id` (key = str(obj_id), object_id = the id, -1 if not an integer).
"""

import dataclasses
from pathlib import Path
from typing import Any

from jax_refvos.datasets.example import Expression, Track, VideoExample
from jax_refvos.datasets.mevis_layout import check_frame_list
from jax_refvos.datasets.readers import common
from jax_refvos.errors import InputError
from jax_refvos.fileio import load_json

SPLITS = ("valid", "test")
META_FILE = "meta_expressions.json"


@dataclasses.dataclass(frozen=True)
class ReasonVosExpression:
    exp_id: str
    text: str
    obj_id: str
    is_sent: bool | None


@dataclasses.dataclass(frozen=True)
class ReasonVosTask:
    """Everything needed to read one video (paths and its meta entry); small and picklable."""

    dataset: str
    split: str
    video_id: str
    source: str
    frame_dir: str
    anno_root: str | None  # <root>/Annotations, None when the release has no masks
    frame_names: tuple[str, ...]
    expressions: tuple[ReasonVosExpression, ...]
    meta_source: str

    def _mask_dir(self, obj_id: str, exp_id: str) -> Path:
        root = Path(self.anno_root)
        names = common.first_seen(
            [f"{s}_{self.video_id}_{obj_id}" for s in (self.source, self.source.lower())]
        )
        for name in names:
            if (root / name).is_dir():
                return root / name
        raise InputError(
            f"{root / names[0]}: mask folder of video {self.video_id!r}, object {obj_id!r} "
            f"(expression {exp_id!r} in {self.meta_source}) is missing"
        )

    def read(self) -> VideoExample:
        vid = self.video_id
        frames, h, w = common.read_frames(Path(self.frame_dir), self.frame_names, vid)
        for e in self.expressions:
            common.check_text(e.text, f"{self.meta_source}: video {vid!r}, expression {e.exp_id!r}")
        objects = common.first_seen(e.obj_id for e in self.expressions)
        tracks = []
        for obj in objects:
            rles: tuple[bytes, ...] = ()
            if self.anno_root is not None:
                exp_id = next(e.exp_id for e in self.expressions if e.obj_id == obj)
                folder = self._mask_dir(obj, exp_id)
                rles = tuple(
                    common.mask_counts(
                        common.read_label_png(
                            folder / f"{name}.png", (h, w), f"video {vid!r}, frame {name!r}"
                        )
                        != 0
                    )
                    for name in self.frame_names
                )
            tracks.append(Track(obj, int(obj) if obj.lstrip("-").isdecimal() else -1, rles))
        index = {o: k for k, o in enumerate(objects)}
        expressions = tuple(
            Expression(
                e.exp_id,
                e.text,
                "referring" if e.is_sent is False else "reasoning",
                (tracks[index[e.obj_id]].object_id,),
                (index[e.obj_id],),
            )
            for e in self.expressions
        )
        extra = {
            "source": self.source,
            "is_sent": {e.exp_id: e.is_sent for e in self.expressions if e.is_sent is not None},
        }
        return common.finish(
            lambda: VideoExample(
                dataset=self.dataset,
                split=self.split,
                video_id=vid,
                frame_names=self.frame_names,
                frame_bytes=frames,
                height=h,
                width=w,
                tracks=tuple(tracks),
                expressions=expressions,
                has_masks=self.anno_root is not None,
                extra=extra,
            ),
            self.anno_root or self.meta_source,
        )


def _flag(value: Any, where: str) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    if value in (0, 1):
        return bool(value)
    raise InputError(f"{where}: 'is_sent' must be true or false, got {value!r}")


def _parse_video(vid: str, entry: Any, path: Path) -> tuple[str, tuple, tuple]:
    where = f"{path}: video {vid!r}"
    if not isinstance(entry, dict):
        raise InputError(f"{where}: expected an object")
    source = entry.get("source")
    if not isinstance(source, str) or not source:
        raise InputError(f"{where}: 'source' must be a non-empty string")
    frames = check_frame_list(entry.get("frames"), where)
    exps = entry.get("expressions")
    if isinstance(exps, list):
        items = [(str(i), e) for i, e in enumerate(exps)]
    elif isinstance(exps, dict):
        items = [(str(k), e) for k, e in exps.items()]
    else:
        raise InputError(f"{where}: 'expressions' must be a list (or an object)")
    video_flag = _flag(entry.get("is_sent"), where)
    expressions = []
    for key, e in items:
        ewhere = f"{where}, expression {key}"
        if not isinstance(e, dict) or not isinstance(e.get("exp_text"), str):
            raise InputError(f"{ewhere}: expected an object with an 'exp_text' string")
        obj = e.get("obj_id")
        if isinstance(obj, bool) or not isinstance(obj, int | str) or str(obj).strip() == "":
            raise InputError(f"{ewhere}: 'obj_id' must be an integer or a string, got {obj!r}")
        exp_id = str(e["exp_id"]) if e.get("exp_id") is not None else key
        flag = _flag(e.get("is_sent"), ewhere)
        is_sent = video_flag if flag is None else flag
        expressions.append(ReasonVosExpression(exp_id, e["exp_text"], str(obj), is_sent))
    return source, tuple(frames), tuple(expressions)


class ReasonVosReader(common.Reader):
    def __init__(self, dataset: str, root: str | Path, split: str):
        if split not in SPLITS:
            raise InputError(
                f"ReasonVOS has a single split, named {' or '.join(map(repr, SPLITS))}; "
                f"got {split!r}"
            )
        root = common.require_dir(Path(root), "ReasonVOS root folder")
        self.dataset, self.split = dataset, split
        self.source = common.require_file(root / META_FILE, "ReasonVOS meta file")
        self.frame_dir = common.require_dir(root / "JPEGImages", "ReasonVOS frame folder")
        anno_root = root / "Annotations"
        self.anno_root = anno_root if anno_root.is_dir() else None
        meta = load_json(self.source)
        if not isinstance(meta, dict) or not isinstance(meta.get("videos"), dict):
            raise InputError(f"{self.source}: expected an object with a 'videos' object")
        videos = {}
        for vid, entry in meta["videos"].items():
            common.check_video_id(str(vid), self.source)
            videos[str(vid)] = _parse_video(str(vid), entry, self.source)
        self._videos = videos

    @property
    def has_masks(self) -> bool:
        return self.anno_root is not None

    def _make_task(self, video_id: str, entry: tuple) -> ReasonVosTask:
        source, frames, expressions = entry
        return ReasonVosTask(
            dataset=self.dataset,
            split=self.split,
            video_id=video_id,
            source=source,
            frame_dir=str(self.frame_dir / video_id),
            anno_root=None if self.anno_root is None else str(self.anno_root),
            frame_names=frames,
            expressions=expressions,
            meta_source=str(self.source),
        )
