"""Scores a prediction folder against a MeViS-layout split: J, F, J&F as the official code.

Follows `utils/evaluation/eval_rvos.py` of AIDASLab/VIRST (itself the MeViS `eval_mevis.py`): for
every (video, expression) the target is the union of the expression's `anno_id` masks, every frame
listed in `meta_expressions.json` is scored, the expression's J and F are the means over its frames,
and the split's J and F are the means over expressions; J&F = (J + F) / 2. Values are reported in
percent, unrounded (the official script rounds to 2 decimals for display only; so does our table).

DEVIATION(eval_rvos): a listed frame whose prediction is missing is an error naming the files
(the official code crashes on it, or scores the whole expression 0 when the video folder is
missing). With `allow_missing`, any expression with a missing frame scores J = F = 0, which is what
the official code does for a missing video.

Work is parallel over expressions (a spawn process pool: safe after JAX is imported), each worker
decoding the ground truth and reading the PNGs of one expression and scoring all its frames at once
with the vectorised `metrics.frame_scores`.
"""

import concurrent.futures
import dataclasses
import multiprocessing
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jax_refvos import console
from jax_refvos.datasets import mevis_layout
from jax_refvos.errors import InputError
from jax_refvos.eval import masks_io, metrics
from jax_refvos.fileio import atomic_write_json


@dataclasses.dataclass(frozen=True)
class ExpressionTask:
    """Everything a worker needs to score one expression (picklable, self-contained)."""

    key: str  # "<vid>/<exp_id>"
    frames: tuple[str, ...]
    size: tuple[int, int]
    anno_ids: tuple[int, ...]
    rles: tuple[list[mevis_layout.RleOrNone], ...]  # per anno_id, one entry per frame
    pred_dir: str
    mask_source: str


@dataclasses.dataclass(frozen=True)
class ScoreResult:
    """Split-level scores in percent, and per-expression (J, F) in percent."""

    j: float
    f: float
    num_expressions: int
    per_expression: dict[str, tuple[float, float]]
    missing: tuple[str, ...] = ()

    @property
    def jf(self) -> float:
        return (self.j + self.f) / 2

    def to_json(self) -> dict[str, Any]:
        return {
            "J": self.j,
            "F": self.f,
            "J&F": self.jf,
            "num_expressions": self.num_expressions,
            "per_expression": {k: {"J": j, "F": f} for k, (j, f) in self.per_expression.items()},
        }


def score_expression(task: ExpressionTask) -> tuple[str, float, float]:
    """Mean J and F (fractions in [0, 1]) of one expression over all its frames."""
    t, (h, w) = len(task.frames), task.size
    gt = np.zeros((t, h, w), bool)
    pred = np.zeros((t, h, w), bool)
    for i, frame in enumerate(task.frames):
        for anno_id, per_frame in zip(task.anno_ids, task.rles, strict=True):
            where = f"{task.mask_source}: anno_id {anno_id}, frame {frame!r}"
            mask = mevis_layout.decode_frame(per_frame[i], task.size, where=where)
            if mask is not None:
                gt[i] |= mask
        pred[i] = masks_io.read_mask(os.path.join(task.pred_dir, f"{frame}.png"), task.size)
    j, f = metrics.frame_scores(gt, pred)
    return task.key, float(j.mean()), float(f.mean())


def plan_tasks(
    dataset_root: str | Path, split: str, pred_dir: str | Path
) -> tuple[list[ExpressionTask], dict[str, list[str]]]:
    """Builds one task per expression and lists missing prediction files per expression key."""
    split_path = mevis_layout.split_dir(dataset_root, split)
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise InputError(f"{pred_dir}: prediction directory does not exist")
    videos = mevis_layout.load_videos(split_path)
    masks = mevis_layout.load_mask_dict(split_path)
    mask_source = str(split_path / mevis_layout.MASK_FILE)
    tasks, missing = [], {}
    for video in videos:
        size = mevis_layout.video_frame_size(split_path, video)
        for exp in video.expressions:
            key = f"{video.video_id}/{exp.exp_id}"
            if exp.anno_ids is None:
                raise InputError(
                    f"{split_path / mevis_layout.META_FILE}: expression {key} has no 'anno_id': "
                    f"split {split!r} has no ground truth and cannot be scored locally"
                )
            rles = mevis_layout.expression_rles(
                masks, exp.anno_ids, len(video.frames), source=Path(mask_source)
            )
            exp_dir = pred_dir / video.video_id / exp.exp_id
            present = set(os.listdir(exp_dir)) if exp_dir.is_dir() else set()
            absent = [f"{f}.png" for f in video.frames if f"{f}.png" not in present]
            if absent:
                missing[key] = absent
            tasks.append(
                ExpressionTask(
                    key, video.frames, size, exp.anno_ids, tuple(rles), str(exp_dir), mask_source
                )
            )
    if not tasks:
        raise InputError(f"{split_path / mevis_layout.META_FILE}: no expressions to score")
    return tasks, missing


def _missing_message(pred_dir: Path, missing: dict[str, list[str]], limit: int = 20) -> str:
    total = sum(len(v) for v in missing.values())
    lines = [
        f"{pred_dir}: {total} prediction file(s) missing for {len(missing)} expression(s) "
        "(pass --allow_missing to score those expressions 0):"
    ]
    for key, files in list(missing.items())[:limit]:
        shown = ", ".join(files[:3]) + (", ..." if len(files) > 3 else "")
        lines.append(f"  {key}/: {len(files)} missing ({shown})")
    if len(missing) > limit:
        lines.append(f"  ... and {len(missing) - limit} more expression(s)")
    return "\n".join(lines)


def _run(tasks: Sequence[ExpressionTask], num_workers: int, progress: bool):
    # leave=False: an error raised mid-way is then printed on a clean line, not after the bar.
    bar = dict(total=len(tasks), desc="scoring", unit="expr", enabled=progress, leave=False)
    if num_workers <= 1 or len(tasks) < 2:
        yield from console.progress(map(score_expression, tasks), **bar)
        return
    ctx = multiprocessing.get_context("spawn")
    workers = min(num_workers, len(tasks))
    chunk = max(1, len(tasks) // (8 * workers))
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=ctx) as pool:
        yield from console.progress(pool.map(score_expression, tasks, chunksize=chunk), **bar)


def score_split(
    dataset_root: str | Path,
    split: str,
    pred_dir: str | Path,
    *,
    allow_missing: bool = False,
    num_workers: int | None = None,
    progress: bool = True,
) -> ScoreResult:
    """Scores `pred_dir` on `<dataset_root>/<split>`; see the module docstring for the rules."""
    tasks, missing = plan_tasks(dataset_root, split, pred_dir)
    if missing and not allow_missing:
        raise InputError(_missing_message(Path(pred_dir), missing))
    todo = [t for t in tasks if t.key not in missing]
    if num_workers is None:
        num_workers = os.cpu_count() or 1
    scores = {key: (j, f) for key, j, f in _run(todo, num_workers, progress)}
    per_expression = {t.key: scores.get(t.key, (0.0, 0.0)) for t in tasks}
    js = np.array([v[0] for v in per_expression.values()])
    fs = np.array([v[1] for v in per_expression.values()])
    return ScoreResult(
        j=100 * float(js.mean()),
        f=100 * float(fs.mean()),
        num_expressions=len(tasks),
        per_expression={k: (100 * j, 100 * f) for k, (j, f) in per_expression.items()},
        missing=tuple(missing),
    )


def format_table(result: ScoreResult, title: str) -> str:
    """The short stdout table (2 decimals, as papers and the official script report)."""
    lines = [
        title,
        f"{'J&F':>8} {'J':>8} {'F':>8}",
        f"{result.jf:8.2f} {result.j:8.2f} {result.f:8.2f}",
    ]
    if result.missing:
        lines.append(f"({len(result.missing)} expression(s) with missing predictions scored 0)")
    return "\n".join(lines)


def write_metrics(path: str | Path, result: ScoreResult) -> None:
    """Writes metrics.json atomically."""
    atomic_write_json(path, result.to_json())
