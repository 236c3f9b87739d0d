"""VIRST end to end against extra official fixtures with other seeds, sizes and frame counts.

The shared fixture (`virst_tiny_dev`, checked by tests/model/test_virst_end_to_end_fixture.py) has
one weight seed, 12 frames and a 72 x 112 video. `launch/virst_reference_fixtures.sh` runs the
same official harness (`make_fixture.py`, in its own venv with transformers 4.40.1) with other
weight / constant-noise / pixel-noise seeds, frame counts, sizes and expressions. This module
runs OUR pipeline on each of those fixtures from its raw inputs only: the JPEGs (three
preprocessing recipes: VLM 448 px bf16, STF 1024 px bf16, propagation 1024 px uint8),
`prompt.json`'s `input_ids`, the safetensors and the fixture's own config/yaml files, then
`Virst.predict`. It must give `eval_video_res_logits` (released eval: Initial ST-Fusion off) and,
with ISF on, `isf_video_res_logits`; and the training forward (`virst_train`) must give the
`train_` / `trainw_` losses within 1e-4 relative (as the per-frame SAM2 outputs of the rollout).

Fixture directories come from $REFVOS_VIRST_EXTRA_FIXTURES (os.pathsep-separated); the module
is skipped when it is unset. Tolerance: per frame, max|Δ| / max|ref| < 1e-4 (float32; the
shared fixture measures <= 1.6e-6), plus sign agreement on all but 1e-4 of the pixels (mask
logits lie within ~1e-5 of 0 for a handful of pixels). The eval anchors must equal the
fixture's `eval_cond_idx` / `isf_cond_idx`, and the flex sampling must have kept every frame.
"""

import json
import os
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
import virst_fixture_inputs as vfi
from flax import nnx
from virst_fixture_inputs import rel_err

from jax_refvos.methods.virst import anchor_updater as au
from jax_refvos.methods.virst import model as virst
from jax_refvos.methods.virst import train_forward as virst_train

pytestmark = [pytest.mark.parity, pytest.mark.slow]

ENV = "REFVOS_VIRST_EXTRA_FIXTURES"
DIRS = [Path(p) for p in os.environ.get(ENV, "").split(os.pathsep) if p.strip()]
if not DIRS:
    pytest.skip(
        f"${ENV} is unset: no extra VIRST fixtures (make them with "
        "launch/virst_reference_fixtures.sh)",
        allow_module_level=True,
    )

LOGITS_REL_TOL = 1e-4
SIGN_AGREEMENT = 1 - 1e-4
LOSS_REL_TOL = 1e-4
FILES = (
    "virst_tiny.safetensors",
    "activations.npz",
    "manifest.json",
    "prompt.json",
    "config_llm_virst.json",
    "config_umt_tiny.json",
    "sam2.1_hiera_tiny_virst_fixture.yaml",
    "video/meta_expressions.json",
)
LOSS_NAMES = ("loss", "ce_loss", "mask_bce_loss", "mask_dice_loss", "iou_loss", "occ_loss")


@pytest.fixture(scope="module", params=DIRS, ids=[d.name for d in DIRS])
def fx(request):
    """Everything one fixture provides: dir, manifest, arrays, state dict and our inputs."""
    fixture = request.param
    missing = [f for f in FILES if not (fixture / f).is_file()]
    assert not missing, f"{fixture}: not a VIRST fixture, missing {missing}"
    manifest = json.loads((fixture / "manifest.json").read_text())
    return dict(
        dir=fixture,
        manifest=manifest,
        acts=dict(np.load(fixture / "activations.npz")),
        state=vfi.official_state(fixture),
        imgs=vfi.jpegs(fixture),
    )


def _inputs(fx):
    """(vlm [t, 448, 448, 3], stf [t, 1024, 1024, 3], prop uint8 [t, 1024, 1024, 3], ids)."""
    imgs = fx["imgs"]
    ids = np.asarray(vfi.prompt(fx["dir"])["input_ids"], np.int32)
    return vfi.vlm_view(imgs), vfi.stf_view(imgs), vfi.prop_view(imgs), ids


def _video_size(fx) -> tuple[int, int]:
    video = fx["manifest"]["settings"]["video"]
    return int(video["height"]), int(video["width"])


def test_fixture_and_anchors(fx):
    """Our raw inputs match the fixture's, and our eval anchors are the official ones."""
    ids = np.asarray(vfi.prompt(fx["dir"])["input_ids"], np.int32)
    acts, t = fx["acts"], len(fx["imgs"])
    settings = fx["manifest"]["settings"]
    print({"fixture": fx["dir"].name, "frames": t, "size": _video_size(fx), **settings})
    assert t == settings["video"]["num_frames"] == acts["in_gt_masks"].shape[0]
    assert acts["in_gt_masks"].shape[1:] == _video_size(fx)
    # the flex sampling kept every frame in order (T_vlm = T_seg = T), so predict sees them all
    np.testing.assert_array_equal(acts["eval_frame_ids_for_sam"], np.arange(t))
    np.testing.assert_array_equal(
        np.stack([np.asarray(im) for im in fx["imgs"]]), acts["in_frames_rgb"]
    )
    prompt = vfi.prompt(fx["dir"])
    assert int((ids == prompt["seg_token_id"]).sum()) == virst.NUM_SEG_TOKENS
    anchors = au.eval_anchors_np(t)
    print({"ours": anchors.tolist(), "eval_cond_idx": acts["eval_cond_idx"].tolist()})
    for prefix in ("eval_", "isf_"):
        np.testing.assert_array_equal(anchors, acts[f"{prefix}cond_idx"])
        np.testing.assert_array_equal(anchors, acts[f"{prefix}anchor_video_frames"])


@pytest.mark.parametrize("isf", [False, True], ids=["eval", "isf"])
def test_predict_video_res_logits(fx, isf):
    """`Virst.predict` from the raw inputs == `{eval,isf}_video_res_logits` per frame."""
    vlm, stf, prop, ids = _inputs(fx)
    model = vfi.official_model(fx["dir"], fx["state"], initial_seg_fusion=isf)
    out = model.predict(vlm, stf, prop, ids, video_size=_video_size(fx), chunk_size=5)
    ref = fx["acts"]["isf_video_res_logits" if isf else "eval_video_res_logits"]
    assert out.shape == ref.shape == (vlm.shape[0], *_video_size(fx))
    per_frame = [rel_err(o, r) for o, r in zip(out, ref, strict=True)]
    agree = float(((out > 0) == (ref > 0)).mean())
    print(
        {
            "fixture": fx["dir"].name,
            "path": "isf" if isf else "eval",
            "max_rel": f"{max(per_frame):.2e}",
            "per_frame_rel": [f"{e:.1e}" for e in per_frame],
            "max_abs": f"{float(np.abs(out - ref).max()):.2e}",
            "mask_agreement": agree,
        }
    )
    assert max(per_frame) < LOGITS_REL_TOL, per_frame
    assert agree > SIGN_AGREEMENT


@pytest.mark.parametrize("windows", [False, True], ids=["train", "trainw"])
def test_training_losses(fx, windows):
    """`virst_train_forward` (ISF on, the fixture's anchors, dropout-free) == `train_` /
    `trainw_` losses, and the per-frame SAM2 outputs of the rollout."""
    acts, prefix = fx["acts"], "trainw_" if windows else "train_"
    imgs, p = fx["imgs"], vfi.prompt(fx["dir"])
    model = vfi.official_model(fx["dir"], fx["state"], initial_seg_fusion=True)
    batch = dict(
        vlm_frames=jnp.asarray(vfi.vlm_view(imgs))[None],
        stf_frames=jnp.asarray(vfi.stf_view(imgs))[None],
        input_ids=jnp.asarray(p["input_ids"], jnp.int32)[None],
        labels=jnp.asarray(p["labels"], jnp.int32)[None],
        gt_masks=jnp.asarray(vfi.gt_masks_1024(acts))[None],
        anchors=jnp.asarray(acts[f"{prefix}cond_idx"], jnp.int32)[None],
    )
    cfg = au.AnchorConfig(use_cond_frames=windows)
    forward = nnx.jit(lambda m, b: virst_train.virst_train_forward(m, **b, anchor_cfg=cfg))
    got, out = forward(model, batch)
    n = int(out.valid.sum())
    frames = np.asarray(out.frames[0, :n])
    np.testing.assert_array_equal(frames, acts[f"{prefix}keyframe_indices"])
    errors = {k: rel_err(got[k], acts[f"{prefix}{k}"]) for k in LOSS_NAMES}
    errors["ious"] = rel_err(out.ious[0, :n], acts[f"{prefix}sam_ious"][:, 0])
    errors["object_scores"] = rel_err(
        out.object_score_logits[0, :n], acts[f"{prefix}sam_object_score_logits"][:, 0]
    )
    low = np.asarray(out.low_res_masks[0, :n, 0])
    if windows:
        idx = acts["trainw_sam_low_res_logits_noncond_idx"]
        errors["low_res_noncond"] = rel_err(low[idx], acts["trainw_sam_low_res_logits_noncond"])
        errors["low_res_mean"] = rel_err(low.mean((1, 2)), acts["trainw_sam_low_res_logits_mean"])
    else:
        errors["low_res"] = rel_err(low, acts["train_sam_low_res_logits"])
    print({"fixture": fx["dir"].name, "run": prefix, **{k: f"{v:.1e}" for k, v in errors.items()}})
    assert max(errors.values()) < LOSS_REL_TOL, errors
