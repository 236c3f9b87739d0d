"""refvos evaluate: VIRST on every expression of a converted split -> PNGs, J&F (or a submission).

  refvos evaluate --workdir W --split valid_u [--dataset_root data/synth]
      [--records data/records/synth_valid_u] [--max_videos N] [--seed 42] [--chunk_size 8]
      [--expr_batch 8] [--initial_seg_fusion] [--dynamic_anchors] [--overwrite]

--workdir is a VIRST weights dir written by `refvos import-weights --kind virst` (`load_eval_model`
is where training workdirs will plug in). --records is the split's `refvos convert` output; by
default `<parent of dataset_root>/records/<name of dataset_root>_<split>` (data/synth + valid_u ->
data/records/synth_valid_u, the quickstart's naming). Every video is run once for all its
expressions (`eval/virst_inference.py`: one vision pass, batched LLM, one propagation), frames
drawn with --seed as `refvos predict --seed` draws them (VIRST draws per expression, at random).

Written to W/eval/<split>/ (it appears complete or not at all):
  pred/<vid>/<exp_id>/<frame>.png   0/255 at the video's resolution, every frame (official layout)
  metrics.json   splits with ground truth (MeViS valid_u, synth, Ref-DAVIS17, ReVOS): J, F, J&F
                 in percent as `refvos score` (per expression: mean over all frames of the union
                 of its targets; split: mean over expressions), ground truth read from the
                 records; ReVOS adds "by_kind" (referring / reasoning / no_target) and
                 "overall" = the mean of the referring and reasoning means (VIRST eval_revos.py)
  submission.zip splits without ground truth (MeViS valid: <vid>/<exp_id>/<frame>.png at the
                 zip root; Ref-YouTube-VOS valid: Annotations/<vid>/<exp_id>/<frame>.png)
  eval.json      the settings and, per video, the sampled VLM / ST-Fusion frames and anchors
"""

import concurrent.futures
import multiprocessing
import os
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
from absl import flags

from jax_refvos.errors import InputError
from jax_refvos.main import cli

ZIP_PREFIX = {"refytvos": "Annotations/"}  # CodaLab layouts; MeViS: folders at the zip root
KINDS_REPORTED = ("referring", "reasoning")  # ReVOS "overall" averages these two subsets


def define_flags(fv: flags.FlagValues) -> None:
    flags.DEFINE_string("workdir", None, "VIRST weights dir (import-weights).", flag_values=fv)
    flags.DEFINE_string("split", None, "Split, e.g. valid_u, valid.", flag_values=fv)
    flags.DEFINE_string(
        "dataset_root", "data/synth", "Dataset root; names the default --records.", flag_values=fv
    )
    flags.DEFINE_string(
        "records", None, "The split's records (default: from --dataset_root).", flag_values=fv
    )
    flags.DEFINE_integer(
        "max_videos", None, "Only the first N videos (smoke tests).", lower_bound=1, flag_values=fv
    )
    flags.DEFINE_integer("seed", 42, "Seed of each video's frame draw.", flag_values=fv)
    flags.DEFINE_integer(
        "chunk_size", 8, "Frames per compiled propagation chunk.", lower_bound=1, flag_values=fv
    )
    flags.DEFINE_integer(
        "expr_batch", 8, "Expressions per LLM batch.", lower_bound=1, flag_values=fv
    )
    flags.DEFINE_boolean(
        "initial_seg_fusion", False, "Initial ST-Fusion (off in VIRST's eval).", flag_values=fv
    )
    flags.DEFINE_boolean(
        "dynamic_anchors", False, "The paper's dynamic anchor update.", flag_values=fv
    )
    flags.DEFINE_integer(
        "num_workers",
        None,
        "Scoring processes (default: all cores).",
        lower_bound=0,
        flag_values=fv,
    )
    flags.DEFINE_boolean("overwrite", False, "Replace an existing W/eval/<split>.", flag_values=fv)
    for name in ("workdir", "split"):
        flags.mark_flag_as_required(name, flag_values=fv)


# ----------------------------------------------------------------------------- model
def check_workdir(workdir: Path) -> Path | None:
    """`virst_workdir.check_workdir` (a weights dir or a training workdir)."""
    from jax_refvos.main import virst_workdir

    return virst_workdir.check_workdir(workdir)


def load_eval_model(
    workdir: str | Path, *, initial_seg_fusion: bool = False, dynamic_anchors: bool = False
):
    """(Virst, TextTokenizer) of a weights dir or training workdir (`virst_workdir.load_model`)."""
    from jax_refvos.main import virst_workdir

    return virst_workdir.load_model(
        Path(workdir), initial_seg_fusion=initial_seg_fusion, dynamic_anchors=dynamic_anchors
    )


# ----------------------------------------------------------------------------- scoring
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


def _summary(scores: list[tuple[float, float]]) -> dict:
    j = 100 * float(np.mean([s[0] for s in scores]))
    f = 100 * float(np.mean([s[1] for s in scores]))
    return {"J": j, "F": f, "J&F": (j + f) / 2, "num_expressions": len(scores)}


def metrics(tasks, kinds: dict[str, str], dataset: str, num_workers: int):
    """(`score.ScoreResult`, metrics.json dict); ReVOS: by kind and the overall of two kinds."""
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
            kind: _summary([v for k, v in per.items() if kinds[k] == kind])
            for kind in sorted(set(kinds.values()))
        }
        out["by_kind"] = by_kind
        parts = [by_kind[k] for k in KINDS_REPORTED if k in by_kind]
        if parts:
            j, f = (float(np.mean([p[m] for p in parts])) for m in ("J", "F"))
            out["overall"] = {"J": j, "F": f, "J&F": (j + f) / 2, "of": list(KINDS_REPORTED)}
    return result, out


def write_submission(pred_dir: Path, path: Path, dataset: str) -> int:
    """Zips `pred_dir` in the server's layout; returns the number of PNGs."""
    prefix, count = ZIP_PREFIX.get(dataset, ""), 0
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:  # PNGs are already compressed
        for png in sorted(pred_dir.rglob("*.png")):
            z.write(png, prefix + png.relative_to(pred_dir).as_posix())
            count += 1
    return count


# ----------------------------------------------------------------------------- command
def default_records(dataset_root: str, split: str) -> Path:
    root = Path(dataset_root)
    return root.parent / "records" / f"{root.name}_{split}"


def body(fv: flags.FlagValues) -> None:
    from jax_refvos import console, fileio
    from jax_refvos.datasets import records
    from jax_refvos.eval import masks_io, score, virst_inference

    # Cheap checks first (nothing is written before they pass), then the model.
    workdir = Path(fv.workdir)
    if not workdir.is_dir():
        raise InputError(f"{workdir}: --workdir does not exist")
    check_workdir(workdir)
    rec_dir = Path(fv.records) if fv.records else default_records(fv.dataset_root, fv.split)
    manifest = records.read_manifest(rec_dir)
    dataset = manifest.get("dataset", "?")
    out_dir = workdir / "eval" / fv.split
    if out_dir.exists() and not fv.overwrite:
        raise InputError(f"{out_dir}: already exists (pass --overwrite to replace it)")
    start = time.perf_counter()
    model, tok = load_eval_model(
        workdir, initial_seg_fusion=fv.initial_seg_fusion, dynamic_anchors=fv.dynamic_anchors
    )
    total = manifest["counts"]["videos"]
    if fv.max_videos:
        total = min(total, fv.max_videos)

    def videos():
        for i, ex in enumerate(records.open_records(rec_dir)):
            if i == total:
                return
            yield ex

    plans, has_gt, n_exp = {}, True, 0
    with fileio.atomic_directory(out_dir, overwrite=fv.overwrite) as tmp:
        pred = tmp / "pred"
        bar = console.progress(total=total, desc=f"evaluate {fv.split}", unit="video")
        with bar:
            for ex in videos():
                has_gt &= ex.has_masks
                exps = ex.expressions
                if not exps:  # nothing to predict (the scorer has nothing to score either)
                    bar.update(1)
                    continue
                ids = [virst_inference.expression_ids(tok, x.text) for x in exps]
                plan, chunks = virst_inference.infer_video(
                    model,
                    ex,
                    ids,
                    seed=fv.seed,
                    chunk_size=fv.chunk_size,
                    expr_batch=fv.expr_batch,
                )
                folders = [pred / ex.video_id / x.exp_id for x in exps]
                for folder in folders:
                    folder.mkdir(parents=True)
                for index, logits in chunks:  # logits [n, e, H, W]
                    for i, per_exp in zip(index, logits, strict=True):
                        name = f"{ex.frame_names[i]}.png"
                        for folder, lg in zip(folders, per_exp, strict=True):
                            (folder / name).write_bytes(masks_io.encode_mask_png(lg > 0))
                plans[ex.video_id] = {
                    "vlm_frames": plan.vlm_frames.tolist(),
                    "sam_frames": plan.sam_frames.tolist(),
                    "anchors": plan.anchors.tolist(),
                }
                n_exp += len(exps)
                bar.update(1)
        if not plans:
            raise InputError(f"{rec_dir}: no videos")
        summary = f"{n_exp} expressions of {len(plans)} videos"
        if has_gt:
            tasks, kinds = score_tasks(videos(), pred, str(rec_dir))
            workers = (os.cpu_count() or 1) if fv.num_workers is None else fv.num_workers
            result, out = metrics(tasks, kinds, dataset, workers)
            fileio.atomic_write_json(tmp / "metrics.json", out)
            table = score.format_table(result, f"{dataset} {fv.split}: {summary}, {out_dir}")
        else:
            count = write_submission(pred, tmp / "submission.zip", dataset)
            table = f"{dataset} {fv.split}: {summary}; no ground truth: {count} PNGs zipped"
        settings = {
            k: fv[k].value
            for k in (
                "split",
                "seed",
                "chunk_size",
                "expr_batch",
                "initial_seg_fusion",
                "dynamic_anchors",
            )
        }
        # What the model ran with: a training workdir keeps the setting it was trained with.
        settings["initial_seg_fusion"] = bool(model.cfg.initial_seg_fusion)
        settings.update(dataset=dataset, records=str(rec_dir), workdir=str(workdir))
        fileio.atomic_write_json(tmp / "eval.json", {**settings, "videos": plans})
    print(table)
    if not has_gt:
        print(f"submission: {out_dir / 'submission.zip'}")
    print(f"evaluated in {time.perf_counter() - start:.1f} s -> {out_dir}", file=sys.stderr)


def main(argv=None) -> int:
    return cli.run_command("evaluate", __doc__, define_flags, body, argv)


if __name__ == "__main__":
    sys.exit(main())
