"""The synthetic benchmark's tri-valued predicates and unambiguity rule, on hand-made objects."""

import numpy as np

from jax_refvos.datasets.synthetic import expressions as expressions_lib
from jax_refvos.datasets.synthetic import facts as facts_lib
from jax_refvos.datasets.synthetic import render
from jax_refvos.datasets.synthetic.facts import ObjectFacts, Truth
from jax_refvos.datasets.synthetic.scene import Scene, SceneObject

DIRECTIONS = ("left", "right", "up", "down")


def _object(i, motion, direction, xs, ys, change=None, shape="circle", colour="red", n=8):
    x, y = (np.broadcast_to(np.asarray(v, float), (n,)) for v in (xs, ys))
    positions = np.stack([x, y], axis=1)
    present = np.ones(n, bool)
    return SceneObject(
        i, shape, colour, "small", 5.0, motion, direction, change, positions, present
    )


def _facts(centroids, speed=1.0):
    c = np.asarray(centroids, float)
    return ObjectFacts(np.ones(len(c), bool), np.full(len(c), 50), c, speed, speed)


def test_direction_is_confirmed_on_the_masks():
    t = np.arange(6)
    right = _object(0, "linear", "right", 10 + 3 * t, 20, n=6)
    seen_moving = _facts(np.stack([10 + 3 * t, np.full(6, 20)], axis=1))
    assert facts_lib.motion_truth(right, seen_moving, "right") is Truth.TRUE
    assert facts_lib.motion_truth(right, seen_moving, "left") is Truth.FALSE
    assert facts_lib.motion_truth(right, seen_moving, "up") is Truth.FALSE
    # Occlusion hides the motion: the visible centroid does not travel, so it is not asserted.
    hidden = _facts(np.tile([10.0, 20.0], (6, 1)))
    assert facts_lib.motion_truth(right, hidden, "right") is Truth.UNCLEAR


def test_partial_motions_are_unclear_not_false():
    t = np.arange(8)
    seen = _facts(np.stack([t, t], axis=1))
    stop = _object(0, "stop", "left", 60 - 4 * np.minimum(t, 4), 20, change=4)
    turn = _object(1, "turn", "up", 30, 40 - 3 * np.minimum(t, 4) + 3 * np.maximum(t - 4, 0), 4)
    still = _object(2, "still", None, 30, 30)
    assert facts_lib.motion_truth(stop, seen, "left") is Truth.UNCLEAR
    assert facts_lib.motion_truth(stop, seen, "right") is Truth.FALSE
    assert facts_lib.motion_truth(stop, seen, "stop") is Truth.TRUE
    assert facts_lib.motion_truth(stop, seen, "still") is Truth.FALSE
    assert facts_lib.motion_truth(turn, seen, "up") is Truth.UNCLEAR
    assert facts_lib.motion_truth(turn, seen, "down") is Truth.UNCLEAR
    assert facts_lib.motion_truth(turn, seen, "left") is Truth.FALSE
    assert facts_lib.motion_truth(turn, seen, "stop") is Truth.UNCLEAR
    assert facts_lib.motion_truth(still, seen, "still") is Truth.TRUE
    assert all(facts_lib.motion_truth(still, seen, d) is Truth.FALSE for d in DIRECTIONS)


def test_relations_and_superlatives():
    t = np.arange(4)
    a = _object(0, "still", None, 20, 10, n=4)
    b = _object(1, "still", None, 20, 40, n=4)
    swap = _object(2, "linear", "down", 20, 20 + 10 * t, n=4)
    seen = _facts(np.zeros((4, 2)))
    assert facts_lib.relation_truth(a, seen, b, seen, "above") is Truth.TRUE
    assert facts_lib.relation_truth(b, seen, a, seen, "above") is Truth.FALSE
    assert facts_lib.relation_truth(swap, seen, b, seen, "above") is Truth.UNCLEAR
    speeds = [_facts(np.zeros((4, 2)), v) for v in (3.0, 1.9, 0.0)]
    assert facts_lib.fastest([0, 1, 2], speeds) == 0
    assert facts_lib.slowest_moving([0, 1, 2], speeds) == 1  # 2 never moves: not a candidate
    assert facts_lib.fastest([0, 1], [_facts(np.zeros((4, 2)), v) for v in (3.0, 2.1)]) is None


def test_unclear_objects_block_a_description():
    """A circle that moves left and stops makes "the circle moving left" unusable."""
    t = np.arange(8)
    objects = (
        _object(0, "linear", "left", 80 - 4 * t, 15),
        _object(1, "stop", "left", 80 - 5 * np.minimum(t, 4), 45, change=4, colour="blue"),
        _object(2, "still", None, 20, 40, shape="square", colour="green"),
    )
    scene = Scene(64, 96, 8, objects, (0, 1, 2))
    facts = facts_lib.measure(scene, render.rasterise(scene))
    meanings = expressions_lib.all_meanings(scene, facts)
    assert not [m for m in meanings if m.predicate == "left"]
    stops = {m.targets for m in meanings if m.predicate == "stop"}
    assert stops == {(1,)}
    for m in meanings:
        if m.family == "motion":  # the noun alone never suffices
            for noun in m.nouns:
                matching = [o.obj_id for o in objects if noun.matches(o.shape, o.colour, o.size)]
                assert len(matching) > len(m.targets)
