"""The objects' static vocabulary: shapes (with their outlines), colours and sizes.

Outlines are in units of the object's radius, x to the right and y downwards, centred on the
object's position. `EXTENT` is each outline's farthest point from the centre: keeping the centre
`EXTENT * r` away from the border keeps the whole shape inside the frame; moving it `EXTENT * r`
past the border puts it entirely outside.
"""

import math

import numpy as np

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "diamond", "hexagon")

# Saturated, pairwise distinct colours; backgrounds stay close to grey (see `render`), so an
# object's colour never blends into the texture behind it.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 38, 38),
    "green": (34, 170, 60),
    "blue": (40, 80, 225),
    "yellow": (240, 205, 25),
    "purple": (140, 55, 195),
    "orange": (245, 130, 20),
    "cyan": (25, 195, 215),
}

# Radius as a fraction of min(height, width); a factor of two keeps "small" and "large" apart even
# with the +-8% per-object jitter applied in `scene`.
SIZES: dict[str, float] = {"small": 0.06, "large": 0.12}

PLURALS: dict[str, str] = {s: s + "s" for s in (*SHAPES, "shape", "object")}


def _regular(n: int, radius: float, start_deg: float) -> np.ndarray:
    angles = np.deg2rad(start_deg + 360.0 * np.arange(n) / n)
    return radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)


def _star(points: int, outer: float, inner: float) -> np.ndarray:
    angles = np.deg2rad(-90.0 + 180.0 * np.arange(2 * points) / points)
    radii = np.where(np.arange(2 * points) % 2 == 0, outer, inner)
    return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)


# Polygon vertices (k, 2) as (x, y) per unit radius; None for the analytic circle. Sizes are tuned
# so the shapes' areas are comparable (a triangle with circumradius 1 looks much smaller than a
# circle of radius 1).
OUTLINES: dict[str, np.ndarray | None] = {
    "circle": None,
    "square": np.array([[-0.85, -0.85], [0.85, -0.85], [0.85, 0.85], [-0.85, 0.85]]),
    "triangle": _regular(3, 1.2, -90.0),
    "star": _star(5, 1.2, 0.5),
    "diamond": np.array([[0.0, -1.1], [0.75, 0.0], [0.0, 1.1], [-0.75, 0.0]]),
    "hexagon": _regular(6, 1.0, 0.0),
}

EXTENT: dict[str, float] = {
    name: 1.0 if outline is None else float(np.max(np.hypot(outline[:, 0], outline[:, 1])))
    for name, outline in OUTLINES.items()
}


def shape_mask(shape: str, dx: np.ndarray, dy: np.ndarray, radius: float) -> np.ndarray:
    """Which pixel centres lie inside the shape.

    Args:
        shape: a name in `SHAPES`.
        dx: float[h, w] (or broadcastable) x offsets of pixel centres from the object's centre.
        dy: float[h, w] (or broadcastable) y offsets.
        radius: the object's radius in pixels.

    Returns:
        bool[h, w]. Polygons use the even-odd crossing rule (the star is not convex).
    """
    outline = OUTLINES[shape]
    if outline is None:
        return dx * dx + dy * dy <= radius * radius
    verts = outline * radius
    inside = np.zeros(np.broadcast_shapes(np.shape(dx), np.shape(dy)), bool)
    for k in range(len(verts)):
        (x1, y1), (x2, y2) = verts[k], verts[(k + 1) % len(verts)]
        if y1 == y2:
            continue  # a horizontal edge never crosses a horizontal ray
        crosses = (y1 > dy) != (y2 > dy)
        x_at = x1 + (dy - y1) * (x2 - x1) / (y2 - y1)
        inside ^= crosses & (dx < x_at)
    return inside


def shape_extent(shape: str, radius: float) -> float:
    """Distance from the centre to the shape's farthest point, in pixels (rounded up a little)."""
    return math.ceil(EXTENT[shape] * radius * 100.0) / 100.0
