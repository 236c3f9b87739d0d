"""VIRST's loss on an input-pipeline batch, and the batch's counts for throughput.

The batch is `pipeline.virst_sample`'s dict stacked over videos (b): uint8 views normalised here
on device, the expression slots (o) of each video flattened into rows (b * o) that share their
video's vision pass (`forward_args` -> `train_forward.virst_train_forward`). The trainer
differentiates `make_loss`'s function (`training/step.py`).
"""

from collections.abc import Mapping

import jax
import jax.numpy as jnp
from jaxtyping import Array

from jax_refvos.methods.virst import anchor_updater as au
from jax_refvos.methods.virst import train_forward as virst_train
from jax_refvos.methods.virst.losses import VirstLossConfig
from jax_refvos.model.sam2.propagation import normalize_frames


def _views(x: Array) -> Array:
    return normalize_frames(x) if x.dtype == jnp.uint8 else x.astype(jnp.float32)


def forward_args(batch: Mapping[str, Array]) -> dict:
    """`virst_train_forward` keyword arguments from a pipeline batch.

    Rows of padded expression slots (`expr_valid` False) get the harmless anchors 0, 1, 2 so
    that no NaN can arise in computations the loss masks out (a NaN there would still reach the
    gradient through `where`).
    """
    b, o, k = batch["anchor_index"].shape
    rows = b * o

    def flat(x):
        return x.reshape(rows, *x.shape[2:])

    row_valid = flat(batch["expr_valid"])
    anchors = jnp.where(
        (row_valid[:, None] & flat(batch["anchor_valid"])),
        flat(batch["anchor_index"]),
        jnp.arange(k, dtype=jnp.int32)[None],
    )
    return dict(
        vlm_frames=_views(batch["vlm_frames"]),
        stf_frames=_views(batch["sam_frames"]),
        input_ids=flat(batch["input_ids"]),
        labels=flat(batch["labels"]),
        text_valid=flat(batch["text_valid"]),
        gt_masks=flat(batch["masks"]),
        anchors=anchors.astype(jnp.int32),
        row_video=jnp.repeat(jnp.arange(b, dtype=jnp.int32), o),
        row_valid=row_valid,
        vlm_valid=batch["vlm_frame_valid"],
        stf_valid=batch["sam_frame_valid"],
    )


def make_loss(
    *,
    anchor_cfg: au.AnchorConfig = virst_train.DEFAULT_ANCHORS,
    loss_cfg: VirstLossConfig = virst_train.DEFAULT_LOSSES,
):
    """`loss_fn(model, method_state, batch) -> (loss, (losses dict, method_state))`: the
    `virst_losses` dict of `virst_train_forward` on the batch; VIRST keeps no method state."""

    def loss_fn(model, method_state, batch):
        out, _ = virst_train.virst_train_forward(
            model, **forward_args(batch), anchor_cfg=anchor_cfg, loss_cfg=loss_cfg
        )
        return out["loss"], (out, method_state)

    return loss_fn


def make_batch_counts(clip_frames: int, visual_tokens: int):
    """A jitted `counts(batch)`: real clips, SAM frames and LLM tokens (text of real rows plus
    each real row's real visual tokens) of a global batch, as int32 scalars.

    `visual_tokens` is the VLM's tokens per video at full length, `clip_frames` its frames per
    clip (`model.cfg.umt.clip_frames`).
    """

    @jax.jit
    def counts(batch: dict) -> dict[str, Array]:
        expr = batch["expr_valid"]  # [b, o]
        visual = virst_train.visual_valid_tokens(
            batch["vlm_frame_valid"], clip_frames, visual_tokens
        )
        per_video = jnp.sum(visual, axis=1)  # [b]
        text = jnp.sum(batch["text_valid"] & expr[..., None])
        return {
            "clips": jnp.sum(batch["sam_frame_valid"].any(axis=1)),
            "frames": jnp.sum(batch["sam_frame_valid"]),
            "tokens": text + jnp.sum(expr * per_video[:, None]),
        }

    return counts
