"""The synthetic benchmark (`refvos synth`), read back by an independent MeViS reader.

The reader below uses pycocotools and PIL only (not `jax_refvos.datasets.rle`), and the semantic
checks look at the decoded masks, not at the generator's own bookkeeping (synth_info.json is used
only for the families and for the list of objects of a video).
"""

import json
import re
from pathlib import Path

import numpy as np
import pytest
from mevis_reader import read_mevis_split, tree_hash
from PIL import Image

from jax_refvos.datasets.synthetic import SynthConfig, generate_benchmark

# pycocotools' decode trips numpy 2's copy-keyword deprecation on every call.

SPLITS = ("train", "valid_u", "valid")
CFG = SynthConfig(num_videos=24, seed=7, height=64, width=96, num_frames=8, min_frames=6)
SMALL_ARGS = ["--num_videos=3", "--height=48", "--width=64", "--num_frames=6", "--num_workers=1"]
COUNT_WORDS = {"two": 2, "three": 3, "four": 4, "five": 5, "six": 6}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth") / "data"
    generate_benchmark(root, CFG, num_workers=1, progress=False)
    return root


@pytest.fixture(scope="module")
def splits(dataset) -> dict:
    return {s: read_mevis_split(dataset / s, CFG.height, CFG.width) for s in SPLITS}


def test_mevis_format(splits):
    for split in SPLITS:
        assert splits[split]["meta"], split


def test_split_sizes_frames_and_objects(splits):
    sizes = {s: len(splits[s]["meta"]) for s in SPLITS}
    assert sizes == {"train": 24, "valid_u": 2, "valid": 2}
    vids = [v for s in SPLITS for v in splits[s]["meta"]]
    assert len(set(vids)) == len(vids)  # video ids distinct across splits
    for s in SPLITS:
        anno_ids = [o["anno_id"] for v in splits[s]["info"].values() for o in v["objects"]]
        assert len(set(anno_ids)) == len(anno_ids)
        for vid, v in splits[s]["meta"].items():
            assert 6 <= len(v["frames"]) <= 8
            objects = splits[s]["info"][vid]["objects"]
            assert 2 <= len(objects) <= 6
            assert [o["obj_id"] for o in objects] == list(range(len(objects)))
            for o in objects:  # every object is visible somewhere
                assert any(m is not None for m in splits[s]["masks"][o["anno_id"]])
            for e in v["expressions"].values():
                for obj_id, anno_id in zip(e["obj_id"], e["anno_id"], strict=True):
                    assert objects[obj_id]["anno_id"] == anno_id


def test_promises(splits):
    nulls = 0
    for s in SPLITS:
        families = [
            e["family"] for v in splits[s]["info"].values() for e in v["expressions"].values()
        ]
        exps = [e for v in splits[s]["meta"].values() for e in v["expressions"].values()]
        assert len(families) == len(exps)
        assert sum(f == "motion" for f in families) / len(families) >= 0.4, s
        assert sum(len(e["anno_id"]) >= 2 for e in exps) / len(exps) >= 0.05, s
        nulls += sum(m is None for ms in splits[s]["masks"].values() for m in ms)
    assert nulls > 0
    train = [
        e["family"] for v in splits["train"]["info"].values() for e in v["expressions"].values()
    ]
    assert {"motion", "appearance", "relation"} <= set(train)


def test_expression_texts(splits):
    for s in SPLITS:
        for v in splits[s]["meta"].values():
            texts = [e["exp"] for e in v["expressions"].values()]
            assert 3 <= len(texts) <= 7
            assert len(set(texts)) == len(texts)
            for e in v["expressions"].values():
                text = e["exp"]
                assert text == text.lower() and not text.endswith(".") and text.startswith("the ")
                words = text.split()
                count = COUNT_WORDS.get(words[1])
                assert (count or 1) == len(e["obj_id"]), text  # plural <=> right count word


def _centroid(m: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(m)
    return np.array([xs.mean(), ys.mean()])


def _first(masks: list) -> int:
    return next(t for t, m in enumerate(masks) if m is not None)


def _last(masks: list) -> int:
    return max(t for t, m in enumerate(masks) if m is not None)


_DIRECTION = re.compile(r"\b(left|right|up|down|upward|downward)$")
_UNIT = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}


def test_semantics_from_masks(splits):
    checked = {"direction": 0, "leave": 0, "enter": 0, "last": 0}
    for s in SPLITS:
        for vid, v in splits[s]["meta"].items():
            all_ids = [o["anno_id"] for o in splits[s]["info"][vid]["objects"]]
            masks = splits[s]["masks"]
            for e in v["expressions"].values():
                text, targets = e["exp"], e["anno_id"]
                if match := _DIRECTION.search(text):
                    ux, uy = _UNIT[match.group(1).removesuffix("ward")]
                    for a in targets:
                        d = _centroid(masks[a][_last(masks[a])]) - _centroid(
                            masks[a][_first(masks[a])]
                        )
                        along, across = d[0] * ux + d[1] * uy, abs(d[0] * uy - d[1] * ux)
                        assert along > 0 and along > across, (vid, text, d)
                    checked["direction"] += 1
                if re.search(r"leaves? the frame|exits? the frame|out of view", text):
                    for a in targets:
                        assert masks[a][-1] is None and masks[a][0] is not None, (vid, text)
                    checked["leave"] += 1
                if re.search(r"enters? the frame|into the frame|into view", text):
                    for a in targets:
                        assert masks[a][0] is None and masks[a][-1] is not None, (vid, text)
                    checked["enter"] += 1
                if re.search(r"appears last|to appear|shows up last", text):
                    (a,) = targets
                    assert all(_first(masks[a]) > _first(masks[o]) for o in all_ids if o != a)
                    checked["last"] += 1
    assert checked["direction"] > 0 and checked["leave"] + checked["enter"] + checked["last"] > 0


def test_masks_are_modal_and_match_the_pixels(splits, dataset):
    """Masks of a frame never overlap; mask pixels are saturated colour, the rest is greyish."""
    for s in ("valid_u", "valid"):
        for vid, v in splits[s]["meta"].items():
            ids = [o["anno_id"] for o in splits[s]["info"][vid]["objects"]]
            for t, frame in enumerate(v["frames"]):
                img = np.asarray(Image.open(dataset / s / "JPEGImages" / vid / f"{frame}.jpg"))
                chroma = img.max(axis=2).astype(int) - img.min(axis=2)
                ms = [splits[s]["masks"][a][t] for a in ids if splits[s]["masks"][a][t] is not None]
                union = np.sum(ms, axis=0) if ms else np.zeros(chroma.shape, int)
                assert union.max() <= 1
                for m in ms:
                    core = _erode(m, 1)
                    if core.sum() >= 4:
                        assert np.median(chroma[core]) > 80, (vid, frame)
                far = ~_dilate(union > 0, 3)
                assert np.percentile(chroma[far], 99) < 70, (vid, frame)


def _erode(m: np.ndarray, r: int) -> np.ndarray:
    return ~_dilate(~m, r)


def _dilate(m: np.ndarray, r: int) -> np.ndarray:
    out = np.pad(m, r)
    h, w = m.shape
    acc = np.zeros_like(m)
    for dy in range(2 * r + 1):
        for dx in range(2 * r + 1):
            acc |= out[dy : dy + h, dx : dx + w]
    return acc


def test_deterministic_for_any_worker_count(dataset, tmp_path):
    generate_benchmark(tmp_path / "again", CFG, num_workers=2, progress=False)
    assert tree_hash(tmp_path / "again") == tree_hash(dataset)
    other = SynthConfig(**{**CFG.parameters(), "seed": CFG.seed + 1})
    generate_benchmark(tmp_path / "other", other, num_workers=1, progress=False)
    assert tree_hash(tmp_path / "other") != tree_hash(dataset)


def test_readme_and_stamp(dataset):
    readme = (dataset / "README.md").read_text()
    for word in ("motion", "appearance", "relation", "multi-target", "valid_u", "seed"):
        assert word in readme
    stamp = json.loads((dataset / "synth_config.json").read_text())
    assert stamp["parameters"] == CFG.parameters()
