"""VIRST training forward (`methods/virst/train_forward.py`) vs the official `train_` runs.

The fixture (`shared/fixtures/virst_tiny_dev`, README "The runs", "Training") ran
`VirstForCausalLM.forward` in train mode with every dropout off, ISF on, anchors [1, 3, 8] and the
eval-script loss weights: `train_` with `use_cond_frames=False` (SAM2 sees the 3 anchors only),
`trainw_` with it True (the anchors' windows cover all 12 frames, processed 1, 0, 2, ..., 11 with
training-mode memory: fp32 memories, pointers of past AND future conditioning frames).

Here everything starts from the raw inputs (JPEGs -> bf16 STF / VLM views, `prompt.json` ids and
labels, the 1024^2 GT), through our LLM, SegPrompter and SAM2 rollout, to the loss dict.
Errors are relative, |Δ| / |ref| (max|Δ| / max|ref| for arrays), float32. Bounds: losses 1e-4
(the issue's target; measured <= 1.4e-7); per-frame SAM outputs 2e-5 (measured <= 2.7e-6; the
memory rules move the tracked logits by 1.2e-4 or more, see the mutation test).
"""

import functools

import jax.numpy as jnp
import numpy as np
import pytest
import virst_fixture_inputs as vfi
from flax import nnx
from shared_paths import VIRST_FIXTURE as FIXTURE
from virst_fixture_inputs import rel_err

from jax_refvos.methods.virst import anchor_updater as au
from jax_refvos.methods.virst import train_forward as virst_train
from jax_refvos.model.sam2 import memory_bank as mb

pytestmark = pytest.mark.skipif(not FIXTURE.exists(), reason="VIRST tiny fixture not present")

LOSS_REL_TOL = 1e-4
ARRAY_REL_TOL = 2e-5
LOSS_NAMES = ("loss", "ce_loss", "mask_bce_loss", "mask_dice_loss", "iou_loss", "occ_loss")


@pytest.fixture(scope="module")
def acts():
    return np.load(FIXTURE / "activations.npz")


@pytest.fixture(scope="module")
def model():
    return vfi.official_model(FIXTURE, vfi.official_state(FIXTURE), initial_seg_fusion=True)


@pytest.fixture(scope="module")
def batch(acts):
    imgs = vfi.jpegs(FIXTURE)
    p = vfi.prompt(FIXTURE)
    return dict(
        vlm_frames=jnp.asarray(vfi.vlm_view(imgs))[None],
        stf_frames=jnp.asarray(vfi.stf_view(imgs))[None],
        input_ids=jnp.asarray(p["input_ids"], jnp.int32)[None],
        labels=jnp.asarray(p["labels"], jnp.int32)[None],
        gt_masks=jnp.asarray(vfi.gt_masks_1024(acts))[None],
        anchors=jnp.asarray(acts["train_cond_idx"], jnp.int32)[None],
    )


@nnx.jit(static_argnames=("anchor_cfg",))
def _forward(model, batch, anchor_cfg):
    return virst_train.virst_train_forward(model, **batch, anchor_cfg=anchor_cfg)


def _check_losses(got: dict, acts, prefix: str) -> None:
    errors = {k: rel_err(got[k], acts[f"{prefix}{k}"]) for k in LOSS_NAMES}
    print(f"{prefix} loss relative errors:", {k: f"{v:.1e}" for k, v in errors.items()})
    assert max(errors.values()) < LOSS_REL_TOL, errors


def test_train_anchors_only(model, batch, acts):
    """`train_`: no windows, so the rollout is the three anchors' prompted heads."""
    anchor_cfg = au.AnchorConfig(use_cond_frames=False)
    got, out = _forward(model, batch, anchor_cfg)
    n = int(out.valid.sum())
    np.testing.assert_array_equal(np.asarray(out.frames[0, :n]), acts["train_keyframe_indices"])
    errors = {
        "low_res": rel_err(out.low_res_masks[0, :n, 0], acts["train_sam_low_res_logits"]),
        "ious": rel_err(out.ious[0, :n], acts["train_sam_ious"][:, 0]),
    }
    print("train_ array errors:", errors)
    assert max(errors.values()) < ARRAY_REL_TOL, errors
    _check_losses(got, acts, "train_")


def test_trainw_rollout_through_memory(model, batch, acts):
    """`trainw_`: all 12 frames; 9 of them tracked from training-mode SAM2 memory."""
    anchor_cfg = au.AnchorConfig(use_cond_frames=True)
    assert anchor_cfg.max_tracked_frames(12) == 9
    got, out = _forward(model, batch, anchor_cfg)
    np.testing.assert_array_equal(np.asarray(out.frames[0]), acts["trainw_keyframe_indices"])
    assert bool(out.valid.all())
    low = np.asarray(out.low_res_masks[0, :, 0])
    noncond = acts["trainw_sam_low_res_logits_noncond_idx"]
    errors = {
        "ious": rel_err(out.ious[0], acts["trainw_sam_ious"][:, 0]),
        "object_scores": rel_err(
            out.object_score_logits[0], acts["trainw_sam_object_score_logits"][:, 0]
        ),
        "low_res_noncond": rel_err(low[noncond], acts["trainw_sam_low_res_logits_noncond"]),
        "low_res_mean": rel_err(low.mean((1, 2)), acts["trainw_sam_low_res_logits_mean"]),
    }
    print("trainw_ array errors:", {k: f"{v:.1e}" for k, v in errors.items()})
    assert max(errors.values()) < ARRAY_REL_TOL, errors
    _check_losses(got, acts, "trainw_")


_MUTATIONS = {
    # eval-mode pointers: frame 0 (and 2) lose the future anchor 1's object pointer
    "pointers_past_only": lambda gather, bank, *a, **k: gather(
        bank, *a, **{**k, "ptrs_in_past_only": True}
    ),
    # every anchor visible from the start, ignoring the processing order
    "all_anchors_at_once": lambda gather, bank, *a, **k: gather(
        bank.replace(cond_valid=bank.cond_frame > mb.NO_FRAME), *a, **k
    ),
}


@pytest.mark.slow  # two more compiles (~1 min each)
@pytest.mark.parametrize("mutation", sorted(_MUTATIONS))
def test_trainw_detects_wrong_memory_rules(model, batch, acts, monkeypatch, mutation):
    """The memory rules matter beyond the tolerance (measured: pointers 1.2e-4, anchors 1.4e-2
    on the stored tracked logits; the losses move by < 1e-6, so only the arrays can tell)."""
    original = mb.gather
    monkeypatch.setattr(mb, "gather", functools.partial(_MUTATIONS[mutation], original))
    forward = nnx.jit(
        lambda m, b: virst_train.virst_train_forward(
            m, **b, anchor_cfg=au.AnchorConfig(use_cond_frames=True)
        )
    )
    _, out = forward(model, batch)
    low = np.asarray(out.low_res_masks[0, :, 0])
    idx = acts["trainw_sam_low_res_logits_noncond_idx"]
    err = rel_err(low[idx], acts["trainw_sam_low_res_logits_noncond"])
    print(mutation, f"{err:.1e}")
    assert err > 3 * ARRAY_REL_TOL


@pytest.mark.slow  # one more compile and run at 16 STF frames (~2 min)
def test_trainw_padded_batch_gives_the_same_losses(model, batch, acts):
    """Static-shape padding as the input pipeline produces it changes nothing: 4 padded VLM
    frames (one UMT clip), 4 padded STF frames (windows may not reach them) and a padding row
    (another expression slot of the same video) with garbage anchors, masks and labels."""
    pad = lambda x, n: jnp.concatenate([x, jnp.full((x.shape[0], n, *x.shape[2:]), 7.0)], 1)
    two = lambda x: jnp.concatenate([x, x[:, ::-1] if x.ndim > 1 else x])
    anchor_cfg = au.AnchorConfig(use_cond_frames=True)
    padded = dict(
        vlm_frames=pad(batch["vlm_frames"], 4),
        stf_frames=pad(batch["stf_frames"], 4),
        vlm_valid=jnp.arange(16)[None] < 12,
        stf_valid=jnp.arange(16)[None] < 12,
        input_ids=two(batch["input_ids"]),
        labels=two(batch["labels"]),
        gt_masks=jnp.concatenate([pad(batch["gt_masks"], 4), 1 - pad(batch["gt_masks"], 4)]),
        anchors=jnp.asarray([[1, 3, 8], [0, 13, 15]], jnp.int32),
        row_video=jnp.zeros((2,), jnp.int32),
        row_valid=jnp.asarray([True, False]),
    )
    forward = nnx.jit(lambda m, b: virst_train.virst_train_forward(m, **b, anchor_cfg=anchor_cfg))
    got, out = forward(model, padded)
    np.testing.assert_array_equal(np.asarray(out.frames[0]), np.r_[np.arange(12), [0] * 4])
    assert np.asarray(out.valid[0]).tolist() == [True] * 12 + [False] * 4
    _check_losses(got, acts, "trainw_")
