"""`refvos convert` on bad input: exit 2, one `error:` line naming the file, no manifest;
with --skip_bad, a per-video problem leaves that video out and lists it in the manifest."""

import json
import shutil
from pathlib import Path

import pytest
import raw_layouts as R

from jax_refvos.datasets import records
from jax_refvos.main import convert as convert_cli


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    return R.make_source(tmp_path_factory.mktemp("bad") / "src")


def _first(root: Path) -> tuple[str, dict]:
    meta = json.loads((root / "train/meta_expressions.json").read_text())["videos"]
    vid = sorted(meta)[0]
    return vid, meta[vid]


def _truncate_jpeg(root):
    vid, v = _first(root)
    path = root / "train/JPEGImages" / vid / f"{v['frames'][1]}.jpg"
    R.truncate_file(path)
    return path.name, vid


def _missing_frame(root):
    vid, v = _first(root)
    path = root / "train/JPEGImages" / vid / f"{v['frames'][2]}.jpg"
    R.delete_file(path)
    return path.name, vid


def _rle_size(root):
    vid, v = _first(root)
    anno = next(iter(v["expressions"].values()))["anno_id"][0]
    masks = json.loads((root / "train/mask_dict.json").read_text())
    frame = next(i for i, r in enumerate(masks[str(anno)]) if r is not None)
    R.set_rle_size(root / "train/mask_dict.json", anno, frame, [7, 9])
    return "mask_dict.json", vid


def _unknown_anno(root):
    vid, v = _first(root)
    exp_id = next(iter(v["expressions"]))
    R.set_expression(root / "train/meta_expressions.json", vid, exp_id, anno_id=[99999])
    return "99999", vid


def _empty_text(root):
    vid, v = _first(root)
    exp_id = next(iter(v["expressions"]))
    R.set_expression(root / "train/meta_expressions.json", vid, exp_id, exp="   ")
    return "meta_expressions.json", vid


CASES = {
    "truncated_jpeg": _truncate_jpeg,
    "missing_frame": _missing_frame,
    "rle_size": _rle_size,
    "unknown_anno_id": _unknown_anno,
    "empty_text": _empty_text,
}


def _run(root: Path, out: Path, *extra: str) -> int:
    return convert_cli.main(
        ["--dataset=mevis", f"--root={root}", "--split=train", f"--out_dir={out}", *extra]
    )


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_video(source, tmp_path, capsys, case):
    root = tmp_path / "raw"
    shutil.copytree(source, root)
    fragment, vid = CASES[case](root)
    capsys.readouterr()
    assert _run(root, tmp_path / "out", "--num_workers=0") == 2
    err = capsys.readouterr().err
    msg = err.strip().splitlines()[-1]  # after the progress bar's lines
    assert msg.startswith("error:") and err.count("error:") == 1 and "Traceback" not in err
    assert fragment in msg and vid in msg, msg
    assert not (tmp_path / "out" / "manifest.json").exists()

    assert _run(root, tmp_path / "skip", "--num_workers=1", "--skip_bad") == 0
    m = records.read_manifest(tmp_path / "skip")
    assert [s["video_id"] for s in m["skipped"]] == [vid]
    assert (
        m["counts"]["videos"]
        == len(json.loads((root / "train/meta_expressions.json").read_text())["videos"]) - 1
    )


@pytest.mark.parametrize("name", ["meta_expressions.json", "mask_dict.json"])
def test_malformed_json_is_fatal_even_with_skip_bad(source, tmp_path, capsys, name):
    root = tmp_path / "raw"
    shutil.copytree(source, root)
    R.write_malformed_json(root / "train" / name)
    capsys.readouterr()
    assert _run(root, tmp_path / "out", "--skip_bad") == 2
    err = capsys.readouterr().err
    msg = err.strip().splitlines()[-1]
    assert msg.startswith("error:") and name in msg and "malformed JSON" in msg, err
    assert not (tmp_path / "out" / "manifest.json").exists()
