"""The occlusion / leave-and-return breakdown of `metrics.json` (jax_refvos/eval/breakdown.py)."""

import numpy as np

from jax_refvos.eval import breakdown


def _square(t, h=40, w=40, size=8):
    return np.zeros((t, h, w), bool), size


def test_a_steady_object_has_no_events():
    m, s = _square(5)
    for f in range(5):
        m[f, 10 : 10 + s, 5 + 2 * f : 5 + 2 * f + s] = True
    assert breakdown.track_events(m) == {"occluded": False, "leaves_and_returns": False}


def test_a_partly_covered_object_away_from_the_border_is_occluded():
    m, s = _square(4)
    m[:, 10 : 10 + s, 10 : 10 + s] = True
    m[2, 10 : 10 + s, 10:14] = False  # half hidden by another object
    assert breakdown.track_events(m) == {"occluded": True, "leaves_and_returns": False}


def test_leaving_through_the_border_is_not_occlusion_but_coming_back_counts():
    m, s = _square(6)
    m[0, 10 : 10 + s, 10 : 10 + s] = True
    m[1, 10 : 10 + s, 0:3] = True  # clipped by the border: not occlusion
    m[4, 10 : 10 + s, 0:4] = True  # back in
    m[5, 10 : 10 + s, 4 : 4 + s] = True
    assert breakdown.track_events(m) == {"occluded": False, "leaves_and_returns": True}


def test_vanishing_where_it_stood_is_occlusion():
    m, s = _square(5)
    for f in (0, 1, 4):
        m[f, 10 : 10 + s, 10 : 10 + s] = True  # frames 2-3: fully behind another object
    assert breakdown.track_events(m) == {"occluded": True, "leaves_and_returns": True}


def test_an_absent_track_has_no_events():
    m, _ = _square(3)
    assert breakdown.track_events(m) == {"occluded": False, "leaves_and_returns": False}


def test_breakdown_splits_the_expressions_and_omits_empty_halves():
    per = {"v/0": (0.5, 0.7), "v/1": (1.0, 1.0), "w/0": (0.0, 0.2)}
    flags = {
        "v/0": {"occlusion": True, "leave_and_return": False},
        "v/1": {"occlusion": True, "leave_and_return": False},
        "w/0": {"occlusion": False, "leave_and_return": False},
    }
    bd = breakdown.breakdown(per, flags)
    assert bd["occlusion"]["with"] == {"J": 75.0, "F": 85.0, "J&F": 80.0, "num_expressions": 2}
    assert bd["occlusion"]["without"]["J&F"] == 10.0
    assert set(bd["leave_and_return"]) == {"without"}
    assert bd["leave_and_return"]["without"]["num_expressions"] == 3
    text = breakdown.format_lines(bd)
    assert "occlusion" in text and "J&F 80.0" in text and "n 2" in text
