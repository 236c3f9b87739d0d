"""Scoring a converted split's predictions from the records' own ground truth.

`refvos score` reads a raw MeViS-layout split; the evaluator has only the split's records, whose
examples carry every target's RLE masks. `score_tasks` turns them into `score.ExpressionTask`s
(the union of an expression's targets, every frame), so the numbers are `refvos score`'s (equal
per expression, tests/eval/test_evaluate.py). ReVOS adds "by_kind" (referring / reasoning /
no_target) and "overall" = the mean of the referring and reasoning means (VIRST eval_revos.py).
Splits without ground truth are zipped in the evaluation server's layout (`write_submission`).
"""

import concurrent.futures
import multiprocessing
import zipfile
from pathlib import Path

import numpy as np

from jax_refvos.eval import breakdown

ZIP_PREFIX = {"refytvos": "Annotations/"}  # CodaLab layouts; MeViS: folders at the zip root
KINDS_REPORTED = ("referring", "reasoning")  # ReVOS "overall" averages these two subsets


def _rle(counts: bytes, size: tuple[int, int]):
    return {"size": list(size), "counts": counts.decode("ascii")} if counts else None


def score_tasks(examples, pred_dir: Path, source: str):
    """`score.ExpressionTask`s from the records' ground truth (the union of the targets)."""
    from jax_refvos.eval import score

    tasks, kinds = [], {}
    for ex in examples:
        size = (ex.height, ex.width)
        for exp in ex.expressions:
            key = f"{ex.video_id}/{exp.exp_id}"
            tracks = [ex.tracks[k] for k in exp.targets]
            rles = tuple([_rle(c, size) for c in tr.rles] for tr in tracks)
            anno = tuple(int(tr.key) if tr.key.lstrip("-").isdigit() else -1 for tr in tracks)
            exp_dir = str(pred_dir / ex.video_id / exp.exp_id)
            tasks.append(
                score.ExpressionTask(key, ex.frame_names, size, anno, rles, exp_dir, source)
            )
            kinds[key] = exp.kind
    return tasks, kinds


def _score_all(tasks, num_workers: int):
    from jax_refvos import console
    from jax_refvos.eval import score

    bar = dict(total=len(tasks), desc="scoring", unit="expr", leave=False)
    if num_workers <= 1 or len(tasks) < 2:
        return list(console.progress(map(score.score_expression, tasks), **bar))
    ctx = multiprocessing.get_context("spawn")  # safe after JAX is imported
    workers = min(num_workers, len(tasks))
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=ctx) as pool:
        chunk = max(1, len(tasks) // (8 * workers))
        return list(
            console.progress(pool.map(score.score_expression, tasks, chunksize=chunk), **bar)
        )


def metrics(tasks, kinds: dict[str, str], dataset: str, num_workers: int, flags=None):
    """(`score.ScoreResult`, metrics.json dict); ReVOS: by kind and the overall of two kinds;
    with `flags` (`breakdown.expression_flags`), the occlusion / leave-and-return breakdown."""
    from jax_refvos.eval import score

    per = {key: (j, f) for key, j, f in _score_all(tasks, num_workers)}
    result = score.ScoreResult(
        j=100 * float(np.mean([v[0] for v in per.values()])),
        f=100 * float(np.mean([v[1] for v in per.values()])),
        num_expressions=len(per),
        per_expression={k: (100 * j, 100 * f) for k, (j, f) in per.items()},
    )
    out = result.to_json()
    if dataset == "revos":
        by_kind = {
            kind: breakdown.summary([v for k, v in per.items() if kinds[k] == kind])
            for kind in sorted(set(kinds.values()))
        }
        out["by_kind"] = by_kind
        parts = [by_kind[k] for k in KINDS_REPORTED if k in by_kind]
        if parts:
            j, f = (float(np.mean([p[m] for p in parts])) for m in ("J", "F"))
            out["overall"] = {"J": j, "F": f, "J&F": (j + f) / 2, "of": list(KINDS_REPORTED)}
    if flags is not None:
        out["breakdown"] = breakdown.breakdown(per, flags)
    return result, out


def write_submission(pred_dir: Path, path: Path, dataset: str) -> int:
    """Zips `pred_dir` in the server's layout; returns the number of PNGs."""
    prefix, count = ZIP_PREFIX.get(dataset, ""), 0
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:  # PNGs are already compressed
        for png in sorted(pred_dir.rglob("*.png")):
            z.write(png, prefix + png.relative_to(pred_dir).as_posix())
            count += 1
    return count
