"""An independent MeViS reader for the tests (pycocotools + PIL, not `jax_refvos.datasets.rle`)."""

import hashlib
import json
from pathlib import Path

from PIL import Image
from pycocotools import mask as cocomask


def read_mevis_split(split_dir: Path, height: int, width: int) -> dict:
    """An independent MeViS reader: checks the format, returns meta, masks (decoded) and info."""
    meta = json.loads((split_dir / "meta_expressions.json").read_text())
    mask_dict = json.loads((split_dir / "mask_dict.json").read_text())
    info = json.loads((split_dir / "synth_info.json").read_text())
    assert set(meta) == {"videos"}
    masks = {}
    for vid, v in meta["videos"].items():
        assert set(v) == {"vid_id", "frames", "expressions"}
        assert isinstance(v["vid_id"], int)
        jpegs = sorted((split_dir / "JPEGImages" / vid).iterdir())
        assert all(p.suffix == ".jpg" for p in jpegs)
        assert v["frames"] == [p.stem for p in jpegs] == sorted(v["frames"])
        for p in jpegs:
            with Image.open(p) as im:
                assert im.format == "JPEG" and im.size == (width, height) and im.mode == "RGB"
        assert list(v["expressions"]) == [str(i) for i in range(len(v["expressions"]))]
        for e in v["expressions"].values():
            assert set(e) == {"exp", "obj_id", "anno_id"}
            assert len(e["obj_id"]) == len(e["anno_id"]) >= 1
            assert len(set(e["obj_id"])) == len(e["obj_id"])
            for a in e["anno_id"]:
                assert str(a) in mask_dict
        for obj in info["videos"][vid]["objects"]:
            rles = mask_dict[str(obj["anno_id"])]
            assert len(rles) == len(v["frames"])
            decoded = []
            for r in rles:
                if r is None:
                    decoded.append(None)
                    continue
                assert r["size"] == [height, width]
                m = cocomask.decode({"size": r["size"], "counts": r["counts"].encode()})
                assert m.shape == (height, width) and m.any()
                decoded.append(m.astype(bool))
            masks[obj["anno_id"]] = decoded
    assert set(masks) == {int(k) for k in mask_dict}
    return {"meta": meta["videos"], "masks": masks, "info": info["videos"]}


def tree_hash(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode() + b"\0" + p.read_bytes())
    return h.hexdigest()
