"""MeViS, our synthetic benchmark and LV-VIS (referring conversion): MeViS-layout splits.

MeViS / synth (`--root` = the folder holding the split folders; MeViS's own `mevis/utils`, VIRST
`utils/evaluation/eval_rvos.py`, GLUS `dataset/mevis.py`)::

    <root>/<split>/JPEGImages/<vid>/<frame>.jpg
    <root>/<split>/meta_expressions.json   {"videos": {vid: {"vid_id"?, "frames": [..],
        "expressions": {exp_id: {"exp": str, "obj_id": [int], "anno_id": [int]}}}}}
    <root>/<split>/mask_dict.json          {"<anno_id>": [COCO RLE or null per frame]}
                                           (absent in MeViS `valid` -> has_masks=False)

LV-VIS, the referring version GLUS and VISA train on (the expression is the category name; GLUS
`dataset/lvvis.py` reads `LVVIS/train/JPEGImages` with `LVVIS/meta_expressions.json` and
`LVVIS/mask_dict.json` beside the split folder; VISA `utils/dataset_config.py` keeps both files in
`lvvis/train/`). `--root` = the LVVIS folder; the meta and mask dict are looked for in
`<root>/<split>/` first, then in `<root>/` (GLUS)::

    <root>/<split>/JPEGImages/<vid>/<frame>.jpg
    <root>/<split>/meta_expressions.json  or  <root>/meta_expressions.json
    <root>/<split>/mask_dict.json         or  <root>/mask_dict.json

All expressions are of kind "referring". `extra` carries the meta's `vid_id` when present.
"""

from pathlib import Path

from jax_refvos.datasets import mevis_layout
from jax_refvos.datasets.readers import common
from jax_refvos.datasets.readers.mask_dict import MaskDictReader
from jax_refvos.errors import InputError


def mevis_reader(dataset: str, root: str | Path, split: str) -> MaskDictReader:
    """MeViS (and `synth`, which `refvos synth` writes in the same layout)."""
    split_path = mevis_layout.split_dir(root, split)
    mask_path = split_path / mevis_layout.MASK_FILE
    return MaskDictReader(
        dataset=dataset,
        split=split,
        meta_path=split_path / mevis_layout.META_FILE,
        frame_dir=split_path / mevis_layout.IMAGE_DIR,
        mask_path=mask_path if mask_path.is_file() else None,
    )


def lvvis_reader(dataset: str, root: str | Path, split: str) -> MaskDictReader:
    """LV-VIS referring version: VISA layout (files in the split folder) or GLUS (in the root)."""
    root = Path(root)
    split_path = mevis_layout.split_dir(root, split)
    meta_path = split_path / mevis_layout.META_FILE
    if not meta_path.is_file():
        meta_path = root / mevis_layout.META_FILE
        if not meta_path.is_file():
            raise InputError(
                f"{split_path / mevis_layout.META_FILE}: LV-VIS meta file is missing (looked "
                f"there and in {root})"
            )
    mask_path = meta_path.parent / mevis_layout.MASK_FILE
    return MaskDictReader(
        dataset=dataset,
        split=split,
        meta_path=meta_path,
        frame_dir=common.require_dir(
            split_path / mevis_layout.IMAGE_DIR, f"frame folder of LV-VIS split {split!r}"
        ),
        mask_path=mask_path if mask_path.is_file() else None,
    )
