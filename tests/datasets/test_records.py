import json

import grain
import numpy as np
import pytest
from example_factory import make_example

from jax_refvos.datasets import open_records, records
from jax_refvos.datasets.example import VideoExample
from jax_refvos.errors import InputError


@pytest.fixture(scope="module")
def examples():
    return [make_example(f"vid{i}", seed=i, num_frames=3 + i % 3)[0] for i in range(7)]


@pytest.mark.parametrize("fmt", ["arrayrecord", "tfrecord"])
def test_write_then_open_records(tmp_path, examples, fmt):
    m = records.write_records(examples, tmp_path, format=fmt, num_shards=3, dataset="synth")
    assert m["counts"] == {
        "videos": 7,
        "expressions": 21,
        "frames": sum(e.num_frames for e in examples),
    }
    assert [s["file"] for s in m["shards"]] == [
        f"synth-train-0000{i}-of-00003.{records.FORMATS[fmt]}" for i in range(3)
    ]
    assert json.loads((tmp_path / "manifest.json").read_text()) == m
    got = {ex.video_id: ex for ex in open_records(tmp_path)}
    assert got == {ex.video_id: ex for ex in examples}
    records.verify_records(tmp_path)
    assert not list(tmp_path.glob(".*"))  # no temporary files left


def test_array_record_source_is_random_access(tmp_path, examples):
    records.write_records(examples, tmp_path, num_shards=2)
    src = records.array_record_source(tmp_path)
    assert len(src) == 7
    ids = {VideoExample.from_bytes(src[i]).video_id for i in range(len(src))}
    assert ids == {e.video_id for e in examples}
    ds = grain.MapDataset.source(src).shuffle(seed=1).map(VideoExample.from_bytes)
    assert sorted(ex.video_id for ex in ds) == sorted(ids)


def test_tfrecord_records_feed_grain_sequentially(tmp_path, examples):
    records.write_records(examples, tmp_path, format="tfrecord", num_shards=2)
    with pytest.raises(InputError, match="no random access"):
        records.array_record_source(tmp_path)
    seen = []
    for path in records.shard_paths(tmp_path):
        ds = grain.experimental.TFRecordIterDataset(str(path)).map(VideoExample.from_bytes)
        seen += [ex.video_id for ex in ds]
    assert sorted(seen) == sorted(e.video_id for e in examples)


def test_masks_read_back(tmp_path):
    ex, masks = make_example("m", seed=11)
    records.write_records([ex], tmp_path, format="tfrecord")
    (back,) = list(open_records(tmp_path))
    np.testing.assert_array_equal(back.expressions[1].masks(), masks[0] | masks[1])


def test_bad_directories(tmp_path, examples):
    with pytest.raises(InputError, match="no manifest"):
        list(open_records(tmp_path))
    records.write_records(examples[:2], tmp_path)
    shard = records.shard_paths(tmp_path)[0]
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(InputError, match="contents differ"):
        records.verify_records(tmp_path)
    shard.unlink()
    with pytest.raises(InputError, match="shard listed in manifest.json is missing"):
        list(open_records(tmp_path))
    m = json.loads((tmp_path / "manifest.json").read_text())
    m["schema_version"] = 0
    (tmp_path / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(InputError, match="schema version 0"):
        records.read_manifest(tmp_path)


def test_corrupt_tfrecord_names_the_shard(tmp_path, examples):
    records.write_records(examples[:2], tmp_path, format="tfrecord")
    shard = records.shard_paths(tmp_path)[0]
    data = bytearray(shard.read_bytes())
    data[100] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(InputError, match=rf"{shard.name}: record 0 at byte 0: data CRC mismatch"):
        list(open_records(tmp_path))
