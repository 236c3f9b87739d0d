import dataclasses

import numpy as np
import pytest
from example_factory import make_example
from PIL import Image

from jax_refvos.datasets import example as ex_lib
from jax_refvos.datasets.example import SchemaError, VideoExample


def test_serialisation_round_trip_is_exact():
    ex, _ = make_example(foreground=True)
    data = ex.to_bytes()
    back = VideoExample.from_bytes(data)
    assert back == ex
    assert back.to_bytes() == data  # deterministic serialisation
    assert back.extra == {"source": "unit-test"}


def test_masks_frames_and_unions(tmp_path):
    ex, masks = make_example(seed=3, foreground=True)
    ex = VideoExample.from_bytes(ex.to_bytes())
    np.testing.assert_array_equal(ex.expressions[0].masks(), masks[0])
    np.testing.assert_array_equal(
        ex.expressions[1].masks([2, 0]), masks[0][[2, 0]] | masks[1][[2, 0]]
    )
    assert not ex.expressions[2].masks().any()  # no targets -> empty
    np.testing.assert_array_equal(ex.foreground_masks(), masks.any(0))
    frames = ex.frames()
    assert frames.shape == (4, 24, 32, 3) and frames.dtype == np.uint8
    path = tmp_path / "f.jpg"
    path.write_bytes(ex.frame_bytes[1])
    np.testing.assert_array_equal(frames[1], np.asarray(Image.open(path).convert("RGB")))
    with pytest.raises(IndexError):
        ex.frames([4])


def test_split_without_masks():
    ex, _ = make_example(has_masks=False)
    ex = VideoExample.from_bytes(ex.to_bytes())
    assert not ex.has_masks
    ex.validate()
    with pytest.raises(SchemaError, match="has no annotations"):
        ex.expressions[0].masks()


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda ex: {"frame_bytes": ex.frame_bytes[:-1]}, "3 frames for 4 names"),
        (lambda ex: {"frame_names": ("a", "a", "b", "c")}, "listed twice"),
        (
            lambda ex: {"expressions": (dataclasses.replace(ex.expressions[0], text="  "),)},
            "expression '0': empty expression text",
        ),
        (
            lambda ex: {"expressions": (dataclasses.replace(ex.expressions[0], targets=(7,)),)},
            "target track index 7",
        ),
        (
            lambda ex: {
                "tracks": (dataclasses.replace(ex.tracks[0], rles=(b"3",) * 4),) + ex.tracks[1:]
            },
            r"track '100', frame '00000': RLE covers 3 pixels, the frame has 24x32",
        ),
        (
            lambda ex: {"tracks": (dataclasses.replace(ex.tracks[0], rles=(b"",) * 2),)},
            "2 RLEs for 4 frames",
        ),
    ],
)
def test_validate_names_the_problem(change, message):
    ex, _ = make_example()
    bad = dataclasses.replace(ex, **change(ex))
    with pytest.raises(SchemaError, match=message):
        bad.validate()


def test_unknown_schema_version_is_refused():
    ex, _ = make_example()
    proto = ex_lib.to_tf_example(ex)
    proto.features.feature["schema_version"].int64_list.value[0] = 99
    with pytest.raises(SchemaError, match=r"schema version \[99\]"):
        ex_lib.from_tf_example(proto)
    with pytest.raises(SchemaError, match="not a tf.train.Example"):
        VideoExample.from_bytes(b"\xff\xff\xff")
