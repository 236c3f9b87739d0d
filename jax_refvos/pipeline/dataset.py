"""Grain assembly: record directories -> a checkpointable iterator of static-shape batches.

Training, ArrayRecord (random access): per dataset `source -> shuffle(seed + i) -> repeat`,
weighted `MapDataset.mix`, filter, `random_map(sample)`, the process's block of each global batch
(`_ProcessBlocks`), `batch(drop_remainder=True)`, optional `mp_prefetch`. Global shuffle, exact
resume by index, and the same global batches for any number of processes.

Training, TFRecord (sequential): a process reads shards `[process_index::process_count]`; per
dataset the shard list is shuffled per epoch and repeated, `cycle_length` shards are interleaved,
a window shuffle of `shuffle_buffer` elements follows; datasets are mixed with `IterDataset.mix`.
The iterator state holds every open shard's byte offset, so resume is exact too. A mixture with
any TFRecord member uses this path for all members (ArrayRecord ones stay globally shuffled).

Eval: one dataset, read in order, every (video, expression) once (`exp_index` set), the final
batch padded with `example_valid = False`.

Determinism: the batches are a function of (config, process index/count, worker count); with
ArrayRecord in process, the global batches (all processes' batches concatenated) are a function
of the config and the global batch size alone. With
`num_workers > 0` Grain gives worker w the elements w, w + n, ... and round-robins their batches,
so the order differs from the in-process order but is fixed for a given worker count.
"""

import dataclasses
import sys

import grain
import numpy as np

from jax_refvos.datasets import records
from jax_refvos.datasets.example import VideoExample
from jax_refvos.errors import InputError
from jax_refvos.pipeline import element
from jax_refvos.pipeline.config import PipelineConfig
from jax_refvos.pipeline.glus_sample import glus_sample
from jax_refvos.pipeline.sam2_sample import sam2_sample
from jax_refvos.pipeline.virst_sample import virst_sample

SAMPLERS = {"virst": virst_sample, "glus": glus_sample, "sam2": sam2_sample}
META_KEYS = ("meta_video_id", "meta_exp_id")  # host-only strings in eval batches


@dataclasses.dataclass(frozen=True)
class _Tag(grain.transforms.Map):
    """bytes -> (dataset_index, bytes, TRAIN)."""

    index: int

    def map(self, data: bytes) -> element.Element:
        return (self.index, data, element.TRAIN)


@dataclasses.dataclass(frozen=True)
class _Trainable(grain.transforms.Filter):
    min_frames: int

    def filter(self, elem: element.Element) -> bool:
        return element.trainable(elem[1], self.min_frames)


@dataclasses.dataclass(frozen=True)
class _OpenTFRecord(grain.transforms.Map):
    def map(self, path: str) -> grain.IterDataset:
        return grain.experimental.TFRecordIterDataset(path)


class _Expand(grain.experimental.FlatMapTransform):
    """(i, bytes, TRAIN) -> one element per expression: (i, bytes, e)."""

    def __init__(self, max_fan_out: int):
        self.max_fan_out = max_fan_out

    def flat_map(self, elem: element.Element):
        i, data, _ = elem
        n = len(VideoExample.from_bytes(data).expressions)
        if n > self.max_fan_out:
            raise InputError(f"a video has {n} expressions > eval_max_expressions_per_video")
        return [(i, data, e) for e in range(n)]


@dataclasses.dataclass(frozen=True)
class _PadBatch(grain.transforms.Map):
    """Pads a short final eval batch to `batch_size`; padded rows have example_valid False."""

    batch_size: int

    def map(self, batch: dict) -> dict:
        n = len(batch["example_valid"])
        if n == self.batch_size:
            return batch
        out = {}
        for k, v in batch.items():
            pad = np.zeros((self.batch_size - n, *v.shape[1:]), v.dtype)
            out[k] = np.concatenate([v, pad])
        return out


@dataclasses.dataclass(frozen=True, kw_only=True)
class _EvalSample(grain.transforms.RandomMap):
    """The method's sample plus the string ids of the (video, expression)."""

    inner: grain.transforms.RandomMap

    def random_map(self, elem: element.Element, rng: np.random.Generator) -> dict:
        out = self.inner.random_map(elem, rng)
        ex = VideoExample.from_bytes(elem[1])
        out["meta_video_id"] = np.bytes_(ex.video_id.encode())
        out["meta_exp_id"] = np.bytes_(ex.expressions[elem[2]].exp_id.encode())
        return out


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Sample(grain.transforms.RandomMap):
    """(dataset_index, record bytes, exp_index) -> the method's fixed-shape sample dict."""

    cfg: PipelineConfig

    def random_map(self, elem: element.Element, rng: np.random.Generator) -> dict:
        ds_index, data, exp_index = elem
        fn = SAMPLERS[self.cfg.method]
        return fn(VideoExample.from_bytes(data), ds_index, exp_index, rng, self.cfg)


def sample_transform(cfg: PipelineConfig) -> grain.transforms.RandomMap:
    return _Sample(cfg=cfg)


def min_frames(cfg: PipelineConfig) -> int:
    """GLUS drops videos shorter than its 4-frame windows; VIRST pads short videos."""
    return max(cfg.context_frames, cfg.query_frames) if cfg.method == "glus" else 1


def _formats(cfg: PipelineConfig) -> dict[str, str]:
    return {name: records.read_manifest(path)["format"] for name, (path, _) in cfg.mixture.items()}


def _process_shards(path: str, process_index: int, process_count: int) -> list[str]:
    paths = [str(p) for p in records.shard_paths(path)]
    mine = paths[process_index::process_count]
    if not mine:
        raise InputError(
            f"{path}: {len(paths)} TFRecord shard(s) cannot feed {process_count} processes; "
            "convert with --num_shards >= the process count (or use ArrayRecord)"
        )
    return mine


def _tfrecord_stream(paths: list[str], cfg: PipelineConfig, seed: int) -> grain.IterDataset:
    files = grain.MapDataset.source(paths)
    if cfg.train:
        files = files.shuffle(seed=seed).repeat(None)
        cycle = min(cfg.tfrecord_cycle_length, len(paths))
    else:
        cycle = 1  # eval reads the shards in order
    ds = grain.experimental.InterleaveIterDataset(files.map(_OpenTFRecord()), cycle_length=cycle)
    if cfg.train and cfg.shuffle_buffer > 1:
        ds = grain.experimental.WindowShuffleIterDataset(
            ds, window_size=cfg.shuffle_buffer, seed=seed
        )
    return ds


def _read_options(cfg: PipelineConfig) -> grain.ReadOptions:
    return grain.ReadOptions(num_threads=cfg.read_threads, prefetch_buffer_size=cfg.read_buffer)


class _ProcessBlocks(grain.MapDataset):
    """Process `index` of `count`: its `block`-sized part of each global batch.

    Global batch k is elements [k * G, (k + 1) * G) of the parent, G = block * count; process p
    holds [k * G + p * block, k * G + (p + 1) * block). Concatenated over processes (what
    `jax.make_array_from_process_local_data` does), the global batch is the one a single process
    with batch G reads, in the same order. (Filtered-out elements are skipped per process, so
    this holds exactly when no element is filtered, as on the synthetic benchmark.)
    """

    def __init__(self, parent: grain.MapDataset, *, block: int, index: int, count: int):
        super().__init__(parent)
        self._block, self._index, self._count = block, index, count
        self._length = len(parent) // count

    def __len__(self) -> int:
        return self._length

    def _global(self, i: int) -> int:
        k, j = divmod(i, self._block)
        return k * self._block * self._count + self._index * self._block + j

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.slice(index)
        return self._parent[self._global(index)]

    def __str__(self) -> str:
        return f"_ProcessBlocks(block={self._block}, {self._index} of {self._count})"


def _train_elements(cfg, process_index, process_count) -> grain.IterDataset:
    names = list(cfg.mixture)
    weights = [float(cfg.mixture[n][1]) for n in names]
    formats = _formats(cfg)
    if all(formats[n] == "arrayrecord" for n in names):
        parts = [
            grain.MapDataset.source(records.array_record_source(cfg.mixture[n][0]))
            .shuffle(seed=cfg.seed + i)
            .repeat(None)
            .map(_Tag(i))
            for i, n in enumerate(names)
        ]
        ds = grain.MapDataset.mix(parts, weights) if len(parts) > 1 else parts[0]
        # Sampled on the global stream, then sliced: every element's random draws depend on its
        # global index only, so the global batch is the same for any process count.
        ds = ds.filter(_Trainable(min_frames(cfg)))
        ds = ds.random_map(sample_transform(cfg), seed=cfg.seed)
        ds = _ProcessBlocks(ds, block=cfg.batch_size, index=process_index, count=process_count)
        return ds.to_iter_dataset(_read_options(cfg))
    parts = []
    for i, n in enumerate(names):
        path = cfg.mixture[n][0]
        if formats[n] == "arrayrecord":
            part = (
                grain.MapDataset.source(records.array_record_source(path))
                .shuffle(seed=cfg.seed + i)
                .repeat(None)[process_index::process_count]
                .to_iter_dataset(_read_options(cfg))
            )
        else:
            part = _tfrecord_stream(
                _process_shards(path, process_index, process_count), cfg, cfg.seed + i
            )
        parts.append(part.map(_Tag(i)))
    ds = grain.IterDataset.mix(parts, weights) if len(parts) > 1 else parts[0]
    ds = ds.filter(_Trainable(min_frames(cfg)))
    return ds.random_map(sample_transform(cfg), seed=cfg.seed)


def _eval_elements(cfg, process_index, process_count) -> grain.IterDataset:
    ((path, _),) = cfg.mixture.values()
    if records.read_manifest(path)["format"] == "arrayrecord":
        src = grain.MapDataset.source(records.array_record_source(path))
        ds = src[process_index::process_count].map(_Tag(0)).to_iter_dataset(_read_options(cfg))
    else:
        ds = _tfrecord_stream(_process_shards(path, process_index, process_count), cfg, cfg.seed)
        ds = ds.map(_Tag(0))
    ds = grain.experimental.FlatMapIterDataset(ds, _Expand(cfg.eval_max_expressions_per_video))
    return ds.random_map(_EvalSample(inner=sample_transform(cfg)), seed=cfg.seed)


def ensure_flags_parsed() -> None:
    """Grain workers read absl flags: parse them if the program did not (tests, notebooks)."""
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS(sys.argv[:1], known_only=True)


def make_dataset(
    cfg: PipelineConfig, *, process_index: int = 0, process_count: int = 1
) -> grain.IterDataset:
    """The pipeline as a Grain `IterDataset` of batches (dicts of numpy arrays).

    `iter(ds)` gives a `grain.DatasetIterator` with `get_state()` / `set_state()`; it also works
    with `grain.checkpoint.CheckpointSave` / `CheckpointRestore` inside an Orbax `Composite`.
    Each process gets `cfg.batch_size` examples per batch from its own disjoint share.
    """
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} not in [0, {process_count})")
    if cfg.train:
        ds = _train_elements(cfg, process_index, process_count)
        ds = ds.batch(cfg.batch_size, drop_remainder=True)
    else:
        ds = _eval_elements(cfg, process_index, process_count)
        ds = ds.batch(cfg.batch_size, drop_remainder=False).map(_PadBatch(cfg.batch_size))
    if cfg.num_workers > 0:
        ensure_flags_parsed()
        ds = ds.mp_prefetch(
            grain.MultiprocessingOptions(
                num_workers=cfg.num_workers, per_worker_buffer_size=cfg.worker_buffer_size
            )
        )
    return ds
