"""VIRST training forward: the SAM2 rollout over anchors (+ windows) and every training loss.

Port of `model/VIRST.py::VirstForCausalLM.forward` (training branch) with
`model/sam2/sam2_virst.py::SAM2Virst.forward` / `forward_tracking` / `track_step_train`
(AIDASLab/VIRST @ 954276f). Spec: shared/reference/virst.md §4.3, §6.1.

Per (video, expression) row:

1. SAM2 image features of the t STF frames (`images_sam`); the SegPrompter reads their stride-16
   maps with gradients, the Initial ST-Fusion without (the reference computes them under no_grad).
2. The LLM runs teacher-forced on the spliced sequence: its logits give the CE loss, its
   `[SEG]` hidden states the SegPrompter prompts [q, t, 256].
3. `anchor_updater.rollout_plan`: the anchors (random in training) and, with `use_cond_frames`,
   their +1..+5 / -1..-2 windows form a sub-sequence. SAM2 sees local positions 0..n-1 as frame
   indices. Anchors are initial conditioning frames (no memory, their prompt tokens, mask token
   0: `_use_multimask` is False in training). The other positions are tracked in increasing
   order with training-mode memory: the conditioning frames already processed (the first anchor,
   then the anchors before the current position), the last 6 tracked frames, object pointers of
   the selected conditioning frames past AND future, memories kept in float32.
4. The losses (`losses.virst_losses`) over every processed frame against its GT mask.

Static shapes: the rollout is one `lax.scan` over at most `max_tracked_frames` tracked positions
(padding steps are computed and discarded); rows are `vmap`ped, each with its own anchors.
"""

import einops
import flax.struct
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from jax_refvos.methods.virst import anchor_updater as au
from jax_refvos.methods.virst import losses
from jax_refvos.model.backbone import multimodal
from jax_refvos.model.sam2 import memory_bank as mb
from jax_refvos.model.sam2 import propagation as prop
from jax_refvos.model.sam2.resize import resize_bilinear
from jax_refvos.model.sam2.sam2_model import ImageFeatures, Sam2Model
from jax_refvos.token_ids import IGNORE_INDEX

# The official `use_cond_frames=False` would never track a training frame from memory; the
# value behind the released checkpoint is unknown (reference/virst.md §4.1). Ours: True.
DEFAULT_ANCHORS = au.AnchorConfig(use_cond_frames=True)
DEFAULT_LOSSES = losses.VirstLossConfig()
# `lax.scan` unroll of the rollout. XLA's cost analysis counts a while-loop body once, so
# benchmarks/train_step.py compiles the step once more with the rollout unrolled (True) to count
# its FLOPs; training keeps the loop (1).
ROLLOUT_UNROLL: int | bool = 1


@flax.struct.dataclass
class RolloutOutput:
    """Per local position j of the plan (video frame `frames[j]`); rows past n are padding."""

    low_res_masks: Float[Array, "t 1 H4 W4"]  # `pred_masks` (mask token 0, object-gated)
    ious: Float[Array, "t"]  # predicted IoU of mask token 0
    object_score_logits: Float[Array, "t"]
    frames: Int[Array, "t"]
    valid: Bool[Array, "t"]


def train_rollout(
    model: Sam2Model,
    feats: ImageFeatures,
    seg_prompts: Float[Array, "k q d"],
    anchors: Int[Array, "k"],
    plan: au.RolloutPlan,
    *,
    num_tracked: int,
) -> RolloutOutput:
    """`SAM2Virst.forward_tracking` for one row.

    Args:
        feats: SAM2 features of the row's t frames (batch axis = frame).
        seg_prompts: the sorted anchors' prompt tokens.
        anchors: sorted distinct frame indices (the plan's).
        plan: `anchor_updater.rollout_plan(anchors, t, ...)`.
        num_tracked: static scan length, >= the plan's non-anchor positions
            (`AnchorConfig.max_tracked_frames`).
    """
    c = model.cfg
    t = plan.frames.shape[0]
    k = anchors.shape[0]
    g = jnp.arange(t, dtype=jnp.int32)
    n = jnp.sum(plan.frame_valid).astype(jnp.int32)
    anchor_pos = jnp.sum(plan.window_valid[None] & (g[None] < anchors[:, None]), 1)  # [k]

    anchor_feats = feats.expand(anchors)
    heads = au.anchor_prompt_outputs(
        model, anchor_feats, seg_prompts[None], multimask=False, training=True
    )
    size = (c.image_size, c.image_size)
    anchor_mem = model.encode_memory(
        anchor_feats,
        resize_bilinear(heads.low_res_masks, size),
        heads.object_score_logits,
        is_mask_from_pts=True,
    )
    dims = {**model.memory_dims(), "dtype": jnp.float32}  # training keeps memories in fp32
    bank = mb.MemoryBank.empty(b=1, c=k, **dims).replace(
        cond_feats=anchor_mem[None],
        cond_ptr=heads.obj_ptr[None],
        cond_frame=anchor_pos[None].astype(jnp.int32),
        cond_valid=jnp.ones((1, k), bool),
    )

    low = jnp.zeros((t, 1, *heads.low_res_masks.shape[-2:]), jnp.float32)
    ious = jnp.zeros((t,), jnp.float32)
    scores = jnp.zeros((t,), jnp.float32)
    low = low.at[anchor_pos].set(heads.low_res_masks)
    ious = ious.at[anchor_pos].set(heads.ious[:, 0])
    scores = scores.at[anchor_pos].set(heads.object_score_logits[:, 0])

    if num_tracked > 0:
        tracked = plan.frame_valid & ~plan.is_anchor
        (pos,) = jnp.nonzero(tracked, size=num_tracked, fill_value=t)
        pos = pos.astype(jnp.int32)
        on = pos < t
        first = jnp.arange(k) == 0

        def step(bank, xs):
            p, active = xs
            frame = plan.frames[jnp.minimum(p, t - 1)]
            f = feats.expand(frame[None])
            # Processing order is the first anchor, then positions ascending: the conditioning
            # outputs that exist at position p are the first anchor and the anchors before p.
            seen = bank.replace(cond_valid=bank.cond_valid & (first | (anchor_pos < p))[None])
            out, mem = prop.track_frame(model, seen, f, p, n, reverse=False, training=True)
            bank = bank.push(p, mem, out.obj_ptr, active[None])
            return bank, (out.low_res_masks[0], out.ious[0, 0], out.object_score_logits[0, 0])

        # Rematerialised: a step's memory attention over up to 9 x 4096 + 64 keys would otherwise
        # keep its (4096 x 37k) attention maps per step for the backward pass.
        _, (t_low, t_iou, t_score) = jax.lax.scan(
            jax.checkpoint(step), bank, (pos, on), unroll=ROLLOUT_UNROLL
        )
        low = low.at[pos].set(t_low, mode="drop")
        ious = ious.at[pos].set(t_iou, mode="drop")
        scores = scores.at[pos].set(t_score, mode="drop")
    return RolloutOutput(
        low_res_masks=low,
        ious=ious,
        object_score_logits=scores,
        frames=plan.frames,
        valid=plan.frame_valid,
    )


def spliced_labels(
    labels: Int[Array, "b l"],
    text_valid: Bool[Array, "b l"],
    text_to_out: Int[Array, "b l"],
    n: int,
) -> Int[Array, "b n"]:
    """Text labels moved to their spliced positions; visual tokens and padding get -100."""
    b = labels.shape[0]
    rows = jnp.arange(b)[:, None]
    where = jnp.where(text_valid, text_to_out, n)
    out = jnp.full((b, n), IGNORE_INDEX, labels.dtype)
    return out.at[rows, where].set(labels, mode="drop")


def visual_valid_tokens(
    vlm_valid: Bool[Array, "b tv"], clip_frames: int, num_tokens: int
) -> Bool[Array, "b v"]:
    """Per visual token: its 4-frame clip is made of real frames (a valid prefix of clips)."""
    b, tv = vlm_valid.shape
    clips = jnp.all(vlm_valid.reshape(b, tv // clip_frames, clip_frames), axis=-1)
    return jnp.repeat(clips, num_tokens // clips.shape[1], axis=1)


def virst_train_forward(
    model,
    *,
    vlm_frames: Float[Array, "b tv H W 3"],
    stf_frames: Float[Array, "b t S S 3"],
    input_ids: Int[Array, "r l"],
    labels: Int[Array, "r l"],
    gt_masks: Float[Array, "r t M M"],
    anchors: Int[Array, "r k"],
    text_valid: Bool[Array, "r l"] | None = None,
    row_video: Int[Array, "r"] | None = None,
    row_valid: Bool[Array, "r"] | None = None,
    vlm_valid: Bool[Array, "b tv"] | None = None,
    stf_valid: Bool[Array, "b t"] | None = None,
    anchor_cfg: au.AnchorConfig = DEFAULT_ANCHORS,
    loss_cfg: losses.VirstLossConfig = DEFAULT_LOSSES,
) -> tuple[dict[str, Float[Array, ""]], RolloutOutput]:
    """The training forward of `methods.virst.model.Virst` (dropout-free; see the module docstring).

    Videos (b) are encoded once; rows (r: one expression each, VIRST's conversations) share
    their video's visual tokens and SAM2 features.

    Args:
        vlm_frames, stf_frames: ImageNet-normalised VLM (448) and STF (SAM2 size) views per
            video; `vlm_valid` / `stf_valid` mark real frames (a prefix; None: all; the VLM
            prefix is a multiple of the clip length).
        input_ids, text_valid, labels: per row, as `Virst.lm_forward` (labels IGNORE_INDEX on
            prompt tokens), aligned with `input_ids`.
        gt_masks: binary GT of each STF frame per row, at the loss resolution (VIRST: 1024^2).
        anchors: sorted distinct real STF-frame indices per row (`anchor_updater.train_anchors`).
        row_video: the video of each row (None: row i is video i); `row_valid`: real rows
            (padding rows add nothing to any loss).

    Returns:
        (the `losses.virst_losses` dict, the per-row `RolloutOutput`).
    """
    b, t = stf_frames.shape[:2]
    r = input_ids.shape[0]
    if row_video is None:
        row_video = jnp.arange(r, dtype=jnp.int32)
    if text_valid is None:
        text_valid = jnp.ones(input_ids.shape, bool)
    if row_valid is None:
        row_valid = jnp.ones((r,), bool)
    if stf_valid is None:
        stf_valid = jnp.ones((b, t), bool)
    sam2: Sam2Model = model.seg_model
    feats = sam2.forward_image(einops.rearrange(stf_frames, "b t H W c -> (b t) H W c"))
    feats = jax.tree.map(lambda x: x.reshape(b, t, *x.shape[1:]), feats)
    visual = model.visual_tokens(vlm_frames)
    visual_valid = None
    if vlm_valid is not None:
        visual_valid = visual_valid_tokens(vlm_valid, model.cfg.umt.clip_frames, visual.shape[1])
        visual_valid = visual_valid[row_video]
    row_feats = jax.tree.map(lambda x: x[row_video], feats)
    pix, frame_valid = row_feats.pix, stf_valid[row_video]
    hidden, spliced, index = model.lm_forward(
        None,
        input_ids,
        text_valid,
        jax.lax.stop_gradient(pix),
        visual=visual[row_video],
        visual_valid=visual_valid,
        stf_valid=frame_valid,
    )
    seg_hidden = multimodal.gather_tokens(hidden, spliced.text_to_out, index)
    prompts = model.seg_prompter(seg_hidden, pix, frame_valid=frame_valid).prompts  # [r,q,t,d]
    lm_logits = model.lm.head(hidden)
    lm_labels = spliced_labels(
        labels, text_valid & row_valid[:, None], spliced.text_to_out, hidden.shape[1]
    )
    num_tracked = anchor_cfg.max_tracked_frames(t)

    def one_row(row_feats, row_prompts, row_anchors, row_frame_valid):
        plan = au.rollout_plan(
            row_anchors,
            t,
            use_cond_frames=anchor_cfg.use_cond_frames,
            window_forward=anchor_cfg.window_forward,
            window_backward=anchor_cfg.window_backward,
            frame_valid=row_frame_valid,
        )
        k_prompts = jnp.take(row_prompts, row_anchors, axis=1).transpose(1, 0, 2)  # [k, q, d]
        return train_rollout(sam2, row_feats, k_prompts, row_anchors, plan, num_tracked=num_tracked)

    out = jax.vmap(one_row)(row_feats, prompts, anchors.astype(jnp.int32), frame_valid)
    gt = jnp.take_along_axis(gt_masks, out.frames[:, :, None, None], axis=1)
    loss = losses.virst_losses(
        loss_cfg,
        lm_logits=lm_logits,
        labels=lm_labels,
        seg_token_id=model.cfg.seg_token_id,
        low_res_mask_logits=out.low_res_masks[:, :, 0],
        gt_masks=gt,
        pred_iou=out.ious,
        object_score_logits=out.object_score_logits,
        valid=out.valid & row_valid[:, None],
    )
    return loss, out
