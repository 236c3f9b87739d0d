"""Mask losses on padded `[b, t, h, w]` logits with a `valid: bool[b, t]` mask of supervised
(row, frame) pairs: BCE, Dice (LISA form), IoU regression, SAM2 object-score BCE.

Ports of `dice_loss` / `sigmoid_ce_loss` (LISA, as VIRST and GLUS use them; AIDASLab/VIRST @
954276f) and of VIRST's IoU / occupancy terms (shared/reference/virst.md §6.1). The official code
divides each summed term by the number of supervised pairs plus 1e-8; here padded pairs add
nothing to the sums nor to the count, and get zero gradient (R5). Everything is float32 (R14).
Which of them a method uses, with which weights, is the method's (`methods/*/losses.py`).
"""

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float

from jax_refvos.model.sam2.resize import resize_bilinear

# Added to the count of supervised (row, frame) pairs, as `count + 1e-8` in VIRST.
COUNT_EPS = 1e-8


def frame_mean(per_frame: Float[Array, "b t"], valid: Bool[Array, "b t"]) -> Float[Array, ""]:
    """Sum over valid (conversation, frame) pairs / (their count + 1e-8), as VIRST averages."""
    total = jnp.sum(jnp.where(valid, per_frame, 0.0))
    return total / (jnp.sum(valid).astype(jnp.float32) + COUNT_EPS)


def bce_with_logits(x: Float[Array, "*s"], y: Float[Array, "*s"]) -> Float[Array, "*s"]:
    """`F.binary_cross_entropy_with_logits(x, y, reduction="none")`, the stable form."""
    return jnp.maximum(x, 0.0) - x * y + jnp.log1p(jnp.exp(-jnp.abs(x)))


def sigmoid_bce(
    mask_logits: Float[Array, "b t h w"],
    targets: Float[Array, "b t h w"],
    valid: Bool[Array, "b t"],
) -> Float[Array, ""]:
    """Per-pixel BCE-with-logits, mean over pixels, then mean over valid frames.

    Port of VIRST `sigmoid_ce_loss(num_masks=1)`, accumulated per frame and divided by the count.
    """
    per_pixel = bce_with_logits(mask_logits.astype(jnp.float32), targets.astype(jnp.float32))
    return frame_mean(jnp.mean(per_pixel, axis=(-2, -1)), valid)


def dice_loss(
    mask_logits: Float[Array, "b t h w"],
    targets: Float[Array, "b t h w"],
    valid: Bool[Array, "b t"],
    *,
    scale: float = 1000.0,
    eps: float = 1e-6,
) -> Float[Array, ""]:
    """Soft Dice on sigmoid probabilities (LISA form), mean over valid frames.

    Port of VIRST `dice_loss`: 1 - (2 sum(p/scale * g) + eps) / (sum(p/scale) + sum(g/scale) + eps)
    per frame. The scale keeps the sums of 1024^2 pixels small and weakens eps accordingly.
    """
    probs = jax.nn.sigmoid(mask_logits.astype(jnp.float32)) / scale
    targets = targets.astype(jnp.float32)
    numerator = 2.0 * jnp.sum(probs * targets, axis=(-2, -1))
    denominator = jnp.sum(probs, axis=(-2, -1)) + jnp.sum(targets / scale, axis=(-2, -1))
    return frame_mean(1.0 - (numerator + eps) / (denominator + eps), valid)


def mask_iou(
    mask_logits: Float[Array, "b t h w"], targets: Float[Array, "b t h w"]
) -> Float[Array, "b t"]:
    """IoU of the binarised prediction (sigmoid > 0.5) with the GT (> 0.5); no gradient.

    As VIRST: intersection / (union + 1e-6), so an empty prediction of an empty GT gives 0.
    """
    # sigmoid(x) > 0.5, not x > 0: they differ for |x| below ~1e-7, where float32 sigmoid is 0.5.
    pred = (jax.nn.sigmoid(mask_logits.astype(jnp.float32)) > 0.5).astype(jnp.float32)
    gt = (targets > 0.5).astype(jnp.float32)
    intersection = jnp.sum(pred * gt, axis=(-2, -1))
    union = jnp.sum(pred, axis=(-2, -1)) + jnp.sum(gt, axis=(-2, -1)) - intersection
    # VIRST takes `.item()` of the IoU: it is a constant target.
    return jax.lax.stop_gradient(intersection / (union + 1e-6))


def iou_l1_loss(
    pred_iou: Float[Array, "b t"],
    mask_logits: Float[Array, "b t h w"],
    targets: Float[Array, "b t h w"],
    valid: Bool[Array, "b t"],
) -> Float[Array, ""]:
    """L1 between the decoder's IoU prediction and the true IoU of its mask, mean over frames.

    Args:
      pred_iou: the IoU head's output for the supervised mask token (VIRST trains with multimask
        off, so token 0; it takes `ious.max()` over tokens, the same thing for one token).
      mask_logits: the mask logits the losses see (1024^2 in VIRST).
      targets: binary GT masks.
      valid: supervised (conversation, frame) pairs.
    """
    real_iou = mask_iou(mask_logits, targets)
    return frame_mean(jnp.abs(real_iou - pred_iou.astype(jnp.float32)), valid)


def object_score_bce(
    object_score_logits: Float[Array, "b t"],
    targets: Float[Array, "b t h w"],
    valid: Bool[Array, "b t"],
) -> Float[Array, ""]:
    """Occupancy loss: BCE-with-logits of SAM2's object score vs 1[GT mask non-empty]."""
    present = (jnp.sum(targets.astype(jnp.float32), axis=(-2, -1)) > 0).astype(jnp.float32)
    per_frame = bce_with_logits(object_score_logits.astype(jnp.float32), present)
    return frame_mean(per_frame, valid)


def upsample_mask_logits(
    low_res_logits: Float[Array, "b t h w"], size: tuple[int, int]
) -> Float[Array, "b t h2 w2"]:
    """SAM2's `pred_masks_high_res`: bilinear (align_corners=False, no antialias) to `size`.

    VIRST computes its mask losses on these (`_forward_sam_heads`: 256^2 -> image_size 1024^2).
    """
    return resize_bilinear(low_res_logits.astype(jnp.float32), size)
