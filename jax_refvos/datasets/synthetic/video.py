"""One video of the benchmark, end to end: scene -> checks -> expressions -> JPEGs and RLE masks.

`make_video` is the unit of parallel work. It depends only on its `VideoTask` (its random stream is
``default_rng([seed, split_index, video_index])``), so the output does not depend on how videos are
spread over worker processes. A scene that fails a check is redrawn from the same stream.
"""

import dataclasses
import math
import os
from typing import Any

import numpy as np
from PIL import Image

from jax_refvos.datasets import rle
from jax_refvos.datasets.synthetic import expressions as expressions_lib
from jax_refvos.datasets.synthetic import facts as facts_lib
from jax_refvos.datasets.synthetic import render
from jax_refvos.datasets.synthetic.expressions import Expression
from jax_refvos.datasets.synthetic.scene import Scene, sample_scene

JPEG_QUALITY = 90
MAX_ATTEMPTS = 1000
# Objects that exist all along must be visible in at least half the frames; enter/leave/appear
# objects are absent for part of the video by design, and need a third.
_LATE_MOTIONS = ("enter", "leave", "appear")
# In at least half of its visible frames an object shows this share of its outline, so that no
# object is only ever a sliver peeking from behind another.
_MIN_SHOWN = 0.3


@dataclasses.dataclass(frozen=True)
class VideoTask:
    """What `make_video` needs; `jpeg_dir` is where its frames go (created by the worker)."""

    seed: int
    split_index: int
    video_index: int
    vid: str
    height: int
    width: int
    min_frames: int
    max_frames: int
    require_multi: bool
    jpeg_dir: str


@dataclasses.dataclass(frozen=True)
class VideoRecord:
    """A finished video, minus anything split-global (anno_ids are assigned by the writer).

    Attributes:
        vid: the video id.
        frames: frame names without extension, in order.
        objects: per object, the `synth_info.json` entry (without anno_id).
        masks: per object, per frame: the COCO RLE of the visible mask, or None where it is empty.
        expressions: in exp_id order.
        occluded: some object is partly or fully hidden by another in some frame.
    """

    vid: str
    frames: list[str]
    objects: list[dict[str, Any]]
    masks: list[list[dict[str, Any] | None]]
    expressions: list[Expression]
    occluded: bool


def make_video(task: VideoTask) -> VideoRecord:
    """Generates one video and writes its JPEG frames into `task.jpeg_dir`."""
    rng = np.random.default_rng([task.seed, task.split_index, task.video_index])
    num_frames = int(rng.integers(task.min_frames, task.max_frames + 1))
    for _ in range(MAX_ATTEMPTS):
        scene = sample_scene(rng, task.height, task.width, num_frames)
        raster = render.rasterise(scene)
        facts = facts_lib.measure(scene, raster)
        if not _visible_enough(scene, raster, facts):
            continue
        meanings = expressions_lib.all_meanings(scene, facts)
        chosen = expressions_lib.select(
            rng, meanings, len(scene.objects), require_multi=task.require_multi
        )
        if chosen is not None:
            break
    else:  # pragma: no cover - the acceptance rate is far above 1 / MAX_ATTEMPTS
        raise RuntimeError(f"{task.vid}: no acceptable scene in {MAX_ATTEMPTS} attempts")

    frames = render.paint(scene, raster, rng)
    names = [f"{t:05d}" for t in range(num_frames)]
    os.makedirs(task.jpeg_dir, exist_ok=True)
    for name, frame in zip(names, frames, strict=True):
        Image.fromarray(frame).save(
            os.path.join(task.jpeg_dir, f"{name}.jpg"), format="JPEG", quality=JPEG_QUALITY
        )
    masks = [
        [
            rle.encode(raster.owner[t] == obj.obj_id) if f.visible[t] else None
            for t in range(num_frames)
        ]
        for obj, f in zip(scene.objects, facts, strict=True)
    ]
    visible_area = np.stack([f.area for f in facts])
    return VideoRecord(
        vid=task.vid,
        frames=names,
        objects=_object_info(scene, facts),
        masks=masks,
        expressions=chosen,
        occluded=bool(np.any(visible_area < raster.amodal_area)),
    )


def _visible_enough(
    scene: Scene, raster: render.Raster, facts: list[facts_lib.ObjectFacts]
) -> bool:
    t_len = scene.num_frames
    for obj, f in zip(scene.objects, facts, strict=True):
        need = max(2, math.ceil(t_len / 3)) if obj.motion in _LATE_MOTIONS else math.ceil(t_len / 2)
        if f.visible.sum() < need:
            return False
        full = raster.amodal_area[obj.obj_id].max()
        shown = f.area[f.visible] >= _MIN_SHOWN * full
        if 2 * shown.sum() < f.visible.sum():
            return False
    return True


def _object_info(scene: Scene, facts: list[facts_lib.ObjectFacts]) -> list[dict[str, Any]]:
    depth = {obj_id: rank for rank, obj_id in enumerate(scene.z_order)}
    return [
        {
            "obj_id": obj.obj_id,
            "shape": obj.shape,
            "colour": obj.colour,
            "size": obj.size,
            "motion": obj.motion,
            "direction": obj.direction,
            "change_frame": obj.change_frame,
            "radius": round(obj.radius, 2),
            "depth": depth[obj.obj_id],
            "first_visible": f.first_visible,
            "last_visible": f.last_visible,
            "visible_frames": int(f.visible.sum()),
            "mean_speed": round(f.mean_speed, 3),
        }
        for obj, f in zip(scene.objects, facts, strict=True)
    ]
