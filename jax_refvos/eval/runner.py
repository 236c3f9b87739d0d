"""The evaluator of every method: a weights dir or training workdir + a converted split ->
`<workdir>/eval/<split>/` with PNGs in the official layout and metrics (or a submission zip).

This module imports no method: the workdir's recorded method (`methods.registry.open_workdir`)
loads it as a `Predictor`, which runs each record video once for all its expressions
(`Predictor.infer_video`). Written to `<workdir>/eval/<split>/` (complete or not at all):

    pred/<vid>/<exp_id>/<frame>.png   0/255 at the video's resolution, every frame
    metrics.json     splits with ground truth: J, F, J&F in percent as `refvos score`
                     (`records_scoring.py`; ReVOS adds by_kind and overall)
    submission.zip   splits without ground truth, in the evaluation server's layout
    eval.json        the settings (the command's and the model's) and, per video, what the
                     method sampled (VIRST: VLM / ST-Fusion frames and anchors)
"""

import dataclasses
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jax_refvos import console, fileio
from jax_refvos.datasets import records
from jax_refvos.errors import InputError
from jax_refvos.eval import breakdown, masks_io, records_scoring, score
from jax_refvos.methods import registry
from jax_refvos.methods.base import resolve_options


@dataclasses.dataclass(frozen=True, kw_only=True)
class EvalSettings:
    """What `refvos evaluate` asks for (method options apart)."""

    split: str
    records: Path
    seed: int = 42
    chunk_size: int = 8
    max_videos: int | None = None
    num_workers: int | None = None  # scoring processes (None: all cores)
    overwrite: bool = False


def default_records(dataset_root: str | Path, split: str) -> Path:
    """`<parent of dataset_root>/records/<name of dataset_root>_<split>` (the quickstart's
    naming: data/synth + valid_u -> data/records/synth_valid_u)."""
    root = Path(dataset_root)
    return root.parent / "records" / f"{root.name}_{split}"


def evaluate(workdir: str | Path, s: EvalSettings, options: Mapping[str, Any]) -> str:
    """Runs the evaluation (see the module docstring); returns the printable summary.

    `options` are method options given by the user (`Method.load_options`: the rest keep their
    defaults); cheap checks (workdir, options, records, output) come first, so nothing is written
    when one fails (InputError naming the problem).
    """
    workdir = Path(workdir)
    method, kind = registry.open_workdir(workdir)
    options = resolve_options(method, options, "refvos evaluate")
    manifest = records.read_manifest(s.records)
    dataset = manifest.get("dataset", "?")
    out_dir = workdir / "eval" / s.split
    if out_dir.exists() and not s.overwrite:
        raise InputError(f"{out_dir}: already exists (pass --overwrite to replace it)")
    start = time.perf_counter()
    predictor = method.load(workdir, kind, options)
    total = manifest["counts"]["videos"]
    if s.max_videos:
        total = min(total, s.max_videos)

    def videos():
        for i, ex in enumerate(records.open_records(s.records)):
            if i == total:
                return
            yield ex

    plans, has_gt, n_exp = {}, True, 0
    with fileio.atomic_directory(out_dir, overwrite=s.overwrite) as tmp:
        pred = tmp / "pred"
        with console.progress(total=total, desc=f"evaluate {s.split}", unit="video") as bar:
            for ex in videos():
                has_gt &= ex.has_masks
                if ex.expressions:  # else nothing to predict (nor to score)
                    plans[ex.video_id] = _write_video(predictor, ex, pred, s)
                    n_exp += len(ex.expressions)
                bar.update(1)
        if not plans:
            raise InputError(f"{s.records}: no videos")
        summary = f"{n_exp} expressions of {len(plans)} videos"
        if has_gt:
            tasks, kinds = records_scoring.score_tasks(videos(), pred, str(s.records))
            workers = (os.cpu_count() or 1) if s.num_workers is None else s.num_workers
            flags = breakdown.expression_flags(videos())
            result, out = records_scoring.metrics(tasks, kinds, dataset, workers, flags)
            fileio.atomic_write_json(tmp / "metrics.json", out)
            table = score.format_table(result, f"{dataset} {s.split}: {summary}, {out_dir}")
            table += "\n" + breakdown.format_lines(out["breakdown"])
        else:
            count = records_scoring.write_submission(pred, tmp / "submission.zip", dataset)
            table = f"{dataset} {s.split}: {summary}; no ground truth: {count} PNGs zipped"
            table += f"\nsubmission: {out_dir / 'submission.zip'}"
        settings = {
            "method": method.name,
            "split": s.split,
            "seed": s.seed,
            "chunk_size": s.chunk_size,
            **predictor.settings(),
            "dataset": dataset,
            "records": str(s.records),
            "workdir": str(workdir),
        }
        fileio.atomic_write_json(tmp / "eval.json", {**settings, "videos": plans})
    print(f"evaluated in {time.perf_counter() - start:.1f} s -> {out_dir}", file=sys.stderr)
    return table


def _write_video(predictor, ex, pred: Path, s: EvalSettings) -> dict:
    """Every expression of one record video -> its PNG folders; the method's plan."""
    plan, chunks = predictor.infer_video(ex, seed=s.seed, chunk_size=s.chunk_size)
    folders = [pred / ex.video_id / x.exp_id for x in ex.expressions]
    for folder in folders:
        folder.mkdir(parents=True)
    for index, logits in chunks:  # logits [n, e, H, W]
        for i, per_exp in zip(index, logits, strict=True):
            name = f"{ex.frame_names[i]}.png"
            for folder, lg in zip(folders, per_exp, strict=True):
                (folder / name).write_bytes(masks_io.encode_mask_png(lg > 0))
    return plan
