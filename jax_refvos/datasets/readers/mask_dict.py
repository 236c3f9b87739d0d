"""Per-video tasks of the datasets whose masks are a `mask_dict.json` (MeViS, synth, LV-VIS, ReVOS).

Follows the official readers: MeViS `mevis/utils` / VIRST `utils/evaluation/eval_rvos.py`, GLUS
`dataset/mevis.py`, `dataset/revos.py`, `dataset/lvvis.py` (and `refer_video_seg_dataset.py`, which
takes an expression's mask as the union of its `anno_id` RLEs, `mask_dict[str(anno_id)][frame]`).

One `Track` per distinct `anno_id` the video's expressions reference (key = str(anno_id),
object_id = the `obj_id` listed beside it, -1 when the lists are not parallel); an expression's
targets are the indices of its anno_ids' tracks. RLE lists follow the meta's frame order (as the
MeViS scorer reads them).
"""

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from jax_refvos.datasets import mevis_layout
from jax_refvos.datasets.example import Expression, Track, VideoExample
from jax_refvos.datasets.readers import common
from jax_refvos.errors import InputError
from jax_refvos.fileio import load_json


@dataclasses.dataclass(frozen=True)
class TrackSpec:
    key: str
    object_id: int
    rles: tuple[Any, ...] | None  # the JSON RLEs (or None entries) per frame; None: no masks


@dataclasses.dataclass(frozen=True)
class ExpressionSpec:
    exp_id: str
    text: str
    kind: str
    object_ids: tuple[int, ...]
    targets: tuple[int, ...]


@dataclasses.dataclass(frozen=True)
class MaskDictTask:
    """Everything needed to read one video; small and picklable (only this video's RLEs)."""

    dataset: str
    split: str
    video_id: str
    frame_dir: str
    frame_names: tuple[str, ...]
    tracks: tuple[TrackSpec, ...]
    expressions: tuple[ExpressionSpec, ...]
    has_masks: bool
    meta_source: str
    mask_source: str | None
    foreground: tuple[Any, ...] | None = None
    foreground_source: str | None = None
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def read(self) -> VideoExample:
        vid = self.video_id
        frames, h, w = common.read_frames(Path(self.frame_dir), self.frame_names, vid)
        for e in self.expressions:
            common.check_text(e.text, f"{self.meta_source}: video {vid!r}, expression {e.exp_id!r}")
        tracks = []
        for t in self.tracks:
            if self.has_masks:
                where = f"{self.mask_source}: anno_id {t.key} (video {vid!r})"
                rles = common.rle_list(list(t.rles), self.frame_names, (h, w), where)
            else:
                rles = ()
            tracks.append(Track(t.key, t.object_id, rles))
        foreground = None
        if self.foreground is not None:
            where = f"{self.foreground_source}: video {vid!r}"
            foreground = common.rle_list(list(self.foreground), self.frame_names, (h, w), where)
        source = self.mask_source if self.has_masks else self.meta_source
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
                expressions=tuple(
                    Expression(e.exp_id, e.text, e.kind, e.object_ids, e.targets)
                    for e in self.expressions
                ),
                has_masks=self.has_masks,
                foreground=foreground,
                extra=dict(self.extra),
            ),
            source,
        )


def make_task(
    *,
    dataset: str,
    split: str,
    video: mevis_layout.Video,
    frame_dir: Path,
    meta_source: Path,
    masks: Mapping[str, Any] | None,
    mask_source: Path | None,
    kind_of: Callable[[mevis_layout.Expression], str],  # raises ValueError for a bad kind
    foreground: Sequence[Any] | None = None,
    foreground_source: Path | None = None,
    extra: Mapping[str, Any] | None = None,
) -> MaskDictTask:
    """Builds the task of one video from its parsed meta entry and the split's mask dict."""
    vid = video.video_id
    object_of: dict[int, int] = {}
    for e in video.expressions:
        ids = e.anno_ids or ()
        if len(e.obj_ids) != len(ids):
            continue
        for anno_id, obj_id in zip(ids, e.obj_ids, strict=True):
            if object_of.setdefault(anno_id, obj_id) != obj_id:
                raise InputError(
                    f"{meta_source}: video {vid!r}, expression {e.exp_id!r}: anno_id {anno_id} "
                    f"is listed with obj_id {obj_id} here and {object_of[anno_id]} elsewhere"
                )
    anno_ids = common.first_seen(a for e in video.expressions for a in (e.anno_ids or ()))
    index = {a: k for k, a in enumerate(anno_ids)}
    tracks = []
    for anno_id in anno_ids:
        rles = None
        if masks is not None:
            rles = masks.get(str(anno_id))
            if rles is None:
                exp = next(e.exp_id for e in video.expressions if anno_id in (e.anno_ids or ()))
                raise InputError(
                    f"{mask_source}: anno_id {anno_id} (video {vid!r}, expression {exp!r}) "
                    f"is not in the mask dict"
                )
            if not isinstance(rles, list):
                raise InputError(
                    f"{mask_source}: anno_id {anno_id} (video {vid!r}): expected a list with one "
                    f"RLE or null per frame"
                )
            rles = tuple(rles)
        tracks.append(TrackSpec(str(anno_id), object_of.get(anno_id, -1), rles))
    expressions = []
    for e in video.expressions:
        try:
            kind = kind_of(e)
        except ValueError as err:
            raise InputError(
                f"{meta_source}: video {vid!r}, expression {e.exp_id!r}: {err}"
            ) from None
        targets = tuple(index[a] for a in e.anno_ids or ())
        expressions.append(ExpressionSpec(e.exp_id, e.text, kind, e.obj_ids, targets))
    return MaskDictTask(
        dataset=dataset,
        split=split,
        video_id=vid,
        frame_dir=str(frame_dir / vid),
        frame_names=video.frames,
        tracks=tuple(tracks),
        expressions=tuple(expressions),
        has_masks=masks is not None,
        meta_source=str(meta_source),
        mask_source=None if mask_source is None else str(mask_source),
        foreground=None if foreground is None else tuple(foreground),
        foreground_source=None if foreground_source is None else str(foreground_source),
        extra=dict(extra or {}),
    )


def referring(_: mevis_layout.Expression) -> str:
    return "referring"


class MaskDictReader(common.Reader):
    """A split described by a MeViS-style meta file and (when annotated) a `mask_dict.json`.

    The meta file is parsed (and checked) on construction; the mask dict and the foreground file
    are parsed on the first `task()` call, so opening a reader stays cheap.
    """

    def __init__(
        self,
        *,
        dataset: str,
        split: str,
        meta_path: Path,
        frame_dir: Path,
        mask_path: Path | None,
        foreground_path: Path | None = None,
        kind_of: Callable[[mevis_layout.Expression], str] = referring,
    ):
        self.dataset, self.split, self.source = dataset, split, meta_path
        common.require_file(meta_path, f"meta file of {dataset} split {split!r}")
        common.require_dir(frame_dir, f"frame folder of {dataset} split {split!r}")
        videos = mevis_layout.load_meta(meta_path)
        for v in videos:
            common.check_video_id(v.video_id, meta_path)
        self._videos = {v.video_id: v for v in videos}
        self.frame_dir = frame_dir
        self.mask_path = mask_path
        self.foreground_path = foreground_path
        self.kind_of = kind_of
        self._masks: Mapping[str, Any] | None = None
        self._foreground: Mapping[str, Any] | None = None

    @property
    def has_masks(self) -> bool:
        return self.mask_path is not None

    def prepare(self) -> None:
        self._load()

    def _load(self) -> None:
        if self.mask_path is not None and self._masks is None:
            # load_mask_dict reads `<dir>/mask_dict.json`; every layout here uses that name.
            self._masks = mevis_layout.load_mask_dict(self.mask_path.parent)
        if self.foreground_path is not None and self._foreground is None:
            fg = load_json(self.foreground_path)
            if not isinstance(fg, dict):
                raise InputError(f"{self.foreground_path}: expected an object keyed by video id")
            self._foreground = fg

    def _foreground_of(self, video_id: str) -> Sequence[Any] | None:
        if self._foreground is None or video_id not in self._foreground:
            return None  # the foreground file may cover another split only
        entry = self._foreground[video_id]
        if not isinstance(entry, dict) or not isinstance(entry.get("masks_rle"), list):
            raise InputError(
                f"{self.foreground_path}: video {video_id!r}: expected an object with a "
                f"'masks_rle' list"
            )
        return entry["masks_rle"]

    def _make_task(self, video_id: str, video: mevis_layout.Video) -> MaskDictTask:
        self._load()
        foreground = self._foreground_of(video_id)
        extra = {} if video.vid_id is None else {"vid_id": video.vid_id}
        return make_task(
            dataset=self.dataset,
            split=self.split,
            video=video,
            frame_dir=self.frame_dir,
            meta_source=self.source,
            masks=self._masks,
            mask_source=self.mask_path,
            kind_of=self.kind_of,
            foreground=foreground,
            foreground_source=self.foreground_path if foreground is not None else None,
            extra=extra,
        )
