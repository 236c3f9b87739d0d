"""Drawing a scene: z-ordered rasterisation into an owner map, then textured frames.

Rendering is split in two so that rejected scenes cost little: `rasterise` computes, per frame,
which object owns each pixel (back to front, so nearer objects hide farther ones); `paint` then
colours the pixels of a textured background by that owner map. An object's visible (modal) mask
is therefore exactly ``owner[t] == obj_id``: the pixels drawn in its colour, no more, no less.
Shapes have hard edges (no anti-aliasing) for the same reason.
"""

import dataclasses
import math

import numpy as np
from PIL import Image

from jax_refvos.datasets.synthetic import appearance
from jax_refvos.datasets.synthetic.scene import Scene

BACKGROUND = -1


@dataclasses.dataclass(frozen=True)
class Raster:
    """The owner map of a scene.

    Attributes:
        owner: int8[T, H, W], the obj_id drawn at each pixel, or `BACKGROUND`.
        boxes: int[N, T, 4] (y0, y1, x0, x1) of each object's outline clipped to the frame (empty
            where the object is absent or outside).
        amodal_area: int[N, T] pixels of each outline inside the frame, before occlusion.
    """

    owner: np.ndarray
    boxes: np.ndarray
    amodal_area: np.ndarray


def rasterise(scene: Scene) -> Raster:
    """Owner map of every frame: objects drawn back to front along `scene.z_order`."""
    h, w, t_len = scene.height, scene.width, scene.num_frames
    n = len(scene.objects)
    owner = np.full((t_len, h, w), BACKGROUND, np.int8)
    boxes = np.zeros((n, t_len, 4), np.int64)
    amodal = np.zeros((n, t_len), np.int64)
    for i in scene.z_order:
        obj = scene.objects[i]
        e = obj.extent
        for t in range(t_len):
            if not obj.present[t]:
                continue
            cx, cy = obj.positions[t]
            # Only the bounding box of the outline is tested, for speed.
            y0, y1 = max(0, math.floor(cy - e)), min(h, math.ceil(cy + e) + 1)
            x0, x1 = max(0, math.floor(cx - e)), min(w, math.ceil(cx + e) + 1)
            if y0 >= y1 or x0 >= x1:
                continue
            dy = np.arange(y0, y1, dtype=np.float64)[:, None] - cy
            dx = np.arange(x0, x1, dtype=np.float64)[None, :] - cx
            inside = appearance.shape_mask(obj.shape, dx, dy, obj.radius)
            owner[t, y0:y1, x0:x1][inside] = i
            boxes[i, t] = (y0, y1, x0, x1)
            amodal[i, t] = int(inside.sum())
    return Raster(owner, boxes, amodal)


def paint(scene: Scene, raster: Raster, rng: np.random.Generator) -> np.ndarray:
    """Frames of the scene: uint8[T, H, W, 3].

    Each object is its flat colour with a gentle light-from-top-left shading and a fixed grain
    texture that moves with it; the background is a different low-saturation texture per video.
    """
    h, w, t_len = scene.height, scene.width, scene.num_frames
    background = _background(rng, h, w)
    looks = []
    for obj in scene.objects:
        base = np.asarray(appearance.COLOURS[obj.colour], np.float32)
        base = base + rng.uniform(-8.0, 8.0, 3).astype(np.float32)
        half = math.ceil(obj.extent) + 1
        grain = rng.normal(0.0, 5.0, (2 * half + 1, 2 * half + 1)).astype(np.float32)
        looks.append((base, half, grain))
    frames = np.empty((t_len, h, w, 3), np.uint8)
    for t in range(t_len):
        frame = background.copy()
        for i in scene.z_order:
            y0, y1, x0, x1 = (int(v) for v in raster.boxes[i, t])
            if y0 >= y1 or x0 >= x1:
                continue
            sel = raster.owner[t, y0:y1, x0:x1] == i
            if not sel.any():
                continue
            obj = scene.objects[i]
            base, half, grain = looks[i]
            cx, cy = obj.positions[t]
            dy = np.arange(y0, y1, dtype=np.float32)[:, None] - np.float32(cy)
            dx = np.arange(x0, x1, dtype=np.float32)[None, :] - np.float32(cx)
            shade = 1.0 - 0.12 * (dx + dy) / np.float32(2.0 * obj.extent)
            gy = np.clip(np.rint(dy).astype(np.int64) + half, 0, 2 * half)
            gx = np.clip(np.rint(dx).astype(np.int64) + half, 0, 2 * half)
            colour = base * shade[..., None] + grain[gy, gx][..., None]
            frame[y0:y1, x0:x1][sel] = colour[sel]
        frames[t] = np.clip(np.rint(frame), 0, 255).astype(np.uint8)
    return frames


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A textured, nearly grey background: float32[H, W, 3] in [0, 255].

    Smooth noise (a coarse random grid upsampled bicubically) + one periodic pattern (stripes,
    checker or waves) + fine grain, tinted by a small chroma offset. Its saturation stays far below
    the objects' colours, so no object can blend into it.
    """
    grid = rng.uniform(0.0, 1.0, (int(rng.integers(3, 7)), int(rng.integers(4, 9))))
    smooth = np.asarray(
        Image.fromarray(grid.astype(np.float32)).resize((w, h), Image.Resampling.BICUBIC)
    )
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    period = rng.uniform(0.08, 0.25) * min(h, w)
    kind = int(rng.integers(3))
    if kind == 0:
        theta = rng.uniform(0.0, np.pi)
        pattern = np.sin(2 * np.pi * (xx * np.cos(theta) + yy * np.sin(theta)) / period)
    elif kind == 1:
        pattern = np.sign(np.sin(np.pi * xx / period) * np.sin(np.pi * yy / period))
    else:
        pattern = np.sin(2 * np.pi * xx / period) * np.cos(2 * np.pi * yy / (1.3 * period))
    lum = (
        rng.uniform(0.35, 0.65)
        + rng.uniform(0.15, 0.3) * (smooth - 0.5)
        + rng.uniform(0.03, 0.08) * pattern
        + rng.normal(0.0, 0.02, (h, w))
    )
    hue = rng.uniform(0.0, 2 * np.pi)
    # A unit chroma direction (zero-sum RGB offset) scaled to at most ~0.06 of the range.
    tint = np.cos(hue + np.array([0.0, 2 * np.pi / 3, 4 * np.pi / 3])) * rng.uniform(0.0, 0.06)
    rgb = np.clip(lum[..., None] + tint, 0.1, 0.9) * 255.0
    return rgb.astype(np.float32)
