"""Ref-YouTube-VOS and Ref-DAVIS17: palette-PNG annotations, one object id per expression.

Follows ReferFormer's `datasets/ytvos.py` / `davis.py` layout and the readers built on it: GLUS
`dataset/refyoutube_vos.py`, `dataset/davis17.py` and `refer_video_seg_dataset.py` (mask =
`np.array(Image.open(png)) == obj_id`), VISA/GLUS-KFS `utils/d2_datasets/refytvos_utils.py`.
`--root` = the folder holding the split folders and `meta_expressions/`::

    <root>/<split>/JPEGImages/<vid>/<frame>.jpg
    <root>/<split>/Annotations/<vid>/<frame>.png   palette PNG, pixel value = object id (0 =
                                                   background), one per frame listed in the meta;
                                                   absent for Ref-YTVOS valid -> has_masks=False
    <root>/<split>/meta.json                       optional: {"videos": {vid: {"objects":
                                                   {"<obj_id>": {"category", "frames"}}}}}
    <root>/meta_expressions/<split>/meta_expressions.json
        {"videos": {vid: {"frames": [..], "expressions": {exp_id: {"exp": str, "obj_id": "1"}}}}}

One `Track` per object id the expressions name (key = the id as a string, object_id = int); the
track's mask in a frame is `png == id`, stored as ABSENT where the object is not visible. An object
that is visible in none of the video's PNGs, or missing from `meta.json`, is an error. All
expressions are "referring". Ref-YTVOS `valid`: the competition's valid meta also lists the test
videos; when `meta_expressions/test/meta_expressions.json` exists they are left out (ReferFormer's
rule, 202 videos remain). `extra` = {"categories": {obj_id: category}} when `meta.json` has them.
"""

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jax_refvos.datasets.example import Expression, Track, VideoExample
from jax_refvos.datasets.mevis_layout import check_frame_list
from jax_refvos.datasets.readers import common
from jax_refvos.errors import InputError
from jax_refvos.fileio import load_json

META_DIR = "meta_expressions"
META_FILE = "meta_expressions.json"
OBJECTS_FILE = "meta.json"


@dataclasses.dataclass(frozen=True)
class PaletteTask:
    """Everything needed to read one video (paths and its meta entry); small and picklable."""

    dataset: str
    split: str
    video_id: str
    frame_dir: str
    anno_dir: str | None  # None: the split has no annotations
    frame_names: tuple[str, ...]
    expressions: tuple[tuple[str, str, int | None], ...]  # (exp_id, text, object id)
    listed_objects: tuple[int, ...] | None  # from meta.json, when the split has one
    meta_source: str
    objects_source: str | None
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def read(self) -> VideoExample:
        vid = self.video_id
        frames, h, w = common.read_frames(Path(self.frame_dir), self.frame_names, vid)
        for exp_id, text, _ in self.expressions:
            common.check_text(text, f"{self.meta_source}: video {vid!r}, expression {exp_id!r}")
        objects = common.first_seen(o for _, _, o in self.expressions if o is not None)
        if self.listed_objects is not None:
            for exp_id, _, o in self.expressions:
                if o is not None and o not in self.listed_objects:
                    raise InputError(
                        f"{self.objects_source}: video {vid!r} has no object {o} (named by "
                        f"expression {exp_id!r} in {self.meta_source})"
                    )
        rles: dict[int, list[bytes]] = {o: [] for o in objects}
        if self.anno_dir is not None:
            folder = Path(self.anno_dir)
            for name in self.frame_names:
                png = common.read_label_png(
                    folder / f"{name}.png", (h, w), f"video {vid!r}, frame {name!r}"
                )
                for o in objects:
                    rles[o].append(common.mask_counts(png == o))
            for exp_id, _, o in self.expressions:
                if o is not None and not any(rles[o]):
                    raise InputError(
                        f"{folder}: object {o} (video {vid!r}, expression {exp_id!r} in "
                        f"{self.meta_source}) appears in none of the annotation PNGs"
                    )
        index = {o: k for k, o in enumerate(objects)}
        tracks = tuple(Track(str(o), o, tuple(rles[o])) for o in objects)
        expressions = tuple(
            Expression(
                exp_id,
                text,
                "referring",
                () if o is None else (o,),
                () if o is None else (index[o],),
            )
            for exp_id, text, o in self.expressions
        )
        return common.finish(
            lambda: VideoExample(
                dataset=self.dataset,
                split=self.split,
                video_id=vid,
                frame_names=self.frame_names,
                frame_bytes=frames,
                height=h,
                width=w,
                tracks=tracks,
                expressions=expressions,
                has_masks=self.anno_dir is not None,
                extra=dict(self.extra),
            ),
            self.anno_dir or self.meta_source,
        )


def _object_id(value: Any, where: str, required: bool) -> int | None:
    if value is None:
        if required:
            raise InputError(f"{where}: 'obj_id' is missing")
        return None
    text = (
        str(value).strip() if isinstance(value, str | int) and not isinstance(value, bool) else ""
    )
    if not text.isdecimal() or int(text) < 1:
        raise InputError(f"{where}: 'obj_id' must be a positive integer id, got {value!r}")
    return int(text)


def _parse_meta(path: Path, required: bool) -> dict[str, tuple[tuple[str, ...], tuple]]:
    meta = load_json(path)
    if not isinstance(meta, dict) or not isinstance(meta.get("videos"), dict):
        raise InputError(f"{path}: expected an object with a 'videos' object")
    out = {}
    for vid, entry in meta["videos"].items():
        where = f"{path}: video {vid!r}"
        common.check_video_id(vid, path)
        frames = check_frame_list(entry.get("frames") if isinstance(entry, dict) else None, where)
        exps = entry.get("expressions")
        if not isinstance(exps, dict):
            raise InputError(f"{where}: 'expressions' must be an object")
        expressions = []
        for exp_id, e in exps.items():
            ewhere = f"{where}, expression {exp_id!r}"
            if not isinstance(e, dict) or not isinstance(e.get("exp"), str):
                raise InputError(f"{ewhere}: expected an object with an 'exp' string")
            expressions.append(
                (str(exp_id), e["exp"], _object_id(e.get("obj_id"), ewhere, required))
            )
        out[str(vid)] = (tuple(frames), tuple(expressions))
    return out


def _parse_objects(path: Path) -> dict[str, tuple[tuple[int, ...], dict[str, Any]]]:
    meta = load_json(path)
    if not isinstance(meta, dict) or not isinstance(meta.get("videos"), dict):
        raise InputError(f"{path}: expected an object with a 'videos' object")
    out = {}
    for vid, entry in meta["videos"].items():
        objects = entry.get("objects") if isinstance(entry, dict) else None
        if not isinstance(objects, dict):
            raise InputError(f"{path}: video {vid!r}: expected an 'objects' object")
        ids = tuple(_object_id(k, f"{path}: video {vid!r}", True) for k in objects)
        categories = {
            str(k): o["category"]
            for k, o in objects.items()
            if isinstance(o, dict) and isinstance(o.get("category"), str)
        }
        out[str(vid)] = (ids, categories)
    return out


class PaletteReader(common.Reader):
    def __init__(self, dataset: str, root: str | Path, split: str):
        root = common.require_dir(Path(root), f"{dataset} root folder")
        split_path = common.require_dir(root / split, f"{dataset} split folder {split!r}")
        self.dataset, self.split = dataset, split
        self.source = root / META_DIR / split / META_FILE
        common.require_file(self.source, f"meta file of {dataset} split {split!r}")
        self.frame_dir = common.require_dir(split_path / "JPEGImages", "frame folder")
        anno_dir = split_path / "Annotations"
        self.anno_dir = anno_dir if anno_dir.is_dir() else None
        videos = _parse_meta(self.source, required=self.anno_dir is not None)
        self.excluded: tuple[str, ...] = ()
        test_meta = root / META_DIR / "test" / META_FILE
        if dataset == "refytvos" and split == "valid" and test_meta.is_file():
            test = _parse_meta(test_meta, required=False)
            self.excluded = tuple(sorted(v for v in videos if v in test))
            videos = {v: e for v, e in videos.items() if v not in test}
        self._videos = videos
        objects_path = split_path / OBJECTS_FILE
        self.objects_source = objects_path if objects_path.is_file() else None
        self._objects = None if self.objects_source is None else _parse_objects(objects_path)

    @property
    def has_masks(self) -> bool:
        return self.anno_dir is not None

    def _make_task(self, video_id: str, entry: tuple) -> PaletteTask:
        frames, expressions = entry
        listed, extra = None, {}
        if self._objects is not None:
            listed, categories = self._objects.get(video_id, ((), {}))
            if categories:
                extra = {"categories": categories}
        return PaletteTask(
            dataset=self.dataset,
            split=self.split,
            video_id=video_id,
            frame_dir=str(self.frame_dir / video_id),
            anno_dir=None if self.anno_dir is None else str(self.anno_dir / video_id),
            frame_names=frames,
            expressions=expressions,
            listed_objects=listed,
            meta_source=str(self.source),
            objects_source=None if self.objects_source is None else str(self.objects_source),
            extra=extra,
        )
