"""Semi-supervised VOS with SAM 2 (`methods/sam2/predictor.py`): prompts on first appearances,
objects that appear later, union per expression, chunking."""

import numpy as np
import pytest
from flax import nnx

from jax_refvos.datasets import rle
from jax_refvos.datasets.example import ABSENT, Expression, Track, VideoExample
from jax_refvos.errors import InputError
from jax_refvos.methods.sam2.config import tiny_sam2
from jax_refvos.methods.sam2.predictor import Sam2VosPredictor
from jax_refvos.model.sam2.sam2_model import NO_OBJ_SCORE, Sam2Model

H, W, T = 32, 48, 5


def _jpeg(pixels):
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def _video():
    """Track 0 on every frame; track 1 from frame 2 on. Expressions: 0, 1, both, none."""
    rng = np.random.default_rng(0)
    masks = np.zeros((2, T, H, W), bool)
    for t in range(T):
        masks[0, t, 4:20, 6 + t : 22 + t] = True
        if t >= 2:
            masks[1, t, 14:30, 26:44] = True
    tracks = tuple(
        Track(
            str(k),
            k + 1,
            tuple(
                rle.encode(masks[k, t])["counts"].encode() if masks[k, t].any() else ABSENT
                for t in range(T)
            ),
        )
        for k in range(2)
    )
    exps = (
        Expression("a", "first", "referring", (1,), (0,)),
        Expression("b", "second", "referring", (2,), (1,)),
        Expression("c", "both", "referring", (1, 2), (0, 1)),
        Expression("d", "none", "no_target", (), ()),
    )
    ex = VideoExample(
        dataset="synth",
        split="valid_u",
        video_id="v",
        frame_names=tuple(f"{i:05d}" for i in range(T)),
        frame_bytes=tuple(_jpeg(rng.integers(0, 256, (H, W, 3), dtype=np.uint8)) for _ in range(T)),
        height=H,
        width=W,
        tracks=tracks,
        expressions=exps,
        has_masks=True,
    )
    return ex, masks


def _iou(a, b):
    return (a & b).sum() / max((a | b).sum(), 1)


@pytest.fixture(scope="module")
def run():
    model = Sam2Model(tiny_sam2(64, 32), rngs=nnx.Rngs(0))
    ex, masks = _video()
    facts, chunks = Sam2VosPredictor(model).infer_video(ex, seed=0, chunk_size=2)
    chunks = list(chunks)
    return facts, chunks, masks


def test_chunks_cover_every_frame_once_in_order(run):
    facts, chunks, _ = run
    assert facts == {"objects": 2, "first_frames": [0, 2]}
    frames = np.concatenate([idx for idx, _ in chunks])
    assert frames.tolist() == list(range(T))
    assert all(x.shape == (len(idx), 4, H, W) for idx, x in chunks)


def test_prompted_frames_give_the_prompt_and_later_objects_do_not_exist_before(run):
    _, chunks, masks = run
    logits = np.concatenate([x for _, x in chunks])  # [T, 4, H, W]
    assert _iou(logits[0, 0] > 0, masks[0, 0]) > 0.8  # track 0 prompted on frame 0
    assert _iou(logits[2, 1] > 0, masks[1, 2]) > 0.8  # track 1 prompted on frame 2
    assert (logits[:2, 1] == NO_OBJ_SCORE).all()  # track 1 does not exist yet
    np.testing.assert_array_equal(logits[:2, 2], logits[:2, 0])  # the union is track 0 alone
    np.testing.assert_array_equal(logits[:, 2], np.maximum(logits[:, 0], logits[:, 1]))
    assert (logits[:, 3] == NO_OBJ_SCORE).all()  # no target


def test_text_prompts_are_refused():
    with pytest.raises(InputError, match="refvos track"):
        Sam2VosPredictor.predict(None, None, "the cat", seed=0, chunk_size=1)
