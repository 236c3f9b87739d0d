"""ReVOS: MeViS-like files at the dataset root, nested video ids, `type_id` per expression.

Follows ReVOS-api / VISA (`utils/dataset_config.py`, `tools/eval_revos.py`,
`tools/generate_foreground_mask.py`) and GLUS (`dataset/revos.py`, `utils/eval_revos.py`).
`--root` = the ReVOS folder::

    <root>/JPEGImages/<source>/<video>/<frame>.jpg        video id = "<source>/<video>" (has '/')
    <root>/meta_expressions_<split>_.json   {"videos": {vid: {"vid_id", "frames", ["height",
        "width"], "expressions": {exp_id: {"exp", "obj_id": [int], "anno_id": [int],
        "type_id": 0 referring | 1 reasoning | 2 no target}}}}}
    <root>/mask_dict.json                   {"<anno_id>": [COCO RLE or null per frame]}
                                            (one file for all splits)
    <root>/mask_dict_foreground.json        {vid: {"masks_rle": [RLE per frame],
                                                   "foreground_ratio": [..]}}   (optional)

`kind` = `EXPRESSION_KINDS[type_id]` (an expression without `type_id` is "referring"); the video's
foreground (union of all its objects, for the robustness score R) goes to
`VideoExample.foreground` when the foreground file lists the video. `extra` = {"vid_id": ...}.
"""

from pathlib import Path

from jax_refvos.datasets import mevis_layout
from jax_refvos.datasets.example import EXPRESSION_KINDS
from jax_refvos.datasets.readers import common
from jax_refvos.datasets.readers.mask_dict import MaskDictReader
from jax_refvos.errors import InputError

FOREGROUND_FILE = "mask_dict_foreground.json"


def meta_file(split: str) -> str:
    return f"meta_expressions_{split}_.json"


def revos_reader(dataset: str, root: str | Path, split: str) -> MaskDictReader:
    root = common.require_dir(Path(root), "ReVOS root folder")
    meta_path = root / meta_file(split)
    if not meta_path.is_file():
        found = sorted(
            p.name.removeprefix("meta_expressions_").removesuffix("_.json")
            for p in root.glob("meta_expressions_*_.json")
        )
        hint = f" (splits found: {', '.join(found)})" if found else ""
        raise InputError(f"{meta_path}: no meta file for ReVOS split {split!r}{hint}")

    def kind_of(e: mevis_layout.Expression) -> str:
        if e.type_id is None:
            return "referring"
        if not 0 <= e.type_id < len(EXPRESSION_KINDS):
            raise ValueError(
                f"type_id {e.type_id} is not one of 0..{len(EXPRESSION_KINDS) - 1} "
                f"({', '.join(EXPRESSION_KINDS)})"
            )
        return EXPRESSION_KINDS[e.type_id]

    mask_path = root / mevis_layout.MASK_FILE
    foreground_path = root / FOREGROUND_FILE
    has_masks = mask_path.is_file()
    return MaskDictReader(
        dataset=dataset,
        split=split,
        meta_path=meta_path,
        frame_dir=root / mevis_layout.IMAGE_DIR,
        mask_path=mask_path if has_masks else None,
        foreground_path=foreground_path if has_masks and foreground_path.is_file() else None,
        kind_of=kind_of,
    )
