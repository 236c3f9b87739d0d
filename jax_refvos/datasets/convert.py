"""Raw benchmark -> record shards: parallel, resumable, all-or-nothing per shard.

How a conversion runs (`convert_dataset`):

1. The reader lists the split's videos (sorted); they are split into `num_shards` contiguous runs.
   The plan (parameters + the videos of every shard) is stored in `<out_dir>/.convert/plan.json`.
2. Worker processes read and validate videos (`task.read()`: every JPEG decoded, every RLE
   checked) and serialise them; the parent writes them, in order, into the current shard's
   temporary file. A finished shard is renamed into place and its statistics are stored in
   `.convert/<shard>.json`. Output bytes depend only on the input and the shard count, not on
   the number of workers.
3. When every shard exists, `manifest.json` is written (last) and `.convert/` is removed.

Re-running the same command after an interruption skips the finished shards. A different plan
for the same `out_dir` is refused. Bad input stops the run with an `InputError` naming the file
and nothing of the unfinished shard left behind; with `skip_bad`, the offending video is left
out and listed in the manifest's `skipped`.
"""

import dataclasses
import hashlib
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from jax_refvos import console, fileio, parallel
from jax_refvos.datasets import records
from jax_refvos.datasets.example import SchemaError
from jax_refvos.errors import InputError

PLAN_DIR = ".convert"
_NAME_OK = re.compile(r"^[A-Za-z0-9_.-]+$")
VIDEOS_PER_SHARD = 64  # default shard size: a few hundred MB for MeViS-sized videos


@dataclasses.dataclass(frozen=True)
class _Result:
    video_id: str
    data: bytes | None
    expressions: int = 0
    frames: int = 0
    error: str | None = None


def _read_video(task: Any) -> _Result:
    """Worker: read + validate + serialise one video; bad input comes back as a message."""
    try:
        ex = task.read()
        ex.validate()
        return _Result(ex.video_id, ex.to_bytes(), len(ex.expressions), ex.num_frames)
    except (InputError, SchemaError) as e:
        return _Result(getattr(task, "video_id", "?"), None, error=str(e))


@dataclasses.dataclass(frozen=True)
class _BadTask:
    """Stands in for a task whose creation already failed (keeps the results in order)."""

    video_id: str
    error: str

    def read(self):
        raise InputError(self.error)


def _safe_task(reader: Any, video_id: str) -> Any:
    try:
        return reader.task(video_id)
    except InputError as e:
        return _BadTask(video_id, str(e))


def default_num_shards(num_videos: int) -> int:
    return max(1, -(-num_videos // VIDEOS_PER_SHARD))


def default_num_workers() -> int:
    return min(4, os.cpu_count() or 1)


def convert_dataset(
    dataset: str,
    root: str | os.PathLike,
    split: str,
    out_dir: str | os.PathLike,
    *,
    fmt: str = "arrayrecord",
    num_shards: int | None = None,
    num_workers: int | None = None,
    skip_bad: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Converts one split of a raw benchmark; returns the manifest (see `records`).

    If `out_dir` already holds a finished conversion with the same plan, returns its manifest
    with ``"up_to_date": True`` and writes nothing.
    """
    from jax_refvos.datasets.readers import make_reader

    if fmt not in records.FORMATS:
        raise InputError(f"--format must be one of {', '.join(records.FORMATS)}, got {fmt!r}")
    if not _NAME_OK.match(split):
        raise InputError(f"--split {split!r}: use letters, digits, '_', '-' or '.'")
    workers = default_num_workers() if num_workers is None else num_workers
    if workers < 0:
        raise InputError(f"--num_workers must be >= 0, got {workers}")
    reader = make_reader(dataset, root, split)
    reader.prepare()  # split-wide files: their errors are fatal even with --skip_bad
    video_ids = list(reader.video_ids())
    if not video_ids:
        raise InputError(f"{root}: split {split!r} of {dataset} has no videos")
    n = num_shards if num_shards else default_num_shards(len(video_ids))
    if n < 1:
        raise InputError(f"--num_shards must be positive, got {n}")
    n = min(n, len(video_ids))
    bounds = [len(video_ids) * i // n for i in range(n + 1)]
    names = [records.shard_name(dataset, split, i, n, fmt) for i in range(n)]
    plan = {
        "dataset": dataset,
        "split": split,
        "format": fmt,
        "num_shards": n,
        "shards": {names[i]: video_ids[bounds[i] : bounds[i + 1]] for i in range(n)},
    }
    plan["fingerprint"] = hashlib.sha256(repr(sorted(plan.items())).encode()).hexdigest()[:16]
    out = Path(out_dir)
    done = _existing_manifest(out, plan)
    if done is not None:
        return {**done, "up_to_date": True}
    _claim(out, plan)

    stats: dict[str, dict[str, Any]] = {}
    todo = []
    for name in names:
        sidecar = out / PLAN_DIR / f"{name}.json"
        if (out / name).is_file() and sidecar.is_file():
            stats[name] = fileio.load_json(sidecar)
        else:
            todo.append(name)
    total = sum(len(plan["shards"][name]) for name in todo)
    desc = f"refvos convert {dataset}/{split}"
    with (
        parallel.ordered_map(
            _read_video, workers=workers, preload=[__name__], in_process_below=1
        ) as run,
        console.progress(total=total, unit="video", desc=desc, enabled=progress) as bar,
    ):
        tasks = (_safe_task(reader, v) for name in todo for v in plan["shards"][name])
        results = run(tasks)
        for name in todo:
            stats[name] = _write_shard(
                out / name, fmt, plan["shards"][name], results, skip_bad, bar
            )
            fileio.atomic_write_json(out / PLAN_DIR / f"{name}.json", stats[name])

    shard_stats = [{k: v for k, v in stats[nm].items() if k != "skipped"} for nm in names]
    skipped = [s for nm in names for s in stats[nm]["skipped"]]
    if len(skipped) == len(video_ids):
        raise InputError(
            f"{root}: every video of {dataset}/{split} was bad (first: {skipped[0]['error']});"
            " nothing to convert"
        )
    source = {"root": str(Path(root).resolve()), "fingerprint": plan["fingerprint"]}
    manifest = records.make_manifest(
        fmt, dataset, split, shard_stats, skipped=skipped, source=source
    )
    fileio.atomic_write_json(out / records.MANIFEST_FILE, manifest)
    shutil.rmtree(out / PLAN_DIR, ignore_errors=True)
    return {**manifest, "up_to_date": False}


def _existing_manifest(out: Path, plan: dict[str, Any]) -> dict[str, Any] | None:
    path = out / records.MANIFEST_FILE
    if not path.exists():
        return None
    m = records.read_manifest(out)
    if m.get("source", {}).get("fingerprint") != plan["fingerprint"]:
        raise InputError(
            f"{out}: holds a different finished conversion ({m.get('dataset')}/{m.get('split')},"
            f" {m.get('format')}, {len(m['shards'])} shards); choose another --out_dir or remove it"
        )
    for s in m["shards"]:
        p = out / s["file"]
        if not p.is_file() or p.stat().st_size != s.get("bytes"):
            raise InputError(f"{p}: listed in {path} but missing or changed; remove {out}")
    return m


def _claim(out: Path, plan: dict[str, Any]) -> None:
    """Creates `out_dir` with the plan, or checks that a partial run there has the same plan."""
    plan_path = out / PLAN_DIR / "plan.json"
    if plan_path.is_file():
        old = fileio.load_json(plan_path)
        if not isinstance(old, dict) or old.get("fingerprint") != plan["fingerprint"]:
            raise InputError(
                f"{out}: holds an unfinished conversion with different parameters or inputs"
                f" ({plan_path}); re-run that command, or remove {out}"
            )
    elif out.exists() and any(out.iterdir()):
        raise InputError(f"{out}: exists and is not a record directory; choose another --out_dir")
    (out / PLAN_DIR).mkdir(parents=True, exist_ok=True)
    fileio.atomic_write_json(plan_path, plan)
    for stale in out.glob(".*.tmp-*"):  # temporary shards of a killed run
        stale.unlink(missing_ok=True)


def _write_shard(
    path: Path,
    fmt: str,
    video_ids: list[str],
    results: Iterator[_Result],
    skip_bad: bool,
    bar: Any,
) -> dict[str, Any]:
    skipped = []
    with records.ShardWriter(path, fmt) as w:
        for vid in video_ids:
            r = next(results)
            bar.update(1)
            if r.error is not None:
                if not skip_bad:
                    raise InputError(f"{r.error} (pass --skip_bad to leave such videos out)")
                skipped.append({"video_id": vid, "error": r.error})
                bar.write(f"skipping video {vid!r}: {r.error}")
                continue
            if r.video_id != vid:  # pragma: no cover - a reader bug, not bad input
                raise RuntimeError(f"reader returned video {r.video_id!r} for {vid!r}")
            w.write(r.data, expressions=r.expressions, frames=r.frames)
        return {**w.commit(), "skipped": skipped}
