"""The language-model loss: next-token cross-entropy over supervised targets (HF's shifted loss).

Port of the shifted LM loss in `model/videochat/modeling_qwen2_flash.py` (VIRST) and LLaVA /
LISA (GLUS): HF `CrossEntropyLoss()` on `logits[:, :-1]` vs `labels[:, 1:]`.
"""

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from jax_refvos.token_ids import IGNORE_INDEX


def lm_cross_entropy(
    logits: Float[Array, "b l vocab"],
    labels: Int[Array, "b l"],
    *,
    ignore_ids: Sequence[int] = (),
) -> Float[Array, ""]:
    """Next-token cross-entropy, mean over supervised target tokens of the whole batch.

    As HF: position i predicts labels[i + 1]; targets equal to IGNORE_INDEX (-100) or to one of
    `ignore_ids` are not supervised. VIRST passes `ignore_ids=(seg_token_id,)`: its `[SEG]`
    targets are masked out before the LM loss (`labels.masked_fill(labels == seg_idx, -100)`).
    The mean is over tokens (not per row), like `CrossEntropyLoss()` on the flattened batch.

    Args:
      logits: LM logits (any float dtype; computed in float32).
      labels: target ids, IGNORE_INDEX where unsupervised (prompt, visual tokens, padding).
      ignore_ids: further target ids that are not supervised.

    Returns:
      float32 scalar.
    """
    shift_logits = logits[:, :-1].astype(jnp.float32)
    targets = labels[:, 1:]
    valid = targets != IGNORE_INDEX
    for token_id in ignore_ids:
        valid &= targets != token_id
    safe_targets = jnp.where(valid, targets, 0)
    target_logit = jnp.take_along_axis(shift_logits, safe_targets[..., None], axis=-1)[..., 0]
    nll = jax.nn.logsumexp(shift_logits, axis=-1) - target_logit
    # DEVIATION(virst): torch's mean over zero supervised tokens is NaN; this returns 0 instead.
    count = jnp.maximum(jnp.sum(valid), 1).astype(jnp.float32)
    return jnp.sum(jnp.where(valid, nll, 0.0)) / count
