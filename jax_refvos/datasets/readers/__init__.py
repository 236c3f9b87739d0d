"""Raw benchmark readers: a split on disk -> one validated `VideoExample` per video.

    from jax_refvos.datasets.readers import DATASETS, make_reader
    reader = make_reader("mevis", "data/raw/mevis", "valid_u")  # parses the meta, checks layout
    for vid in reader.video_ids():                             # sorted
        task = reader.task(vid)   # small, picklable: paths + this video's meta entry and RLEs
        ex = task.read()          # reads every file, decodes every frame once, validates

Everything wrong with the data is an `InputError` naming the file and the video/frame. The layouts
(and the `--root` each expects) are documented in the modules and in `data/README.md`:
`mevis` (MeViS, `synth`, `lvvis`), `revos`, `palette` (Ref-YouTube-VOS, Ref-DAVIS17),
`reasonvos`.
"""

from collections.abc import Callable
from pathlib import Path
from typing import Any

from jax_refvos.datasets.readers.common import Reader
from jax_refvos.datasets.readers.mevis import lvvis_reader, mevis_reader
from jax_refvos.datasets.readers.palette import PaletteReader
from jax_refvos.datasets.readers.reasonvos import ReasonVosReader
from jax_refvos.datasets.readers.revos import revos_reader
from jax_refvos.errors import InputError

_FACTORIES: dict[str, Callable[[str, Any, str], Reader]] = {
    "mevis": mevis_reader,
    "refytvos": PaletteReader,
    "davis17": PaletteReader,
    "revos": revos_reader,
    "reasonvos": ReasonVosReader,
    "lvvis": lvvis_reader,
    "synth": mevis_reader,
}
DATASETS: tuple[str, ...] = tuple(_FACTORIES)

__all__ = ["DATASETS", "Reader", "make_reader"]


def make_reader(name: str, root: str | Path, split: str) -> Reader:
    """The reader of split `split` of dataset `name` stored under `root` (see the module doc)."""
    if name not in _FACTORIES:
        raise InputError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    if not isinstance(split, str) or not split or "/" in split or split in (".", ".."):
        raise InputError(f"bad split name {split!r}")
    if not Path(root).is_dir():
        raise InputError(f"{root}: dataset root folder does not exist")
    return _FACTORIES[name](name, root, split)
