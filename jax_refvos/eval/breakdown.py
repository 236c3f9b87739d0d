"""Scores by tracking difficulty, read from the ground truth alone (any dataset with masks).

Two splits of the expressions, each into "with" and "without":

- `occlusion`: the expression's video has an object that is partly or wholly hidden by another
  in some frame. A track is occluded in a frame where it is present, clear of the image border,
  and shows less than `OCCLUDED_AREA` of its full area (its largest area among the frames where
  it is clear of the border), or where it is absent between two frames in which it was present
  and clear of the border (hidden where it stood: leaving the image passes the border first).
- `leave_and_return`: one of the expression's targets is absent in some frame between its
  first and last visible frames (it leaves the image or is hidden, then comes back).

`metrics.json` of `refvos evaluate` carries them as `"breakdown"`, each half with J, F, J&F and
its number of expressions (a half with no expressions is left out).
"""

from collections.abc import Iterable, Mapping

import numpy as np
from jaxtyping import Bool

from jax_refvos.datasets.example import VideoExample

OCCLUDED_AREA = 0.8  # a visible area below this fraction of the full one counts as occluded


def _touches_border(m: Bool[np.ndarray, "h w"]) -> bool:
    return bool(m[0].any() or m[-1].any() or m[:, 0].any() or m[:, -1].any())


def track_events(masks: Bool[np.ndarray, "t h w"]) -> dict[str, bool]:
    """`{"occluded": ..., "leaves_and_returns": ...}` of one object's masks (module docstring)."""
    area = masks.reshape(masks.shape[0], -1).sum(1)
    present = area > 0
    idx = np.flatnonzero(present)
    if idx.size == 0:
        return {"occluded": False, "leaves_and_returns": False}
    first, last = int(idx[0]), int(idx[-1])
    gaps = ~present[first : last + 1]
    clear = np.array([p and not _touches_border(m) for m, p in zip(masks, present, strict=True)])
    occluded = False
    if clear.any():
        full = area[clear].max()
        occluded = bool(np.any(clear & (area < OCCLUDED_AREA * full)))
    # Hidden where it stood: absent frames between two present frames that are clear of the border.
    for a, b in zip(idx[:-1], idx[1:], strict=True):
        if b > a + 1 and clear[a] and clear[b]:
            occluded = True
    return {"occluded": occluded, "leaves_and_returns": bool(gaps.any())}


def expression_flags(examples: Iterable[VideoExample]) -> dict[str, dict[str, bool]]:
    """`{"<video>/<exp_id>": {"occlusion": bool, "leave_and_return": bool}}` (module docstring)."""
    flags = {}
    for ex in examples:
        events = [track_events(ex.track_masks(i)) for i in range(len(ex.tracks))]
        occlusion = any(e["occluded"] for e in events)
        for exp in ex.expressions:
            back = any(events[k]["leaves_and_returns"] for k in exp.targets)
            key = f"{ex.video_id}/{exp.exp_id}"
            flags[key] = {"occlusion": occlusion, "leave_and_return": back}
    return flags


def summary(scores: list[tuple[float, float]]) -> dict:
    """(J, F) pairs in [0, 1] -> their means in percent and their number."""
    j = 100 * float(np.mean([s[0] for s in scores]))
    f = 100 * float(np.mean([s[1] for s in scores]))
    return {"J": j, "F": f, "J&F": (j + f) / 2, "num_expressions": len(scores)}


def breakdown(
    per_expression: Mapping[str, tuple[float, float]], flags: Mapping[str, Mapping[str, bool]]
) -> dict:
    """Per-expression (J, F) in [0, 1] -> `{"occlusion": {"with": ..., "without": ...},
    "leave_and_return": {...}}`, each half `{"J", "F", "J&F", "num_expressions"}` in percent."""
    out = {}
    for name in ("occlusion", "leave_and_return"):
        halves = {}
        for half, want in (("with", True), ("without", False)):
            scores = [v for k, v in per_expression.items() if flags[k][name] == want]
            if scores:
                halves[half] = summary(scores)
        out[name] = halves
    return out


def format_lines(bd: Mapping[str, Mapping[str, Mapping]]) -> str:
    """The breakdown as printable lines: `occlusion  with: J&F 61.2 (n 40) | without: ...`."""
    lines = []
    for name, halves in bd.items():
        parts = [
            f"{half}: J&F {h['J&F']:.1f} (J {h['J']:.1f}, F {h['F']:.1f}; n {h['num_expressions']})"
            for half, h in halves.items()
        ]
        lines.append(f"{name:<17} " + " | ".join(parts))
    return "\n".join(lines)
