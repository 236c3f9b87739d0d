"""`refvos track` end to end against the `sam2` 1.1.0 video predictor (random weights, CPU).

A random-weight SAM2.1-tiny (image_size 256) is saved with `torch.save({"model": ...})` like an
official checkpoint; the CLI loads it torch-free and tracks one object through 8 JPEG frames from
a mask PNG (on frame 0, and on frame 2 via --mask_frame), clicks and a box. logits.npy must equal
the reference predictor's video-resolution logits on every tracked frame (max |Δ| <= 2e-5 of the
frame's max |ref|, as the video predictor parity test), hold -1024 before the prompted frame, and
each <stem>.png must be (logits > 0) * 255.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sam2")

import sam2_reference  # noqa: E402
import test_parity_sam2_video as V  # noqa: E402
from PIL import Image  # noqa: E402

from jax_refvos.main import track  # noqa: E402

pytestmark = [
    pytest.mark.parity,
    # The reference's optional hole filling needs its CUDA extension; it is off by default.
    pytest.mark.filterwarnings("ignore:cannot import name '_C':UserWarning"),
]

IMAGE_SIZE = 256
RTOL = V.RTOL


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(reference predictor, checkpoint path, frames dir, per-frame object masks)."""
    root = tmp_path_factory.mktemp("track_cli")
    ref = sam2_reference.build_reference("sam2.1_hiera_t", image_size=IMAGE_SIZE, seed=0)
    with torch.no_grad():
        # Object present on most frames, so the masks are non-trivial (see the video test).
        ref.sam_mask_decoder.pred_obj_score_head.layers[-1].bias.add_(8.0)
    ckpt = root / "random_sam2.1_hiera_t.pt"
    torch.save({"model": ref.state_dict()}, ckpt)
    frames = root / "frames"
    frames.mkdir()
    _, masks = V.make_video(frames)
    return ref, ckpt, frames, masks


def reference_logits(ref, frames, frame_idx, kind, value):
    """{frame: float32[H, W]} from the reference, prompted like the CLI (object id 1)."""
    out = V.run_reference(ref, frames, [(frame_idx, 1, kind, value)])
    return {t: m[0, 0] for (_, t), m in out.items()}


CASES = {
    "mask_frame0": (0, "mask", None),
    "mask_frame2": (2, "mask", None),
    "points": (0, "points", "32,42,1;90,20,0"),
    "box": (0, "box", "20,30,44,54"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_track_cli_matches_reference(setup, tmp_path, case):
    ref, ckpt, frames, masks = setup
    frame_idx, kind, text = CASES[case]
    args = [
        f"--checkpoint={ckpt}",
        "--model_cfg=sam2.1_hiera_t",
        f"--frames_dir={frames}",
        f"--out_dir={tmp_path / 'out'}",
        f"--image_size={IMAGE_SIZE}",
    ]
    if kind == "mask":
        png = tmp_path / "prompt.png"
        Image.fromarray(masks[frame_idx].astype(np.uint8) * 255).save(png)
        args += [f"--mask_png={png}", f"--mask_frame={frame_idx}"]
        value = masks[frame_idx]
    elif kind == "points":
        args.append(f"--points={text}")
        rows = np.array([r.split(",") for r in text.split(";")], np.float32)
        value = (rows[:, :2], rows[:, 2].astype(np.int32))
    else:
        args.append(f"--box={text}")
        value = np.array(text.split(","), np.float32)
    assert track.main(args) == 0

    out = tmp_path / "out"
    stems = sorted(p.stem for p in frames.glob("*.jpg"))
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"{s}.png" for s in stems] + ["logits.npy"]
    )
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    logits = np.load(out / "logits.npy")
    assert logits.dtype == np.float32 and logits.shape == (V.T, V.H, V.W)

    want = reference_logits(ref, frames, frame_idx, kind, value)
    assert sorted(want) == list(range(frame_idx, V.T))
    np.testing.assert_array_equal(logits[:frame_idx], -1024.0)
    positive = 0
    for t, w in want.items():
        scale = np.abs(w).max()
        err = np.abs(logits[t] - w).max()
        assert err <= RTOL * scale, f"frame {t}: max |Δ| {err:.3g} > {RTOL} × {scale:.3g}"
        assert np.mean((logits[t] > 0) == (w > 0)) >= 0.995
        positive += int((w > 0).any())
    # Non-trivial: the object is found on most tracked frames, and not everywhere.
    assert positive >= len(want) - 1 and all((w <= 0).any() for w in want.values())
    for t, stem in enumerate(stems):
        png = np.asarray(Image.open(out / f"{stem}.png"))
        np.testing.assert_array_equal(png, (logits[t] > 0).astype(np.uint8) * 255)
