"""The SAM 2 trainer's mask losses: focal + Dice on the best of several candidate masks, IoU L1
on all of them, object-score BCE.

Port of `training/loss_fns.py::MultiStepMultiMasksAndIous._update_losses` with `dice_loss`,
`sigmoid_focal_loss` and `iou_loss` (facebookresearch/sam2, the SAM 2.1 training configs:
focal alpha 0.25, gamma 2; `supervise_all_iou`, `iou_use_l1_loss`, `pred_obj_scores` on; the
object score's focal loss with gamma 0 and alpha -1, i.e. plain BCE). One call scores one
decoding step of one frame for a batch of objects; the caller sums over frames and steps (the
reference's `MultiStepMultiMasksAndIous.forward`) and divides by the number of objects.
Padded objects, frames and steps carry `weight = 0`. Everything in float32.
"""

import flax.struct
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float

from jax_refvos.losses.masks import bce_with_logits

FOCAL_ALPHA, FOCAL_GAMMA = 0.25, 2.0


@flax.struct.dataclass
class MaskTerms:
    """Per-object loss terms (already multiplied by the object's weight), float32[b]."""

    mask: Float[Array, "b"]  # focal, of the best candidate
    dice: Float[Array, "b"]
    iou: Float[Array, "b"]  # L1, mean over the valid candidates
    obj: Float[Array, "b"]  # object-score BCE

    def __add__(self, other: "MaskTerms") -> "MaskTerms":
        return jax.tree.map(jnp.add, self, other)


def sigmoid_focal(
    logits: Float[Array, "b m h w"], targets: Float[Array, "b 1 h w"]
) -> Float[Array, "b m"]:
    """`sigmoid_focal_loss(loss_on_multimask=True)` before the division: mean over pixels."""
    x = logits.astype(jnp.float32)
    prob = jax.nn.sigmoid(x)
    ce = bce_with_logits(x, targets)
    p_t = prob * targets + (1 - prob) * (1 - targets)
    loss = ce * (1 - p_t) ** FOCAL_GAMMA
    alpha_t = FOCAL_ALPHA * targets + (1 - FOCAL_ALPHA) * (1 - targets)
    return jnp.mean(alpha_t * loss, axis=(-2, -1))


def dice(logits: Float[Array, "b m h w"], targets: Float[Array, "b 1 h w"]) -> Float[Array, "b m"]:
    """`dice_loss(loss_on_multimask=True)` before the division:
    1 - (2 |p g| + 1) / (|p| + |g| + 1)."""
    p = jax.nn.sigmoid(logits.astype(jnp.float32))
    numerator = 2 * jnp.sum(p * targets, axis=(-2, -1))
    denominator = jnp.sum(p, axis=(-2, -1)) + jnp.sum(targets, axis=(-2, -1))
    return 1 - (numerator + 1) / (denominator + 1)


def iou_l1(
    logits: Float[Array, "b m h w"],
    targets: Float[Array, "b 1 h w"],
    pred_ious: Float[Array, "b m"],
) -> Float[Array, "b m"]:
    """`iou_loss(use_l1_loss=True)`: |predicted IoU - IoU of (logits > 0) with the GT|."""
    pred, gt = logits > 0, targets > 0
    inter = jnp.sum(pred & gt, axis=(-2, -1)).astype(jnp.float32)
    union = jnp.sum(pred | gt, axis=(-2, -1)).astype(jnp.float32)
    actual = jax.lax.stop_gradient(inter / jnp.maximum(union, 1.0))
    return jnp.abs(pred_ious.astype(jnp.float32) - actual)


def multimask_terms(
    logits: Float[Array, "b m h w"],
    candidate_valid: Bool[Array, "b m"],
    pred_ious: Float[Array, "b m"],
    object_score_logits: Float[Array, "b"],
    gt: Bool[Array, "b h w"],
    weight: Float[Array, "b"],
    *,
    mask_weight: float,
    dice_weight: float,
) -> MaskTerms:
    """One decoding step's terms per object (see the module docstring).

    `logits` are the candidates at the GT's resolution; invalid candidates (a single-mask
    step's slots 1..) take no part. The candidate with the smallest `mask_weight * focal +
    dice_weight * dice` is supervised; mask, Dice and IoU terms count only where the GT is
    non-empty (`target_obj`), the object-score BCE everywhere.
    """
    targets = gt[:, None].astype(jnp.float32)
    focal = sigmoid_focal(logits, targets)
    dice_m = dice(logits, targets)
    iou_m = iou_l1(logits, targets, pred_ious)
    combo = jnp.where(candidate_valid, mask_weight * focal + dice_weight * dice_m, jnp.inf)
    best = jnp.argmin(combo, axis=-1)[:, None]
    n_valid = jnp.maximum(jnp.sum(candidate_valid, -1), 1).astype(jnp.float32)
    present = jnp.any(gt, axis=(-2, -1)).astype(jnp.float32)
    on = weight.astype(jnp.float32) * present
    return MaskTerms(
        mask=jnp.take_along_axis(focal, best, 1)[:, 0] * on,
        dice=jnp.take_along_axis(dice_m, best, 1)[:, 0] * on,
        iou=jnp.sum(jnp.where(candidate_valid, iou_m, 0.0), -1) / n_valid * on,
        obj=bce_with_logits(object_score_logits.astype(jnp.float32), present) * weight,
    )
