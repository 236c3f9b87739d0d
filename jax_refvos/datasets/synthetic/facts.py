"""What can be said about each object: measurements and tri-valued predicates.

Every predicate answers TRUE, FALSE or UNCLEAR. An expression is only emitted when its targets are
exactly the objects for which the whole description is TRUE and every other object is clearly FALSE
(see `expressions`), so UNCLEAR is how borderline cases (an object that moved left before stopping,
"above" for a pair that swaps places, a direction blurred by occlusion) are kept out of the data.

Where a predicate is about what is seen (visible first/last, entering, direction of travel), it
is confirmed on the rendered visible masks, the same masks written to `mask_dict.json`, so that the
data agrees with itself even under occlusion.
"""

import dataclasses
import enum
import math

import numpy as np

from jax_refvos.datasets.synthetic.render import Raster
from jax_refvos.datasets.synthetic.scene import DIRECTIONS, OPPOSITE, Scene, SceneObject


class Truth(enum.Enum):
    TRUE = "true"
    FALSE = "false"
    UNCLEAR = "unclear"


# Per-object motion predicates (the set-level ones, "fastest"/"slowest"/"last", live below).
MOTION_PREDICATES: tuple[str, ...] = (
    *DIRECTIONS,
    "stop",
    "start",
    "still",
    "turn",
    "enter",
    "leave",
)
RELATIONS: tuple[str, ...] = ("above", "below", "left_of", "right_of")

SPEED_MARGIN = 1.5  # "fastest"/"slowest": the winner beats every other candidate by this factor
LAST_MARGIN = 2  # "appears last": frames between the last and the second-last first appearance


@dataclasses.dataclass(frozen=True)
class ObjectFacts:
    """Measurements of one object.

    Attributes:
        visible: bool[T], the visible mask is non-empty.
        area: int[T] visible pixels.
        centroid: float[T, 2] (x, y) of the visible mask; NaN where invisible.
        mean_speed: mean centre displacement per frame while it exists (pixels).
        max_speed: largest centre displacement in one frame while it exists.
    """

    visible: np.ndarray
    area: np.ndarray
    centroid: np.ndarray
    mean_speed: float
    max_speed: float

    @property
    def first_visible(self) -> int:
        return int(np.argmax(self.visible))

    @property
    def last_visible(self) -> int:
        return len(self.visible) - 1 - int(np.argmax(self.visible[::-1]))


def measure(scene: Scene, raster: Raster) -> list[ObjectFacts]:
    """Facts of every object from its trajectory and its visible masks."""
    h, w = scene.height, scene.width
    ys = np.arange(h, dtype=np.float64)
    xs = np.arange(w, dtype=np.float64)
    out = []
    for obj in scene.objects:
        masks = raster.owner == obj.obj_id
        area = masks.sum(axis=(1, 2))
        with np.errstate(invalid="ignore", divide="ignore"):
            cx = (masks.sum(axis=1) @ xs) / area
            cy = (masks.sum(axis=2) @ ys) / area
        steps = obj.present[1:] & obj.present[:-1]
        speed = np.linalg.norm(np.diff(obj.positions, axis=0), axis=1)[steps]
        out.append(
            ObjectFacts(
                visible=area > 0,
                area=area,
                centroid=np.stack([cx, cy], axis=1),
                mean_speed=float(speed.mean()) if speed.size else 0.0,
                max_speed=float(speed.max()) if speed.size else 0.0,
            )
        )
    return out


def is_still(obj: SceneObject) -> bool:
    return obj.direction is None


def motion_truth(obj: SceneObject, facts: ObjectFacts, predicate: str) -> Truth:
    """TRUE/FALSE/UNCLEAR of a per-object motion predicate (a name in `MOTION_PREDICATES`)."""
    if predicate in DIRECTIONS:
        return _direction_truth(obj, facts, predicate)
    m = obj.motion
    if predicate == "still":
        return Truth.TRUE if is_still(obj) else Truth.FALSE
    if predicate in ("stop", "start", "turn"):
        if m == predicate:
            return Truth.TRUE if _phases_seen(obj, facts) else Truth.UNCLEAR
        if predicate == "stop" and m == "turn":
            return Truth.UNCLEAR  # a reversal passes through zero speed
        if predicate == "start" and m == "appear" and not is_still(obj):
            return Truth.UNCLEAR  # it pops up already moving: did it "start"?
        return Truth.FALSE
    if predicate == "enter":
        if m == "enter":
            seen = not facts.visible[0] and facts.visible[-1]
            return Truth.TRUE if seen else Truth.UNCLEAR
        return Truth.UNCLEAR if m == "appear" else Truth.FALSE
    if predicate == "leave":
        if m == "leave":
            return Truth.TRUE if facts.visible[0] and not facts.visible[-1] else Truth.UNCLEAR
        return Truth.FALSE
    raise ValueError(f"unknown motion predicate {predicate!r}")


def _phases_seen(obj: SceneObject, facts: ObjectFacts) -> bool:
    """stop/start/turn: visible in at least two frames before and after the change."""
    c = obj.change_frame
    return facts.visible[: c + 1].sum() >= 2 and facts.visible[c:].sum() >= 2


def _direction_truth(obj: SceneObject, facts: ObjectFacts, direction: str) -> Truth:
    if is_still(obj):
        return Truth.FALSE
    if obj.motion in ("stop", "start"):
        return Truth.UNCLEAR if direction == obj.direction else Truth.FALSE
    if obj.motion == "turn":
        both_ways = (obj.direction, OPPOSITE[obj.direction])
        return Truth.UNCLEAR if direction in both_ways else Truth.FALSE
    # linear, enter, leave, moving appear: one direction all along.
    if direction != obj.direction:
        return Truth.FALSE
    # Confirm on the visible masks: the centroid must travel that way, clearly more than sideways.
    first, last = facts.first_visible, facts.last_visible
    disp = facts.centroid[last] - facts.centroid[first]
    ux, uy = DIRECTIONS[direction]
    along = disp[0] * ux + disp[1] * uy
    across = abs(disp[0] * uy - disp[1] * ux)
    expected = float(np.dot(obj.positions[last] - obj.positions[first], (ux, uy)))
    if along >= max(2.0, 0.3 * expected) and along >= 2.0 * across:
        return Truth.TRUE
    return Truth.UNCLEAR


def _clearly_faster(a: ObjectFacts, b: ObjectFacts) -> bool:
    """`a` beats `b` by `SPEED_MARGIN` in both mean and peak speed."""
    return a.mean_speed >= SPEED_MARGIN * b.mean_speed and a.max_speed >= SPEED_MARGIN * b.max_speed


def fastest(cands: list[int], facts: list[ObjectFacts]) -> int | None:
    """The candidate that is clearly the fastest (mean and peak speed), or None."""
    if len(cands) < 2:
        return None
    best = max(cands, key=lambda i: facts[i].mean_speed)
    if facts[best].mean_speed <= 0:
        return None
    others = (facts[i] for i in cands if i != best)
    return best if all(_clearly_faster(facts[best], other) for other in others) else None


def slowest_moving(cands: list[int], facts: list[ObjectFacts]) -> int | None:
    """Among the candidates that move at all, the clearly slowest one, or None.

    Candidates that never move are clearly not "the slowest moving" one.
    """
    moving = [i for i in cands if facts[i].mean_speed > 0]
    if len(moving) < 2:
        return None
    best = min(moving, key=lambda i: facts[i].mean_speed)
    others = (facts[i] for i in moving if i != best)
    return best if all(_clearly_faster(other, facts[best]) for other in others) else None


def appears_last(facts: list[ObjectFacts]) -> int | None:
    """The object first seen clearly after all others (by `LAST_MARGIN` frames), or None."""
    firsts = [f.first_visible for f in facts]
    order = np.argsort(firsts, kind="stable")
    last, runner_up = int(order[-1]), int(order[-2])
    return last if firsts[last] - firsts[runner_up] >= LAST_MARGIN else None


def relation_truth(
    a: SceneObject, fa: ObjectFacts, b: SceneObject, fb: ObjectFacts, relation: str
) -> Truth:
    """Whether `a` is `relation` of `b` ("a above b") throughout.

    TRUE: both are visible together in at least half the frames, and in every such frame the
    centres are separated the right way by at least half the sum of the radii. FALSE: in every
    frame where both are visible, the centres are on the wrong side. UNCLEAR otherwise.
    """
    both = fa.visible & fb.visible
    if not both.any():
        return Truth.UNCLEAR
    dx = b.positions[:, 0] - a.positions[:, 0]  # > 0: a is left of b
    dy = b.positions[:, 1] - a.positions[:, 1]  # > 0: a is above b
    sep = {"above": dy, "below": -dy, "left_of": dx, "right_of": -dx}[relation][both]
    margin = 0.5 * (a.radius + b.radius)
    if both.sum() >= max(2, math.ceil(len(both) / 2)) and np.all(sep > margin):
        return Truth.TRUE
    if np.all(sep < 0):
        return Truth.FALSE
    return Truth.UNCLEAR
