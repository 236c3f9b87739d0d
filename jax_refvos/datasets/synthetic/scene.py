"""Sampling a video's objects and their trajectories (the ground truth behind frames and phrases).

A scene holds 2-6 objects, each with a look (shape, colour, size) and a motion pattern:

- ``still``: never moves.
- ``linear``: moves left/right/up/down all the time, slow or fast, with a slight sideways wobble.
- ``stop``: moves, then stops at `change_frame`.
- ``start``: still until `change_frame`, then moves.
- ``turn``: moves one way until `change_frame`, then reverses.
- ``enter``: starts entirely outside the frame and moves in.
- ``leave``: moves out of the frame and is entirely outside for the last frame(s).
- ``appear``: pops into existence at `change_frame` (then still, or moving linearly).

Positions are float pixel coordinates of the object's centre, with pixel (row i, column j) centred
at (x=j, y=i). Objects other than enter/leave keep their whole outline inside the frame.
"""

import dataclasses
import math

import numpy as np

from jax_refvos.datasets.synthetic import appearance

DIRECTIONS: dict[str, tuple[float, float]] = {
    "left": (-1.0, 0.0),
    "right": (1.0, 0.0),
    "up": (0.0, -1.0),
    "down": (0.0, 1.0),
}
OPPOSITE = {"left": "right", "right": "left", "up": "down", "down": "up"}

MOTIONS: tuple[str, ...] = ("still", "linear", "stop", "start", "turn", "enter", "leave", "appear")
_MOTION_WEIGHTS = np.array([0.14, 0.30, 0.11, 0.11, 0.10, 0.09, 0.09, 0.06])
# Shorter videos have no room for two motion phases or a late appearance.
_SHORT_VIDEO = 6
_SHORT_MOTIONS = ("still", "linear", "enter", "leave")

_NUM_OBJECTS = np.arange(2, 7)
_NUM_OBJECTS_P = np.array([0.12, 0.22, 0.26, 0.22, 0.18])

# Travel as a fraction of the free span along the motion's axis. The slow and fast ranges are far
# apart so that "the fastest"/"the slowest" usually have a clear winner.
_SLOW = (0.18, 0.30)
_FAST = (0.55, 0.85)
_PHASE = (0.35, 0.75)  # the moving phase of stop/start
_TURN = (0.30, 0.60)
_WOBBLE = 0.012  # perpendicular wobble amplitude, fraction of min(h, w)
_CROSSING_P = 0.4  # chance that a moving object is aimed at another one (occlusions)


@dataclasses.dataclass(frozen=True)
class SceneObject:
    """One object of a video.

    Attributes:
        obj_id: index in the video (MeViS obj_id).
        shape, colour, size: names from `appearance`.
        radius: pixels.
        motion: a pattern in `MOTIONS`.
        direction: left/right/up/down of the (first) movement; None for still objects.
        change_frame: stop/start/turn: the frame where the motion changes; appear: the first frame
            the object exists; None otherwise.
        positions: float[T, 2] centre (x, y) per frame (defined even where the object is absent).
        present: bool[T], False before an `appear` object appears.
    """

    obj_id: int
    shape: str
    colour: str
    size: str
    radius: float
    motion: str
    direction: str | None
    change_frame: int | None
    positions: np.ndarray
    present: np.ndarray

    @property
    def extent(self) -> float:
        return appearance.shape_extent(self.shape, self.radius)


@dataclasses.dataclass(frozen=True)
class Scene:
    """Objects and their drawing order (`z_order`: obj_ids from back to front)."""

    height: int
    width: int
    num_frames: int
    objects: tuple[SceneObject, ...]
    z_order: tuple[int, ...]


def sample_scene(rng: np.random.Generator, height: int, width: int, num_frames: int) -> Scene:
    """Draws a scene; the caller rejects and redraws scenes that fail its visibility checks."""
    n = int(rng.choice(_NUM_OBJECTS, p=_NUM_OBJECTS_P))
    side = min(height, width)
    shapes: list[str] = []
    colours: list[str] = []
    objects: list[SceneObject] = []
    for i in range(n):
        # Reusing an earlier shape/colour makes objects share attributes, so that many of them can
        # only be told apart by motion or position (as in MeViS) and plural phrases exist.
        shape = str(rng.choice(shapes if shapes and rng.random() < 0.4 else appearance.SHAPES))
        colour = str(
            rng.choice(colours if colours and rng.random() < 0.35 else list(appearance.COLOURS))
        )
        shapes.append(shape)
        colours.append(colour)
        size = str(rng.choice(list(appearance.SIZES)))
        radius = appearance.SIZES[size] * side * float(rng.uniform(0.92, 1.08))
        motion = _sample_motion(rng, num_frames)
        extent = appearance.shape_extent(shape, radius)
        traj = _sample_trajectory(rng, motion, extent, height, width, num_frames, objects)
        objects.append(SceneObject(i, shape, colour, size, radius, motion, *traj))
    z_order = tuple(int(k) for k in rng.permutation(n))
    return Scene(height, width, num_frames, tuple(objects), z_order)


def _sample_motion(rng: np.random.Generator, num_frames: int) -> str:
    if num_frames < _SHORT_VIDEO:
        return str(rng.choice(_SHORT_MOTIONS))
    return str(rng.choice(MOTIONS, p=_MOTION_WEIGHTS / _MOTION_WEIGHTS.sum()))


def _sample_trajectory(
    rng: np.random.Generator,
    motion: str,
    extent: float,
    height: int,
    width: int,
    t_len: int,
    others: list[SceneObject],
) -> tuple[str | None, int | None, np.ndarray, np.ndarray]:
    """Returns (direction, change_frame, positions float[T, 2], present bool[T])."""
    t = np.arange(t_len, dtype=np.float64)
    present = np.ones(t_len, bool)
    side = min(height, width)
    if motion == "appear":
        change = int(rng.integers(round(0.3 * (t_len - 1)), round(0.6 * (t_len - 1)) + 1))
        present[:change] = False
        sub = "still" if rng.random() < 0.5 else "linear"
    else:
        change = None
        sub = motion
    if sub == "still":
        x = rng.uniform(extent + 1, width - 2 - extent)
        y = rng.uniform(extent + 1, height - 2 - extent)
        positions = np.tile([x, y], (t_len, 1))
        return None, change, positions, present

    direction = str(rng.choice(list(DIRECTIONS)))
    axis_len = (width if direction in ("left", "right") else height) - 1.0
    perp_len = (height if direction in ("left", "right") else width) - 1.0
    lo, hi = extent + 1.0, axis_len - extent - 1.0
    span = hi - lo
    if sub in ("stop", "start", "turn"):
        change = int(rng.integers(round(0.35 * (t_len - 1)), round(0.65 * (t_len - 1)) + 1))
    # "Active time": the clock of the motion, frozen while the object stands still.
    if sub == "stop":
        active = np.minimum(t, change)
    elif sub == "start":
        active = np.maximum(t - change, 0.0)
    else:
        active = t

    if sub == "linear":
        lo_hi = _SLOW if rng.random() < 0.5 else _FAST
        along = active * rng.uniform(*lo_hi) * span / max(t_len - 1, 1)
    elif sub in ("stop", "start"):
        moving = change if sub == "stop" else t_len - 1 - change
        along = active * rng.uniform(*_PHASE) * span / max(moving, 1)
    elif sub == "turn":
        v = rng.uniform(*_TURN) * span / max(change, 1)
        along = v * np.minimum(t, change) - v * np.maximum(t - change, 0.0)
        if np.ptp(along) > span:
            along *= 0.98 * span / np.ptp(along)  # margin against rounding
    elif sub == "enter":
        k = int(rng.integers(1, max(1, round(0.3 * (t_len - 1))) + 1))  # frames fully outside
        end = rng.uniform(0.35, 0.75) * axis_len
        v = (end + extent + 1.0) / (t_len - k)
        along = -extent - 1.0 + v * (t - k + 1.0)
    else:  # leave
        k = int(rng.integers(1, max(1, round(0.3 * (t_len - 1))) + 1))
        start = rng.uniform(0.25, 0.65) * axis_len
        v = (axis_len + extent + 1.0 - start) / (t_len - k)
        along = axis_len + extent + 1.0 - v * (t_len - k - t)

    amp = rng.uniform(0.0, _WOBBLE * side)
    wobble = amp * np.sin(2 * np.pi * active / rng.uniform(6.0, 14.0) + rng.uniform(0, 2 * np.pi))
    p_lo, p_hi = extent + 1.0 + amp, perp_len - extent - 1.0 - amp
    perp = rng.uniform(p_lo, p_hi)
    aim = _aim(rng, others, t_len) if sub not in ("enter", "leave") else None
    if aim is not None:
        t_aim, (x_aim, y_aim) = aim
        horizontal = direction in ("left", "right")
        s_aim = x_aim if horizontal else y_aim
        s_aim = axis_len - s_aim if direction in ("left", "up") else s_aim
        p_aim = y_aim if horizontal else x_aim
        perp = float(np.clip(p_aim + rng.uniform(-0.5, 0.5) * extent, p_lo, p_hi))
        offset = float(np.clip(s_aim - along[t_aim], lo - along.min(), hi - along.max()))
    elif sub in ("enter", "leave"):
        offset = 0.0
    else:
        offset = rng.uniform(lo - along.min(), hi - along.max())
    s = along + offset
    p = perp + wobble
    # Map the along-axis coordinate (increasing in the direction of motion) back to x, y.
    if direction == "right":
        positions = np.stack([s, p], axis=1)
    elif direction == "left":
        positions = np.stack([axis_len - s, p], axis=1)
    elif direction == "down":
        positions = np.stack([p, s], axis=1)
    else:
        positions = np.stack([p, axis_len - s], axis=1)
    return direction, change, positions, present


def _aim(
    rng: np.random.Generator, others: list[SceneObject], t_len: int
) -> tuple[int, np.ndarray] | None:
    """Sometimes picks (frame, (x, y)) where another object is, so that the paths cross there."""
    if not others or rng.random() >= _CROSSING_P:
        return None
    other = others[int(rng.integers(len(others)))]
    t_aim = int(rng.integers(math.floor(t_len / 3), math.ceil(2 * t_len / 3)))
    return t_aim, other.positions[t_aim]
