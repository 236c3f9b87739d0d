"""Dataset readers and codecs: raw benchmark layouts -> `VideoExample` -> record shards.

from jax_refvos.datasets import open_records
for ex in open_records("data/records/mevis_train"):
    ex.video_id, ex.frame_names, ex.frames()           # uint8[t, h, w, 3]
    for e in ex.expressions:
        e.exp_id, e.text, e.masks()                      # bool[t, h, w], union of its targets
"""

from typing import Any

__all__ = ["open_records", "VideoExample"]


def __getattr__(name: str) -> Any:
    # Lazy: `from jax_refvos.datasets import rle` must not pay for protobuf/array_record imports.
    if name == "open_records":
        from jax_refvos.datasets.records import open_records

        return open_records
    if name == "VideoExample":
        from jax_refvos.datasets.example import VideoExample

        return VideoExample
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
