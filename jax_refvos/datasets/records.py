"""Record shards of `VideoExample`s: file naming, shard writers, `manifest.json`, readers.

A converted dataset is a directory::

    <out_dir>/<dataset>-<split>-00000-of-00004.array_record   (or .tfrecord)
    ...
    <out_dir>/manifest.json     written last, only when every shard is complete

Both formats hold the same payload per record (a serialised `tf.train.Example`, see
`example.py`). ArrayRecord is the training format (random access: global shuffle, exact resume);
TFRecord is for interop with TensorFlow-era corpora and is read sequentially.

Manifest keys: ``schema_version, format, dataset, split, counts {videos, expressions, frames},
shards [{file, videos, expressions, frames, bytes, sha256}], skipped [{video_id, error}], source,
created_by``.
"""

import contextlib
import hashlib
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from jax_refvos import fileio
from jax_refvos.datasets import tfrecord
from jax_refvos.datasets.example import SCHEMA_VERSION, SchemaError, VideoExample
from jax_refvos.errors import InputError

MANIFEST_FILE = "manifest.json"
FORMATS = {"arrayrecord": "array_record", "tfrecord": "tfrecord"}  # format -> file extension
# One record per chunk keeps random access cheap; video records are large (their JPEG frames),
# and JPEG does not compress, so compression would only cost CPU.
ARRAY_RECORD_WRITER_OPTIONS = "group_size:1,uncompressed"
_READ_CHUNK = 16


def shard_name(dataset: str, split: str, index: int, count: int, fmt: str) -> str:
    return f"{dataset}-{split}-{index:05d}-of-{count:05d}.{FORMATS[fmt]}"


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


class ShardWriter:
    """Writes one shard to a temporary name; `commit()` renames it into place and returns stats.

    Used as a context manager: leaving the block without `commit()` removes the temporary file.
    """

    def __init__(self, path: str | os.PathLike, fmt: str):
        if fmt not in FORMATS:
            raise InputError(f"unknown record format {fmt!r} (choose from {', '.join(FORMATS)})")
        self.path = Path(path)
        self.fmt = fmt
        self.tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        self.stats = {"videos": 0, "expressions": 0, "frames": 0}
        self._writer: Any = None

    def __enter__(self) -> "ShardWriter":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.fmt == "arrayrecord":
            from array_record.python.array_record_module import ArrayRecordWriter

            self._writer = ArrayRecordWriter(str(self.tmp), ARRAY_RECORD_WRITER_OPTIONS)
        else:
            self._writer = tfrecord.TFRecordWriter(self.tmp)
        return self

    def write(self, data: bytes, *, expressions: int, frames: int) -> None:
        self._writer.write(data)
        self.stats["videos"] += 1
        self.stats["expressions"] += expressions
        self.stats["frames"] += frames

    def write_example(self, ex: VideoExample) -> None:
        self.write(ex.to_bytes(), expressions=len(ex.expressions), frames=ex.num_frames)

    def _close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def commit(self) -> dict[str, Any]:
        """Closes, syncs and renames the shard; returns ``{file, videos, ..., bytes, sha256}``."""
        self._close()
        with open(self.tmp, "rb") as f:
            os.fsync(f.fileno())
        fileio.set_default_permissions(self.tmp)
        stats = {
            "file": self.path.name,
            **self.stats,
            "bytes": self.tmp.stat().st_size,
            "sha256": file_sha256(self.tmp),
        }
        os.replace(self.tmp, self.path)
        return stats

    def __exit__(self, *exc) -> None:
        self._close()
        with contextlib.suppress(FileNotFoundError):
            self.tmp.unlink()


def write_records(
    examples: Iterable[VideoExample],
    out_dir: str | os.PathLike,
    *,
    format: str = "arrayrecord",  # noqa: A002 (the CLI flag's name)
    num_shards: int = 1,
    dataset: str = "custom",
    split: str = "train",
) -> dict[str, Any]:
    """Writes examples round-robin into `num_shards` shards plus the manifest (in memory order).

    The simple writer for tests, small corpora and programmatic use; `refvos convert` adds
    parallel reading, resume and error handling on top of the same shard/manifest format.
    """
    examples = list(examples)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    groups = [examples[i::num_shards] for i in range(num_shards)]
    shards = []
    for i, group in enumerate(groups):
        path = out / shard_name(dataset, split, i, num_shards, format)
        with ShardWriter(path, format) as w:
            for ex in group:
                w.write_example(ex)
            shards.append(w.commit())
    manifest = make_manifest(format, dataset, split, shards)
    fileio.atomic_write_json(out / MANIFEST_FILE, manifest)
    return manifest


def make_manifest(
    fmt: str,
    dataset: str,
    split: str,
    shards: list[dict[str, Any]],
    *,
    skipped: list[dict[str, str]] | None = None,
    source: dict[str, Any] | None = None,
) -> dict[str, Any]:
    from jax_refvos import __version__

    counts = {k: sum(s[k] for s in shards) for k in ("videos", "expressions", "frames")}
    return {
        "schema_version": SCHEMA_VERSION,
        "format": fmt,
        "dataset": dataset,
        "split": split,
        "counts": counts,
        "shards": shards,
        "skipped": skipped or [],
        "source": source or {},
        "created_by": f"jax_refvos {__version__}",
    }


def read_manifest(out_dir: str | os.PathLike) -> dict[str, Any]:
    """Loads and checks `<out_dir>/manifest.json` (InputError if missing or malformed)."""
    path = Path(out_dir) / MANIFEST_FILE
    if not path.is_file():
        hint = (
            " (an unfinished conversion? re-run refvos convert)" if Path(out_dir).is_dir() else ""
        )
        raise InputError(f"{path}: no manifest; not a converted record directory{hint}")
    m = fileio.load_json(path)
    if not isinstance(m, dict) or not isinstance(m.get("shards"), list):
        raise InputError(f"{path}: expected an object with a 'shards' list")
    if m.get("schema_version") != SCHEMA_VERSION:
        raise InputError(
            f"{path}: records have schema version {m.get('schema_version')!r}; this version of"
            f" jax_refvos reads version {SCHEMA_VERSION} (re-run refvos convert)"
        )
    if m.get("format") not in FORMATS:
        raise InputError(f"{path}: unknown format {m.get('format')!r}")
    for s in m["shards"]:
        if not isinstance(s, dict) or not isinstance(s.get("file"), str):
            raise InputError(f"{path}: every shard entry needs a 'file'")
    return m


def shard_paths(out_dir: str | os.PathLike) -> list[Path]:
    """The shard files of a converted directory, in manifest order (each must exist)."""
    m = read_manifest(out_dir)
    paths = [Path(out_dir) / s["file"] for s in m["shards"]]
    for p in paths:
        if not p.is_file():
            raise InputError(f"{p}: shard listed in {MANIFEST_FILE} is missing")
    return paths


def verify_records(out_dir: str | os.PathLike) -> dict[str, Any]:
    """Checks every shard's size and SHA-256 against the manifest; returns the manifest."""
    m = read_manifest(out_dir)
    for s, p in zip(m["shards"], shard_paths(out_dir), strict=True):
        if p.stat().st_size != s.get("bytes") or file_sha256(p) != s.get("sha256"):
            raise InputError(f"{p}: contents differ from {MANIFEST_FILE} (corrupt or replaced)")
    return m


def array_record_source(out_dir: str | os.PathLike):
    """A Grain random-access source over an ArrayRecord directory; items are serialised bytes."""
    import grain

    m = read_manifest(out_dir)
    if m["format"] != "arrayrecord":
        raise InputError(
            f"{Path(out_dir) / MANIFEST_FILE}: records are {m['format']}, which has no random"
            " access; read them with the sequential TFRecord pipeline or convert with"
            " --format arrayrecord"
        )
    return grain.sources.ArrayRecordDataSource([str(p) for p in shard_paths(out_dir)])


def iter_shard(path: str | os.PathLike, fmt: str) -> Iterator[bytes]:
    """The serialised records of one shard, in file order."""
    if fmt == "tfrecord":
        try:
            yield from tfrecord.read_records(path)
        except tfrecord.TFRecordError as e:
            raise InputError(str(e)) from None
        return
    from array_record.python.array_record_module import ArrayRecordReader

    reader = ArrayRecordReader(str(path))
    try:
        n = reader.num_records()
        for start in range(0, n, _READ_CHUNK):
            yield from reader.read(list(range(start, min(n, start + _READ_CHUNK))))
    finally:
        reader.close()


def open_records(out_dir: str | os.PathLike) -> Iterator[VideoExample]:
    """Yields every `VideoExample` of a converted directory (either format), in shard order."""
    m = read_manifest(out_dir)
    for path in shard_paths(out_dir):
        for i, data in enumerate(iter_shard(path, m["format"])):
            try:
                yield VideoExample.from_bytes(data)
            except SchemaError as e:
                raise InputError(f"{path}: record {i}: {e}") from None
