"""Statistics of a generated split and the dataset README that presents them."""

import collections
from typing import Any

from jax_refvos.datasets.synthetic import appearance, phrases
from jax_refvos.datasets.synthetic.config import GENERATOR_VERSION
from jax_refvos.datasets.synthetic.expressions import FAMILIES, MAX_EXPRESSIONS, MIN_EXPRESSIONS
from jax_refvos.datasets.synthetic.scene import MOTIONS
from jax_refvos.datasets.synthetic.video import VideoRecord


def split_statistics(records: list[VideoRecord]) -> dict[str, Any]:
    """Counts and shares of one split (shares are fractions in [0, 1], rounded to 4 digits)."""
    exps = [e for r in records for e in r.expressions]
    object_frames = sum(len(r.frames) * len(r.objects) for r in records)
    absent = sum(m is None for r in records for per_object in r.masks for m in per_object)
    motions = collections.Counter(o["motion"] for r in records for o in r.objects)

    def share(count: int, total: int) -> float:
        return round(count / total, 4) if total else 0.0

    return {
        "videos": len(records),
        "frames": sum(len(r.frames) for r in records),
        "min_frames": min(len(r.frames) for r in records),
        "max_frames": max(len(r.frames) for r in records),
        "objects": sum(len(r.objects) for r in records),
        "expressions": len(exps),
        **{f"{f}_share": share(sum(e.family == f for e in exps), len(exps)) for f in FAMILIES},
        "multi_target_share": share(sum(e.multi_target for e in exps), len(exps)),
        "occlusion_video_share": share(sum(r.occluded for r in records), len(records)),
        "absent_object_frame_share": share(absent, object_frames),
        "motion_patterns": {m: motions[m] for m in MOTIONS},
    }


_FAMILY_TEXT = """\
Every expression obeys one rule: its targets are exactly the objects for which the whole
description is true, and every other object is clearly false for it. Predicates are tri-valued
(true / false / unclear) and a description is only used when no object is unclear: an object that
moved left and then stopped is "unclear" for "moving left", so "the shape moving left" is never
asked in a video that has one. Visual predicates (direction of travel, entering, leaving, appearing
last) are checked on the very masks in `mask_dict.json`.

- **motion** (resolvable only from motion or time: the noun phrase alone matches more objects than
  the targets): direction ("the circle moving left", "the small shape going upward"), "the shape
  that stops", "... that starts moving", "... that does not move", "... that turns around",
  "... that enters the frame", "... that leaves the frame", "the fastest shape" and "the slowest
  moving circle" (the winner beats every other candidate by 1.5x in mean and peak speed), "the
  object that appears last" (first visible at least 2 frames after every other object).
- **appearance**: the shortest unique static description ("the triangle", "the red triangle",
  "the small red triangle"), or a plural one for a proper subset of the objects.
- **relation**: "the {A} above / below / to the left of / to the right of the {B}", B uniquely
  described by appearance, A's noun matching at least two objects besides B; the relation holds in
  every frame both are visible (at least half the frames, centres apart by half the sum of the
  radii) for the target, and in no such frame for the other candidates.
- **multi-target** (a flag, not a family): plural motion or appearance expressions with their
  count word, e.g. "the two circles moving right", "the three shapes that do not move", "the two
  red shapes". Every other video of a split carries one.

Each predicate has 2-3 paraphrases ("moving left" / "going to the left" / "that moves left").
"""


def render(summary: dict[str, Any]) -> str:
    """The dataset's README.md (Markdown)."""
    p = summary["parameters"]
    splits = summary["splits"]
    colours = ", ".join(appearance.COLOURS)
    sizes = ", ".join(f"{k} (radius {v:g} x min(H, W))" for k, v in appearance.SIZES.items())
    count_words = ", ".join(phrases.COUNT_WORDS.values())
    lines = [
        "# Synthetic referring video object segmentation benchmark",
        "",
        "Written by `refvos synth` (jax_refvos, generator version"
        f" {GENERATOR_VERSION}). Videos of 2-6 flat, lightly shaded shapes on textured,"
        " low-saturation backgrounds; the shapes move with different speeds and directions,"
        " occlude each other by depth order, and enter, leave or pop into the frame. Each video has"
        f" {MIN_EXPRESSIONS}-{MAX_EXPRESSIONS} referring expressions; at least half of them (per"
        " video) can only be resolved from motion or time, as in MeViS. The same parameters"
        " always give byte-identical files.",
        "",
        "## Parameters",
        "",
        *[f"- `{k}`: {v}" for k, v in p.items()],
        "",
        f"Video lengths are uniform in [{p['min_frames']}, {p['num_frames']}] frames of"
        f" {p['height']}x{p['width']} pixels. Video `i` of split `s` (0 train, 1 valid_u,"
        " 2 valid) is drawn from `numpy.random.default_rng([seed, s, i])`.",
        "",
        "## Layout (MeViS)",
        "",
        "```",
        "<split>/JPEGImages/<vid>/<frame>.jpg  frames 00000.jpg, 00001.jpg, ... (JPEG quality 90)",
        "<split>/meta_expressions.json  {videos: {vid: {vid_id, frames, expressions: {exp_id:",
        "                                 {exp, obj_id, anno_id}}}}}",
        "<split>/mask_dict.json         {anno_id: [COCO compressed RLE or null, one per frame]}",
        "<split>/synth_info.json        not MeViS: objects (look, motion pattern, depth) and each",
        "                               expression's family, multi_target flag and predicate",
        "synth_config.json              generator version, parameters and statistics (stamp)",
        "```",
        "",
        "Splits: `train`, `valid_u`, `valid`. `obj_id` indexes the objects of a video; `anno_id`",
        "is unique within a split, one per (video, object), in the order of `obj_id`. Masks are",
        "modal: exactly the pixels where the object is drawn, after occlusion; `null` where it is",
        "absent (outside the frame, not yet appeared, or fully hidden).",
        "",
        "## Objects and motion",
        "",
        f"- Shapes: {', '.join(appearance.SHAPES)}. Colours: {colours}. Sizes: {sizes}.",
        "- Motion patterns: still; linear (left/right/up/down, slow or fast, slight wobble);"
        " stop (moves, then stops); start (still, then moves); turn (reverses midway); enter"
        " (starts outside the frame); leave (ends outside the frame); appear (pops in at a later"
        " frame). Some paths are aimed at other objects so that they cross and occlude.",
        "- A scene is redrawn unless every object is visible in at least half its frames (a third"
        " for enter/leave/appear) and shows at least 30% of its outline in most of them.",
        "",
        "## Expression families",
        "",
        _FAMILY_TEXT.rstrip(),
        f"Count words: {count_words}.",
        "",
        "## Statistics",
        "",
        "| split | videos | frames (min-max) | objects | expressions | motion | appearance |"
        " relation | multi-target | videos with occlusion | absent object-frames |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for split, s in splits.items():
        lines.append(
            f"| {split} | {s['videos']} | {s['frames']} ({s['min_frames']}-{s['max_frames']}) |"
            f" {s['objects']} | {s['expressions']} | {s['motion_share']:.1%} |"
            f" {s['appearance_share']:.1%} | {s['relation_share']:.1%} |"
            f" {s['multi_target_share']:.1%} | {s['occlusion_video_share']:.1%} |"
            f" {s['absent_object_frame_share']:.1%} |"
        )
    lines += ["", "Objects per motion pattern:", ""]
    for split, s in splits.items():
        counts = ", ".join(f"{m} {c}" for m, c in s["motion_patterns"].items())
        lines.append(f"- {split}: {counts}")
    return "\n".join(lines) + "\n"
