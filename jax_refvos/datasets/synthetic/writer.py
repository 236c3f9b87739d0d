"""Writing the benchmark to disk in the MeViS layout, in parallel, deterministically, atomically.

Layout (``<out>`` = the dataset root)::

    <out>/README.md                       what the generator is, parameters, statistics
    <out>/synth_config.json               stamp: generator version + parameters + summary
    <out>/<split>/JPEGImages/<vid>/<frame>.jpg
    <out>/<split>/meta_expressions.json   {"videos": {vid: {"vid_id", "frames", "expressions"}}}
    <out>/<split>/mask_dict.json          {"<anno_id>": [RLE or null per frame]}
    <out>/<split>/synth_info.json         side file: objects and expression families (not MeViS)

Splits are `train`, `valid_u`, `valid`. anno_ids are split-global, one per (video, object), in video
then obj_id order. Everything is generated into a temporary sibling directory that replaces `<out>`
only when complete, so an error or Ctrl-C leaves nothing partial behind. Output bytes depend only on
the `SynthConfig`, not on the number of worker processes.
"""

import os
from pathlib import Path
from typing import Any

from jax_refvos import console, fileio, parallel
from jax_refvos.datasets.synthetic import readme, video
from jax_refvos.datasets.synthetic.config import GENERATOR_VERSION, SPLITS, SynthConfig
from jax_refvos.datasets.synthetic.video import VideoRecord, VideoTask
from jax_refvos.errors import InputError

STAMP_FILE = "synth_config.json"
INFO_FILE = "synth_info.json"
_SPLIT_FILES = ("meta_expressions.json", "mask_dict.json", INFO_FILE)
_CHUNKSIZE = 4


def default_num_workers() -> int:
    return min(4, os.cpu_count() or 1)


def generate_benchmark(
    out_dir: str | os.PathLike,
    cfg: SynthConfig,
    *,
    num_workers: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Writes the synthetic benchmark described by `cfg` to `out_dir`.

    If `out_dir` already holds a complete benchmark generated with the same parameters (and
    generator version), nothing is written. Any other existing `out_dir` is an `InputError` unless
    `overwrite` is set.

    Args:
        out_dir: the dataset root.
        cfg: what to generate; validated here.
        num_workers: worker processes (None: min(4, CPU count)); does not change the output.
        overwrite: replace an existing `out_dir`.
        progress: show a progress bar on stderr.

    Returns:
        ``{"out_dir", "up_to_date", "parameters", "splits": {split: statistics}}`` with the
        statistics of `readme.split_statistics`.
    """
    cfg.validate()
    workers = default_num_workers() if num_workers is None else num_workers
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise InputError(f"--num_workers must be a positive integer, got {workers!r}")
    out = Path(out_dir)
    if (out.exists() or out.is_symlink()) and not overwrite:
        return {"out_dir": str(out), "up_to_date": True, **_up_to_date_summary(out, cfg)}

    try:
        summary = _generate(out, cfg, workers, progress)
    except OSError as e:  # disk full, permissions: a problem with the destination, not a bug
        where = e.filename or out
        raise InputError(f"{where}: cannot write the benchmark: {e.strerror or e}") from None
    return {"out_dir": str(out), "up_to_date": False, **summary}


def _generate(out: Path, cfg: SynthConfig, workers: int, progress: bool) -> dict[str, Any]:
    summary: dict[str, Any] = {"parameters": cfg.parameters(), "splits": {}}
    total = sum(cfg.split_sizes().values())
    with (
        fileio.atomic_directory(out, overwrite=True) as tmp,
        parallel.ordered_map(
            video.make_video, workers=workers, preload=[video.__name__], chunksize=_CHUNKSIZE
        ) as run,
        console.progress(total=total, unit="video", desc="refvos synth", enabled=progress) as bar,
    ):
        for split_index, (split, prefix) in enumerate(SPLITS):
            records = []
            for record in run(_tasks(cfg, tmp / split, split_index, prefix)):
                records.append(record)
                bar.update(1)
            summary["splits"][split] = _write_split(tmp / split, cfg, records)
        fileio.atomic_write_text(tmp / "README.md", readme.render(summary))
        stamp = {"generator": "refvos synth", "generator_version": GENERATOR_VERSION, **summary}
        fileio.atomic_write_json(tmp / STAMP_FILE, stamp)
    return summary


def _up_to_date_summary(out: Path, cfg: SynthConfig) -> dict[str, Any]:
    """The stored summary of a complete benchmark in `out` made with `cfg`, else `InputError`."""
    hint = "pass --overwrite to replace it"
    stamp_path = out / STAMP_FILE
    try:
        stamp = fileio.load_json(stamp_path) if stamp_path.is_file() else None
    except InputError:
        stamp = None
    if not isinstance(stamp, dict) or not isinstance(stamp.get("parameters"), dict):
        raise InputError(
            f"{out}: already exists and is not a benchmark written by refvos synth ({hint})"
        )
    if stamp.get("generator_version") != GENERATOR_VERSION:
        raise InputError(
            f"{out}: was written by generator version {stamp.get('generator_version')!r}, this is"
            f" version {GENERATOR_VERSION!r} ({hint})"
        )
    old, new = stamp["parameters"], cfg.parameters()
    diff = [f"{k}={old.get(k)!r} (now {v!r})" for k, v in new.items() if old.get(k) != v]
    if diff:
        raise InputError(
            f"{out}: was generated with different parameters: {', '.join(diff)} ({hint})"
        )
    for split, _ in SPLITS:
        for name in (*_SPLIT_FILES, "JPEGImages"):
            if not (out / split / name).exists():
                raise InputError(f"{out}: incomplete, {split}/{name} is missing ({hint})")
    if not isinstance(stamp.get("splits"), dict):
        raise InputError(f"{out}: {STAMP_FILE} has no statistics ({hint})")
    return {"parameters": old, "splits": stamp["splits"]}


def _tasks(cfg: SynthConfig, split_dir: Path, split_index: int, prefix: str) -> list[VideoTask]:
    n = cfg.split_sizes()[SPLITS[split_index][0]]
    tasks = []
    for i in range(n):
        vid = f"{prefix}{i:05d}"
        tasks.append(
            VideoTask(
                seed=cfg.seed,
                split_index=split_index,
                video_index=i,
                vid=vid,
                height=cfg.height,
                width=cfg.width,
                min_frames=cfg.resolved_min_frames,
                max_frames=cfg.num_frames,
                # Every other video must carry a plural expression: this guarantees the
                # multi-target share of every split, however small.
                require_multi=i % 2 == 0,
                jpeg_dir=str(split_dir / "JPEGImages" / vid),
            )
        )
    return tasks


def _write_split(split_dir: Path, cfg: SynthConfig, records: list[VideoRecord]) -> dict[str, Any]:
    """Writes one split's JSON files; returns its statistics."""
    meta: dict[str, Any] = {}
    masks: dict[str, Any] = {}
    info: dict[str, Any] = {}
    next_anno = 0
    for vid_id, rec in enumerate(records):
        anno_ids = list(range(next_anno, next_anno + len(rec.objects)))
        next_anno += len(rec.objects)
        meta[rec.vid] = {
            "vid_id": vid_id,
            "frames": rec.frames,
            "expressions": {
                str(k): {
                    "exp": e.text,
                    "obj_id": list(e.obj_ids),
                    "anno_id": [anno_ids[o] for o in e.obj_ids],
                }
                for k, e in enumerate(rec.expressions)
            },
        }
        for obj, anno_id in zip(rec.objects, anno_ids, strict=True):
            masks[str(anno_id)] = rec.masks[obj["obj_id"]]
        info[rec.vid] = {
            "objects": [
                {
                    "obj_id": o["obj_id"],
                    "anno_id": a,
                    **{k: v for k, v in o.items() if k != "obj_id"},
                }
                for o, a in zip(rec.objects, anno_ids, strict=True)
            ],
            "expressions": {
                str(k): {
                    "family": e.family,
                    "multi_target": e.multi_target,
                    "predicate": e.predicate,
                }
                for k, e in enumerate(rec.expressions)
            },
        }
    fileio.atomic_write_json(split_dir / "meta_expressions.json", {"videos": meta}, indent=None)
    fileio.atomic_write_json(split_dir / "mask_dict.json", masks, indent=None)
    fileio.atomic_write_json(
        split_dir / INFO_FILE,
        {"generator_version": GENERATOR_VERSION, "seed": cfg.seed, "videos": info},
        indent=None,
    )
    return readme.split_statistics(records)


def summary_lines(summary: dict[str, Any]) -> list[str]:
    """A short per-split table of a summary, for the command line."""
    lines = [f"{'split':<8} {'videos':>6} {'frames':>7} {'exprs':>6} {'motion':>7} {'multi':>6}"]
    for split, s in summary["splits"].items():
        lines.append(
            f"{split:<8} {s['videos']:>6} {s['frames']:>7} {s['expressions']:>6}"
            f" {s['motion_share']:>7.1%} {s['multi_target_share']:>6.1%}"
        )
    return lines
