"""Done-when of the record conversion: for the MeViS, Ref-YouTube-VOS, Ref-DAVIS17 and ReVOS
layouts, in both formats, every mask read back through `open_records` equals the mask decoded
from the raw files (pycocotools / PIL palette indices) and every frame the JPEG's pixels (PIL)."""

import json
from pathlib import Path

import numpy as np
import pytest
import raw_layouts as R
from PIL import Image

from jax_refvos.datasets import convert, open_records


@pytest.fixture(scope="module")
def roots(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("layouts")
    src = R.make_source(base / "src")
    return {
        "mevis": src,
        "refytvos": R.write_refytvos(src / "train", base / "refytvos", "train"),
        "davis17": R.write_davis17(src / "valid_u", base / "davis", "valid"),
        "revos": R.write_revos(src / "train", base / "revos", "train"),
    }


def _rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _mask_dict_expected(root: Path, meta: dict, mask_dict: dict, image_dir: Path):
    """{(vid, exp_id): bool[t, h, w]} from COCO RLE unions, and {vid: [frame paths]}."""
    masks, frames = {}, {}
    for vid, v in meta.items():
        frames[vid] = [image_dir / vid / f"{f}.jpg" for f in v["frames"]]
        for exp_id, e in v["expressions"].items():
            per_object = [
                [R.coco_decode(r) for r in mask_dict[str(a)]] for a in e.get("anno_id", [])
            ]
            h, w = _rgb(frames[vid][0]).shape[:2]
            union = np.zeros((len(v["frames"]), h, w), bool)
            for track in per_object:
                for i, m in enumerate(track):
                    if m is not None:
                        union[i] |= m
            masks[vid, exp_id] = union
    return masks, frames


def _expected(name: str, root: Path, split: str):
    if name == "mevis":
        d = root / split
        meta = json.loads((d / "meta_expressions.json").read_text())["videos"]
        mask_dict = json.loads((d / "mask_dict.json").read_text())
        return _mask_dict_expected(root, meta, mask_dict, d / "JPEGImages")
    if name == "revos":
        meta = json.loads((root / f"meta_expressions_{split}_.json").read_text())["videos"]
        mask_dict = json.loads((root / "mask_dict.json").read_text())
        return _mask_dict_expected(root, meta, mask_dict, root / "JPEGImages")
    # palette layouts: pixel value == object id, from PIL's palette indices
    meta = json.loads((root / "meta_expressions" / split / "meta_expressions.json").read_text())
    masks, frames = {}, {}
    for vid, v in meta["videos"].items():
        frames[vid] = [root / split / "JPEGImages" / vid / f"{f}.jpg" for f in v["frames"]]
        labels = []
        for f in v["frames"]:
            with Image.open(root / split / "Annotations" / vid / f"{f}.png") as im:
                assert im.mode == "P"
                labels.append(np.asarray(im))
        labels = np.stack(labels)
        for exp_id, e in v["expressions"].items():
            masks[vid, exp_id] = labels == int(e["obj_id"])
    return masks, frames


CASES = [("mevis", "train"), ("refytvos", "train"), ("davis17", "valid"), ("revos", "train")]


@pytest.mark.parametrize("fmt", ["arrayrecord", "tfrecord"])
@pytest.mark.parametrize("name, split", CASES)
def test_records_equal_raw_files(roots, tmp_path, name, split, fmt):
    out = tmp_path / "rec"
    m = convert.convert_dataset(
        name, roots[name], split, out, fmt=fmt, num_shards=2, num_workers=0, progress=False
    )
    masks, frames = _expected(name, roots[name], split)
    n_exp = 0
    videos = set()
    for ex in open_records(out):
        assert ex.dataset == name and ex.split == split
        videos.add(ex.video_id)
        decoded = ex.frames()
        for i, path in enumerate(frames[ex.video_id]):
            np.testing.assert_array_equal(decoded[i], _rgb(path), err_msg=str(path))
        for e in ex.expressions:
            np.testing.assert_array_equal(
                e.masks(), masks[ex.video_id, e.exp_id], err_msg=f"{ex.video_id}/{e.exp_id}"
            )
            n_exp += 1
    assert videos == set(frames)
    assert n_exp == len(masks) == m["counts"]["expressions"]
    if name == "revos":
        assert any("/" in v for v in videos)
