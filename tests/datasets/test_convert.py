"""`refvos convert` on the synthetic set: equality with the raw files, resume, bad input, CLI."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as coco_mask

from jax_refvos.datasets import convert, open_records, records
from jax_refvos.datasets.synthetic import SynthConfig, generate_benchmark
from jax_refvos.errors import InputError
from jax_refvos.main import convert as convert_cli


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    cfg = SynthConfig(num_videos=8, height=40, width=56, num_frames=6)
    generate_benchmark(root / "synth", cfg, num_workers=1, progress=False)
    return root / "synth"


def _raw_masks(split_dir: Path, anno_ids, t, h, w) -> np.ndarray:
    """Union mask from mask_dict.json, decoded by pycocotools (the independent reference)."""
    mask_dict = json.loads((split_dir / "mask_dict.json").read_text())
    out = np.zeros((t, h, w), bool)
    for a in anno_ids:
        for i, r in enumerate(mask_dict[str(a)]):
            if r is not None:
                out[i] |= coco_mask.decode({"size": r["size"], "counts": r["counts"].encode()}) > 0
    return out


def _check_against_raw(out_dir: Path, split_dir: Path) -> int:
    meta = json.loads((split_dir / "meta_expressions.json").read_text())["videos"]
    seen = 0
    for ex in open_records(out_dir):
        entry = meta[ex.video_id]
        assert list(ex.frame_names) == entry["frames"]
        frames = ex.frames()
        for i, name in enumerate(ex.frame_names):
            with Image.open(split_dir / "JPEGImages" / ex.video_id / f"{name}.jpg") as im:
                np.testing.assert_array_equal(frames[i], np.asarray(im.convert("RGB")))
        assert {e.exp_id for e in ex.expressions} == set(entry["expressions"])
        for e in ex.expressions:
            raw = entry["expressions"][e.exp_id]
            assert e.text == raw["exp"]
            expected = _raw_masks(split_dir, raw["anno_id"], ex.num_frames, ex.height, ex.width)
            np.testing.assert_array_equal(e.masks(), expected)
        seen += 1
    assert seen == len(meta)
    return seen


@pytest.mark.parametrize("fmt", ["arrayrecord", "tfrecord"])
def test_convert_equals_raw_files(synth_root, tmp_path, fmt):
    out = tmp_path / "rec"
    m = convert.convert_dataset(
        "synth", synth_root, "train", out, fmt=fmt, num_shards=3, num_workers=0, progress=False
    )
    assert not m["up_to_date"] and len(m["shards"]) == 3 and m["skipped"] == []
    assert m["counts"]["videos"] == 8
    assert _check_against_raw(out, synth_root / "train") == 8
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [s["file"] for s in m["shards"]] + ["manifest.json"]
    )
    records.verify_records(out)
    again = convert.convert_dataset(
        "synth", synth_root, "train", out, fmt=fmt, num_shards=3, num_workers=0, progress=False
    )
    assert again["up_to_date"]


def test_output_does_not_depend_on_worker_count(synth_root, tmp_path):
    digests = []
    for workers in (0, 2):
        m = convert.convert_dataset(
            "synth",
            synth_root,
            "train",
            tmp_path / f"w{workers}",
            num_shards=2,
            num_workers=workers,
            progress=False,
        )
        digests.append([s["sha256"] for s in m["shards"]])
    assert digests[0] == digests[1]


def _corrupt_jpeg(split_dir: Path, vid: str) -> tuple[Path, bytes]:
    path = sorted((split_dir / "JPEGImages" / vid).glob("*.jpg"))[1]
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path, data


def test_bad_input_stops_then_resume_skips_finished_shards(synth_root, tmp_path):
    root = tmp_path / "raw"
    shutil.copytree(synth_root, root)
    vids = sorted(json.loads((root / "train/meta_expressions.json").read_text())["videos"])
    path, good = _corrupt_jpeg(root / "train", vids[-1])  # the last shard's video
    out = tmp_path / "rec"
    with pytest.raises(InputError, match=rf"{path.name}.*--skip_bad"):
        convert.convert_dataset("synth", root, "train", out, num_shards=4, progress=False)
    assert not (out / "manifest.json").exists()
    finished = sorted(p.name for p in out.glob("*.array_record"))
    assert len(finished) == 3  # shards 0-2 complete, shard 3 left nothing behind
    assert not list(out.glob(".*.tmp-*"))
    mtimes = {n: (out / n).stat().st_mtime_ns for n in finished}

    with pytest.raises(InputError, match="different parameters"):
        convert.convert_dataset("synth", root, "train", out, num_shards=2, progress=False)

    path.write_bytes(good)
    m = convert.convert_dataset("synth", root, "train", out, num_shards=4, progress=False)
    assert {n: (out / n).stat().st_mtime_ns for n in finished} == mtimes  # not rewritten
    assert m["counts"]["videos"] == 8 and not (out / ".convert").exists()
    clean = convert.convert_dataset(
        "synth", root, "train", tmp_path / "clean", num_shards=4, progress=False
    )
    assert [s["sha256"] for s in m["shards"]] == [s["sha256"] for s in clean["shards"]]


def test_skip_bad_lists_the_video(synth_root, tmp_path):
    root = tmp_path / "raw"
    shutil.copytree(synth_root, root)
    vids = sorted(json.loads((root / "train/meta_expressions.json").read_text())["videos"])
    _corrupt_jpeg(root / "train", vids[2])
    m = convert.convert_dataset(
        "synth", root, "train", tmp_path / "rec", skip_bad=True, num_workers=0, progress=False
    )
    assert m["counts"]["videos"] == 7
    assert [s["video_id"] for s in m["skipped"]] == [vids[2]]
    assert vids[2] in m["skipped"][0]["error"]
    assert vids[2] not in {ex.video_id for ex in open_records(tmp_path / "rec")}


def test_cli(synth_root, tmp_path, capsys):
    out = tmp_path / "rec"
    args = ["--dataset=synth", f"--root={synth_root}", "--split=valid_u", f"--out_dir={out}"]
    assert convert_cli.main([*args, "--format=tfrecord", "--num_workers=0"]) == 0
    assert "converted: synth/valid_u" in capsys.readouterr().out
    assert records.read_manifest(out)["format"] == "tfrecord"
    assert convert_cli.main([*args, "--format=tfrecord", "--num_workers=0"]) == 0
    assert "already converted" in capsys.readouterr().out
    assert convert_cli.main([*args, "--num_workers=0"]) == 2  # a different conversion
    err = capsys.readouterr().err
    assert err.startswith("error:") and "another --out_dir" in err and "Traceback" not in err
    bad = ["--dataset=synth", f"--root={tmp_path / 'nope'}", "--split=train"]
    assert convert_cli.main([*bad, f"--out_dir={tmp_path / 'x'}"]) == 2
    assert "nope" in capsys.readouterr().err
    assert not (tmp_path / "x" / "manifest.json").exists()
