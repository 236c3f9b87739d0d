"""Raw benchmark readers against an independent decoding of the raw files.

References: pycocotools for RLE, PIL for PNG annotations (as GLUS reads them), cv2 for JPEG
frames; `jax_refvos.datasets.rle` is never the reference. Fixtures are built once per module.
"""

import json
import pickle
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import raw_layouts as R
from PIL import Image

from jax_refvos.datasets.example import EXPRESSION_KINDS
from jax_refvos.datasets.readers import DATASETS, make_reader
from jax_refvos.errors import InputError

H, W = R.SYNTH.height, R.SYNTH.width


@pytest.fixture(scope="module")
def src(tmp_path_factory) -> Path:
    return R.make_source(tmp_path_factory.mktemp("readers") / "src")


@pytest.fixture(scope="module")
def roots(src, tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("layouts")
    out = {"mevis": src}
    R.write_mevis(src / "valid", base / "mevis_nomask", "valid", masks=False)
    out["mevis_nomask"] = base / "mevis_nomask"
    for split in ("train", "valid"):
        R.write_refytvos(src / split, base / "refytvos", split, annotations=split == "train")
        R.write_davis17(src / ("train" if split == "train" else "valid_u"), base / "davis", split)
    R.write_revos(src / "train", base / "revos", "train")
    R.write_revos(src / "valid_u", base / "revos", "valid")
    R.write_reasonvos(src / "train", base / "reasonvos")
    R.write_lvvis(src / "train", base / "lvvis_glus", "train", layout="glus")
    R.write_lvvis(src / "train", base / "lvvis_visa", "train", layout="visa")
    out.update(
        refytvos=base / "refytvos",
        davis17=base / "davis",
        revos=base / "revos",
        reasonvos=base / "reasonvos",
        lvvis_glus=base / "lvvis_glus",
        lvvis_visa=base / "lvvis_visa",
    )
    return out


def read_all(name, root, split):
    reader = make_reader(name, root, split)
    assert reader.dataset == name and reader.split == split
    ids = reader.video_ids()
    assert ids == sorted(ids) and ids
    return {v: reader.task(v).read() for v in ids}


def coco(counts: bytes) -> np.ndarray:
    from pycocotools import mask as cocomask

    return cocomask.decode({"size": [H, W], "counts": counts}).astype(bool)


def check_frames(ex, frame_dir: Path):
    assert (ex.height, ex.width) == (H, W)
    for name, data, img in zip(ex.frame_names, ex.frame_bytes, ex.frames(), strict=True):
        path = frame_dir / f"{name}.jpg"
        assert data == path.read_bytes()
        ref = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        assert np.abs(img.astype(int) - ref.astype(int)).max() <= 2  # libjpeg versions may differ


def check_track(ex, k: int, expected: list[np.ndarray | None]):
    """Stored counts decode (pycocotools) to `expected`; None/empty = ABSENT."""
    track = ex.tracks[k]
    assert len(track.rles) == ex.num_frames == len(expected)
    ours = ex.track_masks(k)
    for t, (counts, ref) in enumerate(zip(track.rles, expected, strict=True)):
        if ref is None or not ref.any():
            assert counts == b"" or not coco(counts).any()
            assert not ours[t].any()
        else:
            np.testing.assert_array_equal(coco(counts), ref)
            np.testing.assert_array_equal(ours[t], ref)


# ----------------------------------------------------------------------------- good data


def check_mask_dict_split(examples, src_split: Path, *, video_of=lambda v: v, offset=0):
    videos, masks = R.load_split(src_split)
    assert len(examples) == len(videos)
    for vid, ex in examples.items():
        v = videos[video_of(vid)]
        assert list(ex.frame_names) == v["frames"] and ex.has_masks
        keys = [t.key for t in ex.tracks]
        for k, t in enumerate(ex.tracks):
            check_track(ex, k, [R.coco_decode(r) for r in masks[str(int(t.key) - offset)]])
        for e in ex.expressions:
            if e.exp_id == "nt":
                assert e.kind == "no_target" and e.targets == () and not e.masks().any()
                continue
            src_e = v["expressions"][e.exp_id]
            assert e.text == src_e["exp"] and e.object_ids == tuple(src_e["obj_id"])
            assert [keys[k] for k in e.targets] == [str(a + offset) for a in src_e["anno_id"]]
            for k, a in zip(e.targets, src_e["anno_id"], strict=True):
                assert ex.tracks[k].object_id == src_e["obj_id"][src_e["anno_id"].index(a)]
            ref = np.zeros((ex.num_frames, H, W), bool)
            for a in src_e["anno_id"]:
                for t, r in enumerate(masks[str(a)]):
                    if r is not None:
                        ref[t] |= R.coco_decode(r)
            np.testing.assert_array_equal(e.masks(), ref)


@pytest.mark.parametrize("name", ["mevis", "synth"])
@pytest.mark.parametrize("split", ["train", "valid_u"])
def test_mevis_matches_raw(roots, name, split):
    examples = read_all(name, roots["mevis"], split)
    check_mask_dict_split(examples, roots["mevis"] / split)
    for vid, ex in examples.items():
        check_frames(ex, roots["mevis"] / split / "JPEGImages" / vid)
        assert all(e.kind == "referring" for e in ex.expressions)
        assert (
            ex.extra["vid_id"]
            == json.loads((roots["mevis"] / split / "meta_expressions.json").read_text())["videos"][
                vid
            ]["vid_id"]
        )


@pytest.mark.parametrize("layout", ["lvvis_glus", "lvvis_visa"])
def test_lvvis_matches_raw(roots, src, layout):
    examples = read_all("lvvis", roots[layout], "train")
    check_mask_dict_split(examples, src / "train")
    for vid, ex in examples.items():
        check_frames(ex, roots[layout] / "train" / "JPEGImages" / vid)


def test_revos_matches_raw(roots, src):
    for split, src_split, offset in (("train", "train", 0), ("valid", "valid_u", None)):
        examples = read_all("revos", roots["revos"], split)
        assert all("/" in v for v in examples)
        meta = json.loads((roots["revos"] / f"meta_expressions_{split}_.json").read_text())
        if offset is None:  # the writer appended this split's anno_ids after train's
            offset = 1 + max(int(k) for k in R.load_split(src / "train")[1])
        fg = json.loads((roots["revos"] / "mask_dict_foreground.json").read_text())
        check_mask_dict_split(
            examples, src / src_split, video_of=lambda v: v.split("/")[-1], offset=offset
        )
        for vid, ex in examples.items():
            check_frames(ex, roots["revos"] / "JPEGImages" / vid)
            m = meta["videos"][vid]
            assert ex.extra == {"vid_id": m["vid_id"]}
            for e in ex.expressions:
                assert e.kind == EXPRESSION_KINDS[m["expressions"][e.exp_id]["type_id"]]
            ref = np.stack([R.coco_decode(r) for r in fg[vid]["masks_rle"]])
            np.testing.assert_array_equal(ex.foreground_masks(), ref)
            for counts, r in zip(ex.foreground, fg[vid]["masks_rle"], strict=True):
                assert counts == b"" or np.array_equal(coco(counts), R.coco_decode(r))


def check_palette_split(examples, root: Path, split: str):
    meta = json.loads((root / "meta_expressions" / split / "meta_expressions.json").read_text())
    for vid, ex in examples.items():
        check_frames(ex, root / split / "JPEGImages" / vid)
        m = meta["videos"][vid]
        assert list(ex.frame_names) == m["frames"] and ex.has_masks
        pngs = [
            np.array(Image.open(root / split / "Annotations" / vid / f"{f}.png"))
            for f in m["frames"]
        ]
        for k, t in enumerate(ex.tracks):
            assert t.key == str(t.object_id)
            check_track(ex, k, [p == t.object_id for p in pngs])
        for e in ex.expressions:
            src_e = m["expressions"][e.exp_id]
            assert e.text == src_e["exp"] and e.kind == "referring"
            assert e.object_ids == (int(src_e["obj_id"]),)
            np.testing.assert_array_equal(
                e.masks(), np.stack([p == int(src_e["obj_id"]) for p in pngs])
            )


@pytest.mark.parametrize("name", ["refytvos", "davis17"])
def test_palette_matches_raw(roots, name):
    split = "train"
    examples = read_all(name, roots[name], split)
    check_palette_split(examples, roots[name], split)
    if name == "davis17":
        check_palette_split(read_all(name, roots[name], "valid"), roots[name], "valid")


def test_reasonvos_matches_raw(roots):
    root = roots["reasonvos"]
    meta = json.loads((root / "meta_expressions.json").read_text())["videos"]
    for split in ("valid", "test"):
        examples = read_all("reasonvos", root, split)
        assert set(examples) == set(meta)
    for vid, ex in examples.items():
        m = meta[vid]
        check_frames(ex, root / "JPEGImages" / vid)
        assert list(ex.frame_names) == m["frames"]  # meta order, not sorted
        assert ex.extra == {
            "source": m["source"],
            "is_sent": {str(e["exp_id"]): e["is_sent"] for e in m["expressions"]},
        }
        for e, src_e in zip(ex.expressions, m["expressions"], strict=True):
            assert e.exp_id == str(src_e["exp_id"]) and e.text == src_e["exp_text"]
            assert e.kind == ("reasoning" if src_e["is_sent"] else "referring")
            assert e.object_ids == (src_e["obj_id"],)
            folder = R.reasonvos_mask_dir(root, m["source"], vid, src_e["obj_id"])
            ref = [
                cv2.imread(str(folder / f"{f}.png"), cv2.IMREAD_GRAYSCALE) > 0 for f in m["frames"]
            ]
            check_track(ex, e.targets[0], ref)


def test_splits_without_annotations(roots, src):
    for name, root, split in (
        ("mevis", roots["mevis_nomask"], "valid"),
        ("refytvos", roots["refytvos"], "valid"),
    ):
        examples = read_all(name, root, split)
        for ex in examples.values():
            assert not ex.has_masks and all(t.rles == () for t in ex.tracks)
            assert ex.expressions and all(e.text.strip() for e in ex.expressions)
            with pytest.raises(Exception, match="no annotations"):
                ex.expressions[0].masks()
    videos, _ = R.load_split(src / "valid")
    ex = read_all("mevis", roots["mevis_nomask"], "valid")
    for vid, e in ((v, e) for v, x in ex.items() for e in x.expressions):
        assert e.object_ids == tuple(videos[vid]["expressions"][e.exp_id]["obj_id"])


def test_refytvos_valid_leaves_out_test_videos(roots, tmp_path):
    root = tmp_path / "ytvos"
    shutil.copytree(roots["refytvos"], root)
    meta = json.loads((root / "meta_expressions/valid/meta_expressions.json").read_text())
    test_vid = sorted(meta["videos"])[0]
    test_meta = {"videos": {test_vid: meta["videos"][test_vid]}}
    (root / "meta_expressions/test").mkdir()
    (root / "meta_expressions/test/meta_expressions.json").write_text(json.dumps(test_meta))
    shutil.rmtree(root / "valid/JPEGImages" / test_vid)
    reader = make_reader("refytvos", root, "valid")
    assert reader.video_ids() == sorted(set(meta["videos"]) - {test_vid})


@pytest.mark.parametrize(
    "name,key,split",
    [
        ("mevis", "mevis", "train"),
        ("refytvos", "refytvos", "train"),
        ("revos", "revos", "train"),
        ("reasonvos", "reasonvos", "valid"),
        ("lvvis", "lvvis_glus", "train"),
        ("davis17", "davis17", "valid"),
    ],
)
def test_tasks_are_small_and_picklable(roots, name, key, split):
    reader = make_reader(name, roots[key], split)
    for vid in reader.video_ids():
        task = reader.task(vid)
        data = pickle.dumps(task)
        assert len(data) < 32 * 1024
        assert pickle.loads(data).read().to_bytes() == task.read().to_bytes()


def test_datasets_tuple():
    assert DATASETS == ("mevis", "refytvos", "davis17", "revos", "reasonvos", "lvvis", "synth")
    with pytest.raises(InputError, match="unknown dataset 'nope'"):
        make_reader("nope", ".", "train")


# ----------------------------------------------------------------------------- bad data


def copy_layout(roots, key, tmp_path) -> Path:
    dst = tmp_path / key
    shutil.copytree(roots[key], dst)
    return dst


def first_video(root: Path, meta_rel: str) -> tuple[str, dict]:
    videos = json.loads((root / meta_rel).read_text())["videos"]
    vid = sorted(videos)[0]
    return vid, videos[vid]


def expect_error(name, root, split, *fragments):
    with pytest.raises(InputError) as info:
        reader = make_reader(name, root, split)
        for vid in reader.video_ids():
            reader.task(vid).read()
    msg = str(info.value)
    for f in fragments:
        assert str(f) in msg, f"{f!r} not in {msg!r}"
    assert "\n" not in msg
    return msg


MEVIS_META = "train/meta_expressions.json"


def test_bad_mevis_frames(roots, tmp_path):
    root = copy_layout(roots, "mevis", tmp_path)
    vid, v = first_video(root, MEVIS_META)
    frame = root / "train/JPEGImages" / vid / f"{v['frames'][2]}.jpg"
    R.truncate_file(frame)
    expect_error("mevis", root, "train", frame, vid, "does not decode")
    R.delete_file(frame)
    expect_error("mevis", root, "train", frame, vid, "missing")
    R.write_jpeg(frame, H + 2, W)
    expect_error("mevis", root, "train", frame, vid, f"{W}x{H + 2}")


def test_bad_mevis_masks(roots, tmp_path):
    root = copy_layout(roots, "mevis", tmp_path)
    vid, v = first_video(root, MEVIS_META)
    mask_path = root / "train/mask_dict.json"
    anno = v["expressions"]["0"]["anno_id"][0]
    masks = json.loads(mask_path.read_text())
    t = next(i for i, r in enumerate(masks[str(anno)]) if r is not None)
    frame = v["frames"][t]
    R.set_rle_size(mask_path, anno, t, [W, H])
    expect_error("mevis", root, "train", mask_path, f"anno_id {anno}", vid, frame, "RLE size")
    R.set_rle_size(mask_path, anno, t, [H, W])
    R.set_rle_counts(mask_path, anno, t, "!!bad")
    expect_error("mevis", root, "train", mask_path, f"anno_id {anno}", frame, "does not decode")
    R.set_rle_counts(mask_path, anno, t, "0")  # decodes, but covers 0 pixels
    expect_error("mevis", root, "train", mask_path, f"anno_id {anno}", frame, "cover 0 pixels")
    R.edit_json(mask_path, lambda d: d.update({str(anno): masks[str(anno)][:-1]}))
    expect_error("mevis", root, "train", mask_path, f"anno_id {anno}", vid, "entries for")
    R.edit_json(mask_path, lambda d: d.update({str(anno): masks[str(anno)]}))
    R.set_expression(root / MEVIS_META, vid, "0", anno_id=[9999], obj_id=[0])
    expect_error("mevis", root, "train", mask_path, "anno_id 9999", vid, "'0'")
    R.write_malformed_json(mask_path)
    expect_error("mevis", root, "train", mask_path, "malformed JSON")


def test_bad_mevis_meta(roots, tmp_path):
    root = copy_layout(roots, "mevis", tmp_path)
    meta = root / MEVIS_META
    vid, _ = first_video(root, MEVIS_META)
    R.set_expression(meta, vid, "1", exp="   ")
    expect_error("mevis", root, "train", meta, vid, "expression '1'", "empty expression text")
    R.write_malformed_json(meta)
    expect_error("mevis", root, "train", meta, "malformed JSON")
    meta.unlink()
    expect_error("mevis", root, "train", meta, "missing")
    expect_error("mevis", root, "nosuchsplit", "nosuchsplit", "train")


def test_bad_palette(roots, tmp_path):
    root = copy_layout(roots, "refytvos", tmp_path)
    meta = root / "meta_expressions/train/meta_expressions.json"
    vid, v = first_video(root, "meta_expressions/train/meta_expressions.json")
    png = root / "train/Annotations" / vid / f"{v['frames'][1]}.png"
    saved = png.read_bytes()
    R.write_png(png, np.zeros((H, W + 1), np.uint8))
    expect_error("refytvos", root, "train", png, vid, "annotation", f"{W + 1}x{H}")
    png.unlink()
    expect_error("refytvos", root, "train", png, vid, "missing")
    png.write_bytes(saved)
    R.set_expression(meta, vid, "0", obj_id="9")
    expect_error("refytvos", root, "train", root / "train/meta.json", vid, "object 9")
    (root / "train/meta.json").unlink()
    expect_error(
        "refytvos",
        root,
        "train",
        root / "train/Annotations" / vid,
        "object 9",
        "none of the annotation PNGs",
    )
    R.set_expression(meta, vid, "0", obj_id="one")
    expect_error("refytvos", root, "train", meta, vid, "'obj_id'")
    R.set_expression(meta, vid, "0", obj_id="1", exp="")
    expect_error("refytvos", root, "train", meta, vid, "empty expression text")


def test_bad_revos(roots, tmp_path):
    root = copy_layout(roots, "revos", tmp_path)
    meta_rel = "meta_expressions_train_.json"
    vid, v = first_video(root, meta_rel)
    fg = root / "mask_dict_foreground.json"
    R.edit_json(fg, lambda d: d[vid]["masks_rle"][0].update(size=[H + 1, W]))
    expect_error("revos", root, "train", fg, vid, v["frames"][0], "RLE size")
    R.edit_json(fg, lambda d: d[vid]["masks_rle"][0].update(size=[H, W]))
    R.set_expression(root / meta_rel, vid, "0", type_id=7)
    expect_error("revos", root, "train", root / meta_rel, vid, "type_id 7")
    R.set_expression(root / meta_rel, vid, "0", type_id=0)
    frame = root / "JPEGImages" / vid / f"{v['frames'][0]}.jpg"
    R.truncate_file(frame, keep=0.3)
    expect_error("revos", root, "train", frame, vid)
    expect_error("revos", root, "test", "meta_expressions_test_.json", "train, valid")


def test_bad_reasonvos(roots, tmp_path):
    root = copy_layout(roots, "reasonvos", tmp_path)
    meta = root / "meta_expressions.json"
    vid, v = first_video(root, "meta_expressions.json")
    e0 = v["expressions"][0]
    folder = R.reasonvos_mask_dir(root, v["source"], vid, e0["obj_id"])
    png = folder / f"{v['frames'][0]}.png"
    R.write_png(png, np.zeros((H - 1, W), np.uint8))
    expect_error("reasonvos", root, "valid", png, vid, f"{W}x{H - 1}")
    shutil.rmtree(folder)
    expect_error("reasonvos", root, "valid", folder, vid, "mask folder", "missing")
    R.edit_json(meta, lambda d: d["videos"][vid]["expressions"][0].update(exp_text=" "))
    expect_error("reasonvos", root, "valid", meta, vid, "empty expression text")
    expect_error("reasonvos", root, "train", "single split")


def test_bad_lvvis(roots, tmp_path):
    root = copy_layout(roots, "lvvis_glus", tmp_path)
    (root / "meta_expressions.json").unlink()
    expect_error("lvvis", root, "train", "meta_expressions.json", "missing")


def test_messages_are_one_line_without_traceback(roots, tmp_path):
    root = copy_layout(roots, "mevis", tmp_path)
    vid, v = first_video(root, MEVIS_META)
    R.truncate_file(root / "train/JPEGImages" / vid / f"{v['frames'][0]}.jpg", keep=0.0)
    msg = expect_error("mevis", root, "train", vid)
    assert not re.search(r"Traceback|File \"", msg)
