"""Whole-video SAM2.1 propagation against the `sam2` 1.1.0 video predictor (random weights, CPU).

Targets (issue 4): on every frame of an 8-frame propagation the logits at video resolution are
within 1e-3 relative (max |ours - ref| <= 1e-3 * max |ref|) and the thresholded masks agree on
>= 99.5 % of pixels, for mask, click and box prompts. We assert a tighter 2e-5 (measured: ~2e-6):
with random weights a wrong memory temporal index or pointer distance moves the logits by only
~5e-4 relative, which 1e-3 would let through. Random weights also often predict "no object"
(-1024 everywhere); the object-score head is biased so the object is present and the masks are
non-trivial, which the tests check before comparing.
"""

import dataclasses

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sam2")

import sam2_reference  # noqa: E402
from PIL import Image  # noqa: E402

from jax_refvos.model.sam2.video_predictor import Sam2VideoPredictor  # noqa: E402
from jax_refvos.weights.sam2_torch import abstract_sam2  # noqa: E402
from jax_refvos.weights.torch_names import load_torch_state  # noqa: E402

pytestmark = pytest.mark.parity

IMAGE_SIZE = 256
RTOL = 2e-5
H, W, T = 96, 128, 8


def make_video(root, t=T):
    """A textured square moving over a gradient; returns the folder and frame-0 object mask."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:H, :W]
    background = np.stack([xx * 2, yy * 2, (xx + yy)], -1).astype(np.float32)
    texture = rng.integers(0, 255, (24, 24, 3))
    masks = []
    for i in range(t):
        frame = background.copy()
        y0, x0 = 30 + 2 * i, 20 + 5 * i
        frame[y0 : y0 + 24, x0 : x0 + 24] = texture
        mask = np.zeros((H, W), bool)
        mask[y0 : y0 + 24, x0 : x0 + 24] = True
        masks.append(mask)
        Image.fromarray(frame.clip(0, 255).astype(np.uint8)).save(root / f"{i:05d}.jpg")
    return root, masks


@pytest.fixture(scope="module")
def models():
    ref = sam2_reference.build_reference("sam2.1_hiera_t", image_size=IMAGE_SIZE, seed=0)
    with torch.no_grad():
        # Make "object present" the usual outcome (see the module docstring).
        ref.sam_mask_decoder.pred_obj_score_head.layers[-1].bias.add_(8.0)
        # Random weights barely look at the memory; strengthen the temporal encodings so that
        # a wrong memory slot, temporal index or pointer distance changes the output visibly.
        gen = torch.Generator().manual_seed(1)
        for p in (ref.maskmem_tpos_enc, ref.obj_ptr_tpos_proj.weight, ref.no_obj_ptr):
            p.add_(torch.randn(p.shape, generator=gen) * 0.5)
    ours = abstract_sam2("sam2.1_hiera_t", image_size=IMAGE_SIZE)
    load_torch_state(ours, sam2_reference.state_dict_numpy(ref))
    return ref, Sam2VideoPredictor(ours, chunk_size=4)


def add_prompts(pred, state, prompts):
    """prompts: [(frame, obj_id, kind, value)] in call order."""
    for frame, obj_id, kind, value in prompts:
        if kind == "mask":
            pred.add_new_mask(state, frame, obj_id, value)
        elif kind == "points":
            pred.add_new_points_or_box(state, frame, obj_id, points=value[0], labels=value[1])
        else:
            pred.add_new_points_or_box(state, frame, obj_id, box=value)


def run_reference(ref, video_dir, prompts, passes=(False,)):
    out = {}
    with torch.inference_mode():
        state = ref.init_state(video_path=str(video_dir))
        add_prompts(ref, state, prompts)
        for reverse in passes:
            for t, _, m in ref.propagate_in_video(state, reverse=reverse):
                out[(reverse, t)] = m.float().numpy()
    return out


def run_ours(pred, video_dir, prompts, passes=(False,)):
    state = pred.init_state(video_dir)
    add_prompts(pred, state, prompts)
    out = {}
    for reverse in passes:
        for t, _, m in pred.propagate_in_video(state, reverse=reverse):
            out[(reverse, t)] = m
    return out


def assert_close(want: dict, got: dict):
    assert list(want) == list(got), "frames yielded in another order"
    positive = 0
    for t in want:
        w, g = want[t], got[t]
        assert g.shape == w.shape
        scale = np.abs(w).max()
        err = np.abs(g - w).max()
        assert err <= RTOL * scale, f"frame {t}: max |Δ| {err:.3g} > {RTOL} × {scale:.3g}"
        agree = np.mean((g > 0) == (w > 0))
        assert agree >= 0.995, f"frame {t}: masks agree on {agree:.4%} of pixels"
        positive += int((w > 0).any())
    # Non-trivial: the object is found on most frames, and not everywhere.
    assert positive >= len(want) - 1
    assert all((want[t] <= 0).any() for t in want)


CLICK = (np.array([[32.0, 42.0]], np.float32), np.array([1], np.int32))
BOX = np.array([20.0, 30.0, 44.0, 54.0], np.float32)


@pytest.mark.parametrize("prompt_kind", ["mask", "points", "box"])
def test_propagation_matches_reference(models, tmp_path, prompt_kind):
    ref, ours = models
    video, masks = make_video(tmp_path)
    value = {"mask": masks[0], "points": CLICK, "box": BOX}[prompt_kind]
    prompts = [(0, 1, prompt_kind, value)]
    want = run_reference(ref, video, prompts)
    assert len(want) == T
    assert_close(want, run_ours(ours, video, prompts))


def test_reverse_after_forward_matches_reference(models, tmp_path):
    """Prompt in the middle; forward, then reverse (which reads the forward pass's memories)."""
    ref, ours = models
    video, masks = make_video(tmp_path)
    prompts = [(4, 1, "mask", masks[4])]
    passes = (False, True)
    want = run_reference(ref, video, prompts, passes)
    assert sorted(t for r, t in want if r) == list(range(5))
    assert_close(want, run_ours(ours, video, prompts, passes))


def test_two_objects_and_several_prompted_frames(models, tmp_path):
    """Two objects tracked together; object 1 prompted on two frames (memory of both).

    (The reference cannot start an object later than another in float32 on CPU: a frame whose
    memory has no object pointer concatenates only bfloat16 features and its Linear fails.)
    """
    ref, ours = models
    video, masks = make_video(tmp_path)
    prompts = [(0, 1, "mask", masks[0]), (0, 7, "points", CLICK), (5, 1, "mask", masks[5])]
    want = run_reference(ref, video, prompts)
    assert next(iter(want.values())).shape == (2, 1, H, W)
    assert_close(want, run_ours(ours, video, prompts))


def test_closest_conditioning_frames_selection(models, tmp_path):
    """VIRST's setting: at most 3 conditioning frames in attention, the closest ones."""
    ref, ours = models
    video, masks = make_video(tmp_path, t=10)
    prompts = [(f, 1, "mask", masks[f]) for f in (0, 3, 6, 9)]
    ref.max_cond_frames_in_attn = 3
    try:
        want = run_reference(ref, video, prompts)
    finally:
        ref.max_cond_frames_in_attn = -1
    model = ours.model
    model.cfg = dataclasses.replace(model.cfg, max_cond_frames_in_attn=3)
    try:
        got = run_ours(Sam2VideoPredictor(model, chunk_size=4), video, prompts)
    finally:
        model.cfg = dataclasses.replace(model.cfg, max_cond_frames_in_attn=-1)
    assert_close(want, got)
