"""SAM 2 training pieces: click sampling, absent points, the trainer's losses, the forward.

The loss is checked against a NumPy transcription of `training/loss_fns.py` (facebookresearch/
sam2; the PyPI `sam2` package does not ship `training/`).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jax_refvos.losses.multimask import multimask_terms
from jax_refvos.methods.sam2.config import tiny_sam2
from jax_refvos.methods.sam2.train_forward import (
    TrainSettings,
    sam2_loss,
    sam2_train_forward,
    sample_points_from_errors,
)
from jax_refvos.model.sam2.sam2_model import ABSENT_POINT, Sam2Model

S = 64


@pytest.fixture(scope="module")
def model():
    return Sam2Model(tiny_sam2(S, 32), rngs=nnx.Rngs(0))


def test_clicks_come_from_the_error_regions():
    gt = np.zeros((16, 16), bool)
    gt[2:8, 2:8] = True
    pred = np.zeros((16, 16), bool)
    pred[2:8, 2:6] = True  # misses columns 6, 7 (false negatives)
    pred[12:14, 12:14] = True  # false positives
    fn, fp = gt & ~pred, pred & ~gt
    sample = jax.jit(jax.vmap(sample_points_from_errors, in_axes=(0, None, None)))
    keys = jax.random.split(jax.random.key(0), 200)
    pts, labels = map(np.asarray, sample(keys, jnp.asarray(gt), jnp.asarray(pred)))
    x, y = pts[:, 0].astype(int), pts[:, 1].astype(int)
    assert (fn[y, x] == (labels == 1)).all() and (fp[y, x] == (labels == 0)).all()
    assert 0.6 < labels.mean() < 0.95  # 12 FN vs 4 FP pixels: uniform over the errors
    pts, labels = map(np.asarray, sample(keys, jnp.asarray(gt), jnp.asarray(gt)))
    x, y = pts[:, 0].astype(int), pts[:, 1].astype(int)
    assert (labels == 0).all() and not gt[y, x].any()  # all correct: a background click


def test_absent_points_equal_leaving_them_out(model):
    rng = np.random.default_rng(0)
    feats = model.forward_image(jnp.asarray(rng.normal(size=(2, S, S, 3)), jnp.float32))
    pts = jnp.asarray(rng.uniform(0, S, (2, 3, 2)), jnp.float32)
    labels = jnp.asarray([[1, 0, 1], [1, 1, 0]], jnp.int32)
    padded_pts = jnp.concatenate([pts[:, :1], pts[:, 1:] * 0 + 7.0, pts[:, 1:]], 1)
    padded_labels = jnp.concatenate(
        [labels[:, :1], jnp.full((2, 2), ABSENT_POINT), labels[:, 1:]], 1
    )
    for multi in (True, False):
        flags = jnp.full((2,), multi)
        ref = model.forward_sam_heads(
            feats.pix, feats.high_res, point_coords=pts, point_labels=labels,
            multimask_output=flags,
        )  # fmt: skip
        got = model.forward_sam_heads(
            feats.pix, feats.high_res, point_coords=padded_pts, point_labels=padded_labels,
            multimask_output=flags,
        )  # fmt: skip
        for name in ("candidate_masks", "candidate_ious", "obj_ptr", "object_score_logits"):
            np.testing.assert_allclose(getattr(got, name), getattr(ref, name), atol=2e-5)
        # the per-row path equals the static one (training mode)
        static = model.forward_sam_heads(
            feats.pix, feats.high_res, point_coords=pts, point_labels=labels,
            multimask_output=multi, training=True,
        )  # fmt: skip
        np.testing.assert_allclose(got.low_res_masks, static.low_res_masks, atol=2e-5)
        np.testing.assert_allclose(got.obj_ptr, static.obj_ptr, atol=2e-5)


def _reference_terms(logits, valid, ious, score, gt, weight, wm=20.0, wd=1.0):
    """`MultiStepMultiMasksAndIous._update_losses` for one object (num_objects = 1)."""
    sig = 1 / (1 + np.exp(-logits))
    t = np.broadcast_to(gt[None].astype(np.float64), logits.shape)
    ce = np.maximum(logits, 0) - logits * t + np.log1p(np.exp(-np.abs(logits)))
    p_t = sig * t + (1 - sig) * (1 - t)
    focal = ((0.25 * t + 0.75 * (1 - t)) * ce * (1 - p_t) ** 2).reshape(3, -1).mean(-1)
    dice = 1 - (2 * (sig * t).reshape(3, -1).sum(-1) + 1) / (
        sig.reshape(3, -1).sum(-1) + t.reshape(3, -1).sum(-1) + 1
    )
    pred = logits > 0
    inter = (pred & gt[None]).reshape(3, -1).sum(-1)
    union = np.maximum((pred | gt[None]).reshape(3, -1).sum(-1), 1)
    iou = np.abs(ious - inter / union)
    m = valid.sum()
    focal, dice, iou = focal[:m], dice[:m], iou[:m]  # valid candidates come first
    best = np.argmin(wm * focal + wd * dice)
    present = float(gt.any())
    obj = max(score, 0) - score * present + np.log1p(np.exp(-abs(score)))
    return (
        focal[best] * present * weight,
        dice[best] * present * weight,
        iou.mean() * present * weight,
        obj * weight,
    )


def test_multimask_terms_match_the_official_loss():
    rng = np.random.default_rng(1)
    b = 4
    logits = rng.normal(0, 3, (b, 3, 16, 16)).astype(np.float32)
    valid = np.array([[1, 1, 1], [1, 0, 0], [1, 1, 1], [1, 0, 0]], bool)
    ious = rng.uniform(size=(b, 3)).astype(np.float32)
    score = rng.normal(size=b).astype(np.float32)
    gt = rng.uniform(size=(b, 16, 16)) > 0.6
    gt[2] = False  # an absent object: only the object-score term counts
    weight = np.array([1.0, 1.0, 1.0, 0.0], np.float32)
    got = multimask_terms(
        jnp.asarray(logits), jnp.asarray(valid), jnp.asarray(ious), jnp.asarray(score),
        jnp.asarray(gt), jnp.asarray(weight), mask_weight=20.0, dice_weight=1.0,
    )  # fmt: skip
    for i in range(b):
        ref = _reference_terms(
            logits[i].astype(np.float64), valid[i], ious[i], float(score[i]), gt[i], weight[i]
        )
        np.testing.assert_allclose(
            [got.mask[i], got.dice[i], got.iou[i], got.obj[i]], ref, rtol=2e-5, atol=1e-7
        )


def _batch(rng, b=2, t=3, o=2):
    masks = np.zeros((b, o, t, S, S), bool)
    for v in range(b):
        for j in range(o):
            for f in range(t):
                y, x = 8 + 4 * f + 10 * j, 6 + 3 * f + 12 * v
                masks[v, j, f, y : y + 14, x : x + 12] = True
    labels = np.full((b, o, 2, 2), ABSENT_POINT, np.int32)
    labels[0, :, 0] = [1, ABSENT_POINT]  # video 0: one click on frame 0
    labels[1, :, :] = [2, 3]  # video 1 (mask prompts): unused
    return {
        "frames": rng.integers(0, 256, (b, t, S, S, 3), dtype=np.uint8),
        "frame_valid": np.ones((b, t), bool),
        "masks": masks,
        "obj_valid": np.array([[True, True], [True, False]]),
        "use_pt": np.array([True, False]),
        "init_frames": np.array([[0, 0], [0, 2]], np.int32),
        "init_valid": np.array([[True, False], [True, True]]),
        "correct_frame": np.array([1, -1], np.int32),
        "init_points": rng.uniform(8, 40, (b, o, 2, 2, 2)).astype(np.float32),
        "init_labels": labels,
        "init_multimask": np.array([[[True, False]] * 2, [[False, False]] * 2]),
        "corr_seed": np.array([[1, 2], [3, 4]], np.uint32),
    }


@pytest.mark.slow  # one compile of the whole forward and backward: minutes on 2 cores
def test_train_forward_trains_every_part_and_ignores_padding(model):
    s = TrainSettings(num_correction_points=2)
    batch = _batch(np.random.default_rng(0))
    graphdef, state = nnx.split(model)

    @jax.jit
    def loss_and_grad(state, batch):
        def f(state):
            out = sam2_train_forward(nnx.merge(graphdef, state), batch, s)
            return sam2_loss(out, batch["obj_valid"].reshape(-1), s)

        return jax.value_and_grad(f, has_aux=True)(state)

    (loss, metrics), grads = loss_and_grad(state, batch)
    assert np.isfinite(float(loss)) and float(loss) > 0
    assert all(np.isfinite(float(v)) for v in metrics.values())
    flat = {"/".join(map(str, p)): np.abs(np.asarray(v)).sum() for p, v in nnx.to_flat_state(grads)}
    for part in ("image_encoder", "memory_attention", "memory_encoder", "sam_mask_decoder",
                 "sam_prompt_encoder", "obj_ptr_proj", "maskmem_tpos_enc"):  # fmt: skip
        assert any(v > 0 for k, v in flat.items() if k.startswith(part)), part
    # The padded object (video 1, slot 1) takes no part: its masks may be anything.
    other = dict(batch, masks=batch["masks"].copy())
    other["masks"][1, 1] = ~other["masks"][1, 1]
    (loss2, _), _ = loss_and_grad(state, other)
    assert float(loss2) == float(loss)


@pytest.mark.slow  # two compiles of the forward: minutes on 2 cores
def test_unrolled_tracking_equals_the_loop(model, monkeypatch):
    """benchmarks/train_step.py counts FLOPs with the tracking and click scans unrolled: the same
    arithmetic."""
    from jax_refvos.methods.sam2 import train_forward as sam2_train

    s = TrainSettings(num_correction_points=2)
    batch = jax.tree.map(jnp.asarray, _batch(np.random.default_rng(1)))

    def loss(unroll):
        monkeypatch.setattr(sam2_train, "SCAN_UNROLL", unroll)
        fn = jax.jit(
            lambda b: sam2_loss(sam2_train_forward(model, b, s), b["obj_valid"].reshape(-1), s)[0]
        )
        return float(fn(batch))

    looped, unrolled = loss(1), loss(True)
    assert np.isfinite(looped) and abs(looped - unrolled) <= 1e-5 * abs(looped)
