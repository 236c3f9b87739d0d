"""VIRST's train step: an input-pipeline batch -> `virst_train_forward` -> grads -> AdamW update.

The batch is `pipeline.virst_sample`'s dict stacked over videos (b): uint8 views normalised here
on device, the expression slots (o) of each video flattened into rows (b * o) that share their
video's vision pass. Only parameters matching the `TrainableSpec` are differentiated and updated
(`nnx.Optimizer(..., wrt=spec.filter())`); under a mesh, the step is one GSPMD program (the
parameters carry their logical shardings, the batch is sharded over ("data", "fsdp")).
"""

from collections.abc import Mapping

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jaxtyping import Array

from jax_refvos import losses
from jax_refvos.model import anchor_updater as au
from jax_refvos.model import virst_train
from jax_refvos.model.sam2.propagation import normalize_frames
from jax_refvos.training.trainable import TrainableSpec


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


def make_train_step(
    spec: TrainableSpec,
    *,
    anchor_cfg: au.AnchorConfig = virst_train.DEFAULT_ANCHORS,
    loss_cfg: losses.VirstLossConfig = virst_train.DEFAULT_LOSSES,
):
    """`step(model, optimizer, batch) -> metrics` (float32 scalars), compiled with `nnx.jit`.

    `optimizer` is `nnx.Optimizer(model, tx, wrt=spec.filter())`; the model and optimizer are
    updated in place. Metrics: the `virst_losses` dict plus `grad_norm`.
    """
    diff = nnx.DiffState(0, spec.filter())

    def loss_fn(model, batch):
        out, _ = virst_train.virst_train_forward(
            model, **forward_args(batch), anchor_cfg=anchor_cfg, loss_cfg=loss_cfg
        )
        return out["loss"], out

    @nnx.jit
    def step(model, optimizer, batch):
        (_, metrics), grads = nnx.value_and_grad(loss_fn, argnums=diff, has_aux=True)(model, batch)
        optimizer.update(model, grads)
        return {**metrics, "grad_norm": optax.global_norm(grads)}

    return step


def make_eval_loss(
    *,
    anchor_cfg: au.AnchorConfig = virst_train.DEFAULT_ANCHORS,
    loss_cfg: losses.VirstLossConfig = virst_train.DEFAULT_LOSSES,
):
    """`eval_loss(model, batch) -> the losses dict` without updating anything."""

    @nnx.jit
    def eval_loss(model, batch):
        out, _ = virst_train.virst_train_forward(
            model, **forward_args(batch), anchor_cfg=anchor_cfg, loss_cfg=loss_cfg
        )
        return out

    return eval_loss


def batch_sharding(mesh: jax.sharding.Mesh):
    """Every batch array sharded over ("data", "fsdp") on its leading (video) axis."""
    spec = jax.sharding.PartitionSpec(("data", "fsdp"))
    return jax.sharding.NamedSharding(mesh, spec)
