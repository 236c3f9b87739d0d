"""Building-block losses (float32, padded arrays + valid masks); methods weight and combine them.

from jax_refvos import losses
losses.dice_loss(logits, targets, valid)
"""

from jax_refvos.losses.masks import (
    COUNT_EPS,
    bce_with_logits,
    dice_loss,
    frame_mean,
    iou_l1_loss,
    mask_iou,
    object_score_bce,
    sigmoid_bce,
    upsample_mask_logits,
)
from jax_refvos.losses.text import lm_cross_entropy
from jax_refvos.token_ids import IGNORE_INDEX

__all__ = [
    "COUNT_EPS",
    "IGNORE_INDEX",
    "bce_with_logits",
    "dice_loss",
    "frame_mean",
    "iou_l1_loss",
    "lm_cross_entropy",
    "mask_iou",
    "object_score_bce",
    "sigmoid_bce",
    "upsample_mask_logits",
]
