"""Test fixtures: a tiny synthetic MeViS-layout dataset rewritten in every raw benchmark layout.

Import by bare module name (`import raw_layouts`; tests/ has no __init__.py). Stable API:

    SYNTH                                   the tiny SynthConfig used by `make_source`
    make_source(out_dir) -> Path            generates the synthetic benchmark (MeViS layout:
                                            <out_dir>/{train,valid_u,valid}/...)
    load_split(src_split_dir) -> (videos, mask_dict)   the source meta "videos" and mask dict
    coco_decode(rle) -> bool[h, w]          pycocotools decode of a JSON RLE (None -> None)

    writers (each takes a source split folder, e.g. make_source(..) / "train", returns the root
    to pass as `--root`):
    write_mevis(src_split_dir, root, split, masks=True)       MeViS layout (copy; masks=False drops
                                                              mask_dict.json, like MeViS valid)
    write_refytvos(src_split_dir, root, split, annotations=True, objects_meta=True)
    write_davis17(src_split_dir, root, split, annotations=True, objects_meta=True)
    write_revos(src_split_dir, root, split, foreground=True)  nested ids "<group>/<vid>", type_id
                                                              0/1 alternating + one no-target (2)
                                                              expression "nt" per video
    write_reasonvos(src_split_dir, root)                      single-target expressions only
    write_lvvis(src_split_dir, root, split, layout="glus")    "glus": meta + mask dict in root;
                                                              "visa": in <root>/<split>

    corruption helpers:
    edit_json(path, fn)                     fn(obj) edits in place (or returns a replacement)
    write_malformed_json(path)
    truncate_file(path, keep=0.5)           e.g. a truncated JPEG
    delete_file(path)
    write_jpeg(path, height, width)         a valid JPEG of another size
    write_png(path, array)                  a grey PNG (e.g. an annotation of the wrong size)
    set_rle_size(mask_dict_path, anno_id, frame_index, size)
    set_rle_counts(mask_dict_path, anno_id, frame_index, counts)
    set_expression(meta_path, vid, exp_id, **fields)          MeViS-style dict expressions
"""

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pycocotools import mask as cocomask

from jax_refvos.datasets.synthetic import SynthConfig, generate_benchmark

SYNTH = SynthConfig(num_videos=6, seed=3, height=48, width=64, num_frames=6, min_frames=5)
REVOS_GROUPS = ("synA", "synB")
REASONVOS_SOURCES = ("MeViS", "MOSE")


def make_source(out_dir: Path) -> Path:
    generate_benchmark(out_dir, SYNTH, num_workers=1, progress=False)
    return Path(out_dir)


def load_split(src_split_dir: Path) -> tuple[dict, dict]:
    src = Path(src_split_dir)
    videos = json.loads((src / "meta_expressions.json").read_text())["videos"]
    masks = json.loads((src / "mask_dict.json").read_text())
    return videos, masks


def coco_decode(r: dict | None) -> np.ndarray | None:
    if r is None:
        return None
    counts = r["counts"].encode() if isinstance(r["counts"], str) else r["counts"]
    return cocomask.decode({"size": list(r["size"]), "counts": counts}).astype(bool)


def _coco_encode(mask: np.ndarray) -> dict:
    r = cocomask.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in r["size"]], "counts": r["counts"].decode()}


def _dump(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def _copy_frames(src_split_dir: Path, vid: str, dst: Path) -> None:
    shutil.copytree(Path(src_split_dir) / "JPEGImages" / vid, dst, dirs_exist_ok=True)


def _object_masks(v: dict, masks: dict, anno_id: int) -> list[np.ndarray]:
    h, w = SYNTH.height, SYNTH.width
    rles = masks[str(anno_id)]
    assert len(rles) == len(v["frames"])
    return [np.zeros((h, w), bool) if r is None else coco_decode(r) for r in rles]


# ----------------------------------------------------------------------------- writers


def write_mevis(src_split_dir: Path, root: Path, split: str, masks: bool = True) -> Path:
    dst = Path(root) / split
    shutil.copytree(src_split_dir, dst, dirs_exist_ok=True)
    if not masks:
        (dst / "mask_dict.json").unlink()
    return Path(root)


def write_refytvos(
    src_split_dir: Path,
    root: Path,
    split: str,
    annotations: bool = True,
    objects_meta: bool = True,
) -> Path:
    """Palette PNGs (object id = 1 + rank of its anno_id in the video), string obj_ids."""
    videos, masks = load_split(src_split_dir)
    root = Path(root)
    meta, objects_json = {}, {}
    for vid, v in videos.items():
        _copy_frames(src_split_dir, vid, root / split / "JPEGImages" / vid)
        anno_ids = sorted({a for e in v["expressions"].values() for a in e["anno_id"]})
        pal_id = {a: k + 1 for k, a in enumerate(anno_ids)}
        labels = np.zeros((len(v["frames"]), SYNTH.height, SYNTH.width), np.uint8)
        for a in anno_ids:
            for t, m in enumerate(_object_masks(v, masks, a)):
                labels[t][m] = pal_id[a]
        if annotations:
            for t, name in enumerate(v["frames"]):
                im = Image.fromarray(labels[t])
                im.putpalette([c for i in range(256) for c in (i * 37 % 256, i * 91 % 256, i)])
                path = root / split / "Annotations" / vid / f"{name}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                im.save(path)
        visible = {int(i) for i in np.unique(labels)} - {0}
        exps = {
            exp_id: {"exp": e["exp"], "obj_id": str(pal_id[e["anno_id"][0]])}
            for exp_id, e in v["expressions"].items()
            if pal_id[e["anno_id"][0]] in visible
        }
        meta[vid] = {"frames": v["frames"], "expressions": exps}
        objects_json[vid] = {
            "objects": {
                str(pal_id[a]): {"category": "shape", "frames": v["frames"]} for a in anno_ids
            }
        }
    _dump(root / "meta_expressions" / split / "meta_expressions.json", {"videos": meta})
    if objects_meta:
        _dump(root / split / "meta.json", {"videos": objects_json})
    return root


def write_davis17(
    src_split_dir: Path,
    root: Path,
    split: str,
    annotations: bool = True,
    objects_meta: bool = True,
) -> Path:
    return write_refytvos(src_split_dir, root, split, annotations, objects_meta)


def revos_id(k: int, vid: str) -> str:
    return f"{REVOS_GROUPS[k % len(REVOS_GROUPS)]}/{vid}"


def write_revos(src_split_dir: Path, root: Path, split: str, foreground: bool = True) -> Path:
    videos, masks = load_split(src_split_dir)
    root = Path(root)
    mask_path = root / "mask_dict.json"
    merged = json.loads(mask_path.read_text()) if mask_path.exists() else {}
    offset = 1 + max((int(k) for k in merged), default=-1)
    fg_path = root / "mask_dict_foreground.json"
    fg = json.loads(fg_path.read_text()) if fg_path.exists() else {}
    meta = {}
    for k, (vid, v) in enumerate(videos.items()):
        new_vid = revos_id(k, vid)
        _copy_frames(src_split_dir, vid, root / "JPEGImages" / new_vid)
        exps = {}
        for exp_id, e in v["expressions"].items():
            exps[exp_id] = {
                "exp": e["exp"],
                "obj_id": e["obj_id"],
                "anno_id": [a + offset for a in e["anno_id"]],
                "type_id": int(exp_id) % 2,
            }
        exps["nt"] = {"exp": "the unicorn", "obj_id": [], "anno_id": [], "type_id": 2}
        meta[new_vid] = {
            "vid_id": 100 + k,
            "frames": v["frames"],
            "height": SYNTH.height,
            "width": SYNTH.width,
            "expressions": exps,
        }
        anno_ids = sorted({a for e in v["expressions"].values() for a in e["anno_id"]})
        for a in anno_ids:
            merged[str(a + offset)] = masks[str(a)]
        union = np.zeros((len(v["frames"]), SYNTH.height, SYNTH.width), bool)
        for a in anno_ids:
            union |= np.stack(_object_masks(v, masks, a))
        fg[new_vid] = {
            "masks_rle": [_coco_encode(m) for m in union],
            "foreground_ratio": [float(m.mean()) for m in union],
        }
    _dump(root / f"meta_expressions_{split}_.json", {"videos": meta})
    _dump(mask_path, merged)
    if foreground:
        _dump(fg_path, fg)
    return root


def reasonvos_mask_dir(root: Path, source: str, vid: str, obj_id: Any) -> Path:
    return Path(root) / "Annotations" / f"{source}_{vid}_{obj_id}"


def write_reasonvos(src_split_dir: Path, root: Path) -> Path:
    """Single-target expressions; is_sent alternates (True first); frames in reverse order."""
    videos, masks = load_split(src_split_dir)
    root = Path(root)
    meta = {}
    for k, (vid, v) in enumerate(videos.items()):
        singles = [e for e in v["expressions"].values() if len(e["anno_id"]) == 1]
        if not singles:
            continue
        source = REASONVOS_SOURCES[k % len(REASONVOS_SOURCES)]
        _copy_frames(src_split_dir, vid, root / "JPEGImages" / vid)
        frames = list(reversed(v["frames"]))  # the official loader does not sort
        exps = []
        for i, e in enumerate(singles):
            obj = e["obj_id"][0]
            folder = reasonvos_mask_dir(root, source, vid, obj)
            if not folder.exists():
                folder.mkdir(parents=True)
                obj_masks = _object_masks(v, masks, e["anno_id"][0])
                by_name = dict(zip(v["frames"], obj_masks, strict=True))
                for name in frames:
                    write_png(folder / f"{name}.png", by_name[name].astype(np.uint8) * 255)
            exps.append({"exp_text": e["exp"], "obj_id": obj, "exp_id": i, "is_sent": i % 2 == 0})
        meta[vid] = {"source": source, "frames": frames, "expressions": exps}
    _dump(root / "meta_expressions.json", {"videos": meta})
    return root


def write_lvvis(src_split_dir: Path, root: Path, split: str, layout: str = "glus") -> Path:
    assert layout in ("glus", "visa")
    root = Path(root)
    shutil.copytree(Path(src_split_dir) / "JPEGImages", root / split / "JPEGImages")
    files = root if layout == "glus" else root / split
    for name in ("meta_expressions.json", "mask_dict.json"):
        shutil.copy2(Path(src_split_dir) / name, files / name)
    return root


# ----------------------------------------------------------------------------- corruptions


def edit_json(path: Path, fn: Callable[[Any], Any]) -> None:
    obj = json.loads(Path(path).read_text())
    out = fn(obj)
    Path(path).write_text(json.dumps(obj if out is None else out))


def write_malformed_json(path: Path) -> None:
    Path(path).write_text('{"videos": {"x": [1, 2,,]}')


def truncate_file(path: Path, keep: float = 0.5) -> None:
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: int(len(data) * keep)])


def delete_file(path: Path) -> None:
    Path(path).unlink()


def write_jpeg(path: Path, height: int, width: int) -> None:
    Image.fromarray(np.full((height, width, 3), 128, np.uint8)).save(path, format="JPEG")


def write_png(path: Path, array: np.ndarray) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, np.uint8)).save(path)


def set_rle_size(mask_dict_path: Path, anno_id: int, frame_index: int, size: list[int]) -> None:
    def fn(d):
        d[str(anno_id)][frame_index]["size"] = list(size)

    edit_json(mask_dict_path, fn)


def set_rle_counts(mask_dict_path: Path, anno_id: int, frame_index: int, counts: str) -> None:
    def fn(d):
        d[str(anno_id)][frame_index]["counts"] = counts

    edit_json(mask_dict_path, fn)


def set_expression(meta_path: Path, vid: str, exp_id: str, **fields: Any) -> None:
    def fn(meta):
        meta["videos"][vid]["expressions"][exp_id].update(fields)

    edit_json(meta_path, fn)
