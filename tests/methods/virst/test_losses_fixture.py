"""VIRST training losses (`jax_refvos.losses`) against the official code's values, plus units.

The fixture (`shared/fixtures/virst_tiny_dev`, README "Training") stores the official
`VirstForCausalLM.forward` losses of two training forwards (eval-script weights: ce 1, bce 1,
dice 1, iou 0.05 counted twice, occ 0.05) and the SAM2 predictions they were computed from:
- `train_`: anchors [1, 3, 8] only; all three low-res logits are stored, so every loss is rebuilt.
- `trainw_`: all 12 frames; low-res logits only for frames 0 and 2 (frames 1, 3, 8 equal the
  `train_` ones), so bce / dice / iou (7 frames missing) cannot be rebuilt. Rebuilt: occupancy
  (object scores of all 12 frames), CE, and the per-frame upsampled sigmoid means of the 5 known
  frames (checks the 256 -> 1024 upsample the mask losses see).
The full LM logits are not stored; the CE goes through a 3-word vocabulary whose logsumexp and
target logit equal the stored `isf_lm_logsumexp` / `isf_lm_next_label_logit` at every position
(README: `ce_loss` is their mean over targets that are not -100 and not `[SEG]`).

Errors are relative, |Δ| / |ref|, float32; bound REL_TOL = 1e-4. Measured: `train_` ce 8.0e-8,
bce 5.0e-7, dice 0, iou 0, occ 0, mask_loss 2.1e-7, loss 7.0e-8; `trainw_` occ 0, ce 8.0e-8.
The data tell the upsample apart: nearest or cubic instead of bilinear moves bce by 5e-4 / 2e-4
and iou by 1e-2 / 5e-3, and counting the IoU term once moves the total by 2e-3.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from shared_paths import VIRST_FIXTURE as FIXTURE

from jax_refvos import losses
from jax_refvos.methods.virst import losses as vl

REL_TOL = 1e-4
SEG_ID = 151646
needs_fixture = pytest.mark.skipif(not FIXTURE.exists(), reason="shared VIRST fixture not present")


def _rel(got, want) -> float:
    return float(abs(float(got) - float(want)) / abs(float(want)))


@pytest.fixture(scope="module")
def fx():
    return np.load(FIXTURE / "activations.npz")


@pytest.fixture(scope="module")
def gt_1024(fx):
    return np.unpackbits(fx["in_gt_masks_1024_packbits"], axis=-1).astype(np.float32)


def _lm_inputs_from_fixture(fx):
    """[1, 302, 3] logits and [1, 302] labels with the fixture's per-position CE terms.

    Word 0 is every supervised target, word 2 plays `[SEG]`; the logits at position t are
    (target logit, b, -inf) with b chosen so that logsumexp equals the stored one.
    """
    labels = fx["eval_llm_labels_spliced"]  # the `isf_` run omits it: identical
    next_label = fx["isf_lm_next_label"]
    np.testing.assert_array_equal(next_label[:-1], labels[1:])  # stored arrays are the shift
    lse = fx["isf_lm_logsumexp"].astype(np.float64)
    tgt = fx["isf_lm_next_label_logit"].astype(np.float64)
    other = lse + np.log1p(-np.exp(tgt - lse))  # log(exp(lse) - exp(tgt))
    logits = np.stack([tgt, other, np.full_like(tgt, -np.inf)], -1).astype(np.float32)
    small = np.where(labels == SEG_ID, 2, np.where(labels == losses.IGNORE_INDEX, -100, 0))
    return jnp.asarray(logits[None]), jnp.asarray(small[None])


@needs_fixture
def test_train_losses_match_official(fx, gt_1024):
    frames = fx["train_keyframe_indices"]
    np.testing.assert_array_equal(frames, [1, 3, 8])
    logits, labels = _lm_inputs_from_fixture(fx)
    got = jax.jit(vl.virst_losses, static_argnums=0, static_argnames="seg_token_id")(
        vl.VirstLossConfig(),
        lm_logits=logits,
        labels=labels,
        seg_token_id=2,
        low_res_mask_logits=jnp.asarray(fx["train_sam_low_res_logits"][None]),
        gt_masks=jnp.asarray(gt_1024[frames][None]),
        pred_iou=jnp.asarray(fx["train_sam_ious"][:, 0][None]),
        object_score_logits=jnp.asarray(fx["train_sam_object_score_logits"][:, 0][None]),
        valid=jnp.ones((1, 3), bool),
    )
    errors = {k: _rel(got[k], fx[f"train_{k}"]) for k in got}
    print("train_ relative errors:", errors)
    assert max(errors.values()) < REL_TOL, errors


@needs_fixture
def test_trainw_occupancy_and_ce_match_official(fx, gt_1024):
    np.testing.assert_array_equal(fx["trainw_keyframe_indices"], np.arange(12))
    cfg = vl.VirstLossConfig()
    occ = cfg.occ_weight * losses.object_score_bce(
        jnp.asarray(fx["trainw_sam_object_score_logits"][:, 0][None]),
        jnp.asarray(gt_1024[None]),
        jnp.ones((1, 12), bool),
    )
    logits, labels = _lm_inputs_from_fixture(fx)
    ce = losses.lm_cross_entropy(logits, labels, ignore_ids=(2,))
    errors = {
        "occ_loss": _rel(occ, fx["trainw_occ_loss"]),
        "ce_loss": _rel(ce, fx["trainw_ce_loss"]),
    }
    print("trainw_ relative errors:", errors)
    assert max(errors.values()) < REL_TOL, errors


@needs_fixture
def test_trainw_known_frames_upsample_like_official(fx):
    # Frames 0, 2 (stored non-cond logits) and 1, 3, 8 (prompted; identical to `train_`).
    idx = list(fx["trainw_sam_low_res_logits_noncond_idx"])
    low = np.concatenate([fx["trainw_sam_low_res_logits_noncond"], fx["train_sam_low_res_logits"]])
    frames = idx + [1, 3, 8]
    np.testing.assert_allclose(
        low.mean((1, 2)), fx["trainw_sam_low_res_logits_mean"][frames], rtol=1e-5
    )
    probs = jax.nn.sigmoid(losses.upsample_mask_logits(jnp.asarray(low[None]), (1024, 1024)))
    np.testing.assert_allclose(
        np.asarray(probs.mean((-2, -1)))[0], fx["trainw_pred_mask_sigmoid_mean"][frames], rtol=1e-6
    )


def _np_ce(logits, labels, ignore):
    total, count = 0.0, 0
    for b in range(labels.shape[0]):
        for i in range(labels.shape[1] - 1):
            y = labels[b, i + 1]
            if y == -100 or y in ignore:
                continue
            row = logits[b, i].astype(np.float64)
            total += np.log(np.exp(row - row.max()).sum()) + row.max() - row[y]
            count += 1
    return total / count


def test_lm_cross_entropy_matches_numpy_and_masks_seg():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 7, 11)).astype(np.float32) * 3
    labels = np.array([[-100, 3, 5, 10, 10, 1, -100], [-100, -100, 10, 4, 0, -100, -100]])
    got = losses.lm_cross_entropy(jnp.asarray(logits), jnp.asarray(labels), ignore_ids=(10,))
    np.testing.assert_allclose(got, _np_ce(logits, labels, (10,)), rtol=1e-6)
    unmasked = losses.lm_cross_entropy(jnp.asarray(logits), jnp.asarray(labels))
    np.testing.assert_allclose(unmasked, _np_ce(logits, labels, ()), rtol=1e-6)
    assert abs(float(got) - float(unmasked)) > 1e-3
    # Logits that predict [SEG] (targets at 3, 4 / 2) or predict nothing (the last) are unused.
    bumped = logits.copy()
    bumped[0, [2, 3, 6]] += 5.0
    bumped[1, 1] += 5.0
    again = losses.lm_cross_entropy(jnp.asarray(bumped), jnp.asarray(labels), ignore_ids=(10,))
    np.testing.assert_allclose(again, got, rtol=1e-6)
    none = losses.lm_cross_entropy(jnp.asarray(logits), jnp.full((2, 7), -100))
    assert float(none) == 0.0


def _random_masks(rng, b, t, h, w):
    logits = rng.normal(size=(b, t, h, w)).astype(np.float32) * 2
    targets = (rng.random((b, t, h, w)) < 0.3).astype(np.float32)
    return logits, targets


def test_mask_losses_match_numpy():
    rng = np.random.default_rng(1)
    logits, targets = _random_masks(rng, 2, 3, 5, 7)
    targets[1, 2] = 0.0  # one empty GT: occupancy target 0
    valid = np.array([[True, False, True], [True, True, True]])
    x, y = logits.astype(np.float64), targets.astype(np.float64)
    p = 1 / (1 + np.exp(-x))
    bce = (-(y * np.log(p) + (1 - y) * np.log(1 - p))).mean((2, 3))
    dice = 1 - (2 * (p / 1000 * y).sum((2, 3)) + 1e-6) / (
        (p / 1000).sum((2, 3)) + (y / 1000).sum((2, 3)) + 1e-6
    )
    inter = ((p > 0.5) & (y > 0.5)).sum((2, 3))
    iou = inter / ((p > 0.5).sum((2, 3)) + y.sum((2, 3)) - inter + 1e-6)
    pred_iou = rng.random((2, 3)).astype(np.float32)
    score = rng.normal(size=(2, 3)).astype(np.float32)
    occ_p = 1 / (1 + np.exp(-score.astype(np.float64)))
    present = y.sum((2, 3)) > 0
    occ = -np.where(present, np.log(occ_p), np.log(1 - occ_p))

    def mean(v):
        return v[valid].sum() / valid.sum()

    args = (jnp.asarray(logits), jnp.asarray(targets), jnp.asarray(valid))
    np.testing.assert_allclose(losses.sigmoid_bce(*args), mean(bce), rtol=1e-6)
    np.testing.assert_allclose(losses.dice_loss(*args), mean(dice), rtol=1e-6)
    np.testing.assert_allclose(
        losses.iou_l1_loss(jnp.asarray(pred_iou), *args), mean(np.abs(iou - pred_iou)), rtol=1e-6
    )
    np.testing.assert_allclose(
        losses.object_score_bce(jnp.asarray(score), *args[1:]), mean(occ), rtol=1e-6
    )


def test_mask_iou_hand_example():
    logits = jnp.array([[[[1.0, 1.0], [-1.0, 1e-9]]]])  # sigmoid(1e-9) == 0.5: not foreground
    targets = jnp.array([[[[1.0, 0.0], [1.0, 1.0]]]])
    np.testing.assert_allclose(losses.mask_iou(logits, targets), [[1 / (4 + 1e-6)]], rtol=1e-6)
    empty = losses.mask_iou(jnp.full((1, 1, 2, 2), -1.0), jnp.zeros((1, 1, 2, 2)))
    assert float(empty[0, 0]) == 0.0


def _all_losses(cfg, low, gt, pred_iou, score, valid, lm_logits, labels):
    return vl.virst_losses(
        cfg,
        lm_logits=lm_logits,
        labels=labels,
        seg_token_id=10,
        low_res_mask_logits=low,
        gt_masks=gt,
        pred_iou=pred_iou,
        object_score_logits=score,
        valid=valid,
    )


def _small_batch(rng, t):
    low, _ = _random_masks(rng, 2, t, 4, 6)
    gt = (rng.random((2, t, 16, 24)) < 0.3).astype(np.float32)
    pred_iou = rng.random((2, t)).astype(np.float32)
    score = rng.normal(size=(2, t)).astype(np.float32)
    lm_logits = rng.normal(size=(2, 7, 11)).astype(np.float32)
    labels = np.array([[-100, 3, 5, 10, 10, 1, -100], [-100, -100, 10, 4, 0, 2, -100]])
    return low, gt, pred_iou, score, lm_logits, labels


def test_padding_frames_contribute_nothing_and_gradients_are_finite():
    rng = np.random.default_rng(2)
    low, gt, pred_iou, score, lm_logits, labels = _small_batch(rng, 3)
    valid = np.array([[True, True, False], [True, False, False]])
    cfg = vl.VirstLossConfig()
    # Same batch padded to 5 frames with garbage in the padding and in the invalid frames.
    pad = 2

    def padded(a, fill):
        widths = [(0, 0), (0, pad)] + [(0, 0)] * (a.ndim - 2)
        out = np.pad(a, widths, constant_values=fill)
        out[~np.pad(valid, [(0, 0), (0, pad)])] = fill
        return out

    base = _all_losses(cfg, low, gt, pred_iou, score, valid, lm_logits, labels)
    valid_p = np.pad(valid, [(0, 0), (0, pad)])
    big = _all_losses(
        cfg,
        padded(low, 37.0),
        padded(gt, 1.0),
        padded(pred_iou, 9.0),
        padded(score, -40.0),
        valid_p,
        lm_logits,
        labels,
    )
    for k in base:
        np.testing.assert_allclose(big[k], base[k], rtol=1e-6, err_msg=k)

    def total(low, pred_iou, score, lm_logits):
        out = _all_losses(cfg, low, padded(gt, 1.0), pred_iou, score, valid_p, lm_logits, labels)
        return out["loss"]

    grads = jax.grad(total, argnums=(0, 1, 2, 3))(
        padded(low, 37.0), padded(pred_iou, 9.0), padded(score, -40.0), lm_logits
    )
    for g in grads:
        assert np.all(np.isfinite(g))
    for g in grads[:3]:
        assert np.all(np.asarray(g)[~valid_p] == 0.0)
        assert np.any(np.asarray(g)[valid_p] != 0.0)
    # The true IoU is a constant: the IoU term's gradient reaches only pred_iou, as
    # 2 (counted twice) * w_iou * sign / count.
    g_iou = jax.grad(total, argnums=1)(
        padded(low, 37.0), padded(pred_iou, 9.0), padded(score, -40.0), lm_logits
    )
    assert np.allclose(np.abs(np.asarray(g_iou)[valid_p]), 2 * cfg.iou_weight / valid.sum())


def test_iou_counted_twice_switch_and_weights():
    rng = np.random.default_rng(3)
    low, gt, pred_iou, score, lm_logits, labels = _small_batch(rng, 3)
    valid = np.ones((2, 3), bool)
    twice = _all_losses(vl.VirstLossConfig(), low, gt, pred_iou, score, valid, lm_logits, labels)
    once = _all_losses(
        vl.VirstLossConfig(iou_counted_twice=False),
        low,
        gt,
        pred_iou,
        score,
        valid,
        lm_logits,
        labels,
    )
    parts = ("ce_loss", "mask_bce_loss", "mask_dice_loss", "iou_loss", "occ_loss")
    np.testing.assert_allclose(once["loss"], sum(once[k] for k in parts), rtol=1e-6)
    np.testing.assert_allclose(twice["loss"], once["loss"] + twice["iou_loss"], rtol=1e-6)
    assert float(twice["iou_loss"]) > 0
    paper = vl.VirstLossConfig(bce_weight=2.0, dice_weight=0.5)  # utils/argument.py defaults
    alt = _all_losses(paper, low, gt, pred_iou, score, valid, lm_logits, labels)
    np.testing.assert_allclose(alt["mask_bce_loss"], 2 * twice["mask_bce_loss"], rtol=1e-6)
    np.testing.assert_allclose(alt["mask_dice_loss"], 0.5 * twice["mask_dice_loss"], rtol=1e-6)
