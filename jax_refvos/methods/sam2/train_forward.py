"""SAM 2 training forward: prompts on the initial frames, corrective clicks, memory tracking
through the clip as one `lax.scan`, and the trainer's multi-step multi-mask losses.

Port of `training/model/sam2.py::SAM2Train` (`forward_tracking`, `track_step`,
`_iter_correct_pt_sampling`) and `training/loss_fns.py::MultiStepMultiMasksAndIous`
(facebookresearch/sam2, SAM 2.1 training configs). The prompt draws that need no model
(`prepare_prompt_inputs`) come from the input pipeline (`pipeline/sam2_sample.py`).

Rows are (video, object) pairs, r = b * o. Processing order, as the reference: the initial
conditioning frames first (frame 0, and for some clips a second one), each from its prompt
alone (the GT mask, a box or a click, then 7 corrective clicks when prompted with points);
then frames 1..t-1 in order, each attending to the conditioning frames and the memories of
the last 6 tracked frames. A row's own initial frames are skipped by the scan (their outputs
exist already). One tracked frame per clip may get corrective clicks too; it then becomes a
conditioning frame. Every decoding step of every frame is supervised.

The reference's clicks grow a list per step; ours are static arrays where the clicks still to
come are `ABSENT_POINT`s, masked out of the decoder's attention (the same as not there).
Memory attention runs without dropout (DEVIATION(sam2): the official trainer uses 0.1).
"""

import dataclasses

import flax.struct
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from jax_refvos.losses.multimask import MaskTerms, multimask_terms
from jax_refvos.model.sam2 import memory_bank as mb
from jax_refvos.model.sam2.propagation import normalize_frames
from jax_refvos.model.sam2.resize import resize_bilinear
from jax_refvos.model.sam2.sam2_model import ABSENT_POINT, ImageFeatures, Sam2Model, SamOutput

# `unroll` of the tracking and corrective-click scans. XLA's cost analysis counts a loop body
# once, so `benchmarks/train_step.py` lowers the step once more with True and counts the FLOPs of
# that lowered program (compiling it fully unrolled did not finish within 25 min on 2 cores).
SCAN_UNROLL: int | bool = 1

# A binarised mask as logits: sigmoid gives exactly 0 / 1 (`binarize_mask_from_pts_for_mem_enc`).
_HARD = 1e4


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainSettings:
    """The trainer's knobs (SAM 2.1 training configs' values by default)."""

    num_correction_points: int = 7  # num_correction_pt_per_frame
    prob_sample_from_gt: float = 0.1  # prob_to_sample_from_gt_for_train
    mask_weight: float = 20.0
    dice_weight: float = 1.0
    iou_weight: float = 1.0
    class_weight: float = 1.0


def sample_points_from_errors(
    key: Array, gt: Bool[Array, "h w"], pred: Bool[Array, "h w"]
) -> tuple[Float[Array, "2"], Int[Array, ""]]:
    """`sample_random_points_from_errors(num_pt=1)` for one mask: a uniform pixel of the
    false-negative (label 1) or false-positive (label 0) region; a background pixel (label 0)
    when the prediction is exactly right. Returns ((x, y), label)."""
    h, w = gt.shape
    fp, fn = ~gt & pred, gt & ~pred
    all_correct = jnp.all(gt == pred)
    noise = jax.random.uniform(key, (h, w, 2))
    noise = noise * jnp.stack([fp | (all_correct & ~gt), fn], -1)
    idx = jnp.argmax(noise.reshape(-1))
    label, pix = idx % 2, idx // 2
    return jnp.stack([pix % w, pix // w]).astype(jnp.float32), label.astype(jnp.int32)


def _step_terms(out: SamOutput, gt, weight, s: TrainSettings) -> MaskTerms:
    size = gt.shape[-2:]
    if out.candidate_masks is None:  # a mask prompt used as the output: one candidate
        cand = jnp.broadcast_to(out.high_res_masks, out.high_res_masks.shape[:1] + (3, *size))
        valid = jnp.broadcast_to(jnp.arange(3) == 0, cand.shape[:2])
        ious = jnp.broadcast_to(out.ious[:, :1], cand.shape[:2])
    else:
        cand = resize_bilinear(out.candidate_masks, size)
        valid, ious = out.candidate_valid, out.candidate_ious
    return multimask_terms(
        cand,
        valid,
        ious,
        out.object_score_logits[:, 0],
        gt,
        weight,
        mask_weight=s.mask_weight,
        dice_weight=s.dice_weight,
    )


def _select(pick: Bool[Array, "r"], a: SamOutput, b: SamOutput) -> SamOutput:
    """Row-wise `a if pick else b` of the fields tracking uses."""

    def sel(x, y):
        return jnp.where(pick.reshape(pick.shape + (1,) * (x.ndim - 1)), x, y)

    keep = ("low_res_masks", "high_res_masks", "obj_ptr", "object_score_logits")
    return SamOutput(**{k: sel(getattr(a, k), getattr(b, k)) for k in keep}, ious=a.ious)


def correct(
    model: Sam2Model,
    pix: Float[Array, "r h w d"],
    high_res: tuple,
    gt: Bool[Array, "r S S"],
    out: SamOutput,
    points: Float[Array, "r p 2"],
    labels: Int[Array, "r p"],
    keys: Array,
    weight: Float[Array, "r"],
    s: TrainSettings,
    *,
    multimask_first: bool,
) -> tuple[SamOutput, MaskTerms]:
    """`_iter_correct_pt_sampling`: `num_correction_points` clicks, each from the error of the
    previous mask (P = 0.1 from the GT alone), decoded with all clicks so far and the previous
    low-res logits as mask prompt (one `lax.scan`; the clicks to come are `ABSENT_POINT`s).
    `multimask_first`: the first click is the frame's only one (a tracked frame), which
    decodes three masks. Returns the last output and the summed terms.
    """
    r, p0, n = gt.shape[0], points.shape[1], s.num_correction_points
    if n == 0:
        return out, _zero_terms(r)
    points = jnp.concatenate([points, jnp.zeros((r, n, 2), jnp.float32)], 1)
    labels = jnp.concatenate([labels, jnp.full((r, n), ABSENT_POINT, jnp.int32)], 1)

    def click(carry, i):
        out, points, labels, terms = carry
        k = jax.vmap(lambda key: jax.random.split(jax.random.fold_in(key, i)))(keys)
        from_gt = jax.vmap(lambda key: jax.random.uniform(key) < s.prob_sample_from_gt)(k[:, 0])
        pred = (out.high_res_masks[:, 0] > 0) & ~from_gt[:, None, None]
        new_pt, new_label = jax.vmap(sample_points_from_errors)(k[:, 1], gt, pred)
        points = points.at[:, p0 + i].set(new_pt)
        labels = labels.at[:, p0 + i].set(new_label)
        multi = jnp.full((r,), multimask_first) & (i == 0)
        new = model.forward_sam_heads(
            pix,
            high_res,
            point_coords=points,
            point_labels=labels,
            mask_inputs=out.low_res_masks,
            multimask_output=multi,
        )
        terms = terms + _step_terms(new, gt, weight, s)
        return (new, points, labels, terms), None

    carry = (out, points, labels, _zero_terms(r))
    (out, _, _, terms), _ = jax.lax.scan(click, carry, jnp.arange(n), unroll=SCAN_UNROLL)
    return out, terms


def _zero_terms(r: int) -> MaskTerms:
    z = jnp.zeros((r,), jnp.float32)
    return MaskTerms(mask=z, dice=z, iou=z, obj=z)


def _memory(model, feats, out: SamOutput, from_points: Bool[Array, "r"]):
    """`_encode_new_memory` of an output; clicked frames' masks binarised when configured."""
    high = out.high_res_masks
    if model.cfg.binarize_mask_from_pts_for_mem_enc:
        hard = jnp.where(high > 0, _HARD, -_HARD)
        high = jnp.where(from_points[:, None, None, None], hard, high)
    return model.encode_memory(feats, high, out.object_score_logits, is_mask_from_pts=False)


@flax.struct.dataclass
class TrainOutput:
    terms: MaskTerms  # per row, summed over frames and steps
    track_iou: Float[Array, "r t"]  # IoU of the final mask with the GT (diagnostics)
    track_valid: Bool[Array, "r t"]  # tracked (not initial) real frames with a non-empty GT


def sam2_train_forward(model: Sam2Model, batch: dict, s: TrainSettings = TrainSettings()):
    """The loss terms of one batch of `pipeline.sam2_sample` clips (module docstring).

    Returns `TrainOutput` with rows r = b * o; padded objects and frames have weight 0.
    """
    frames = batch["frames"]
    b, t = frames.shape[:2]
    o = batch["obj_valid"].shape[1]
    r = b * o
    video = jnp.repeat(jnp.arange(b), o)
    size = model.cfg.image_size
    images = frames.reshape(b * t, *frames.shape[2:])
    images = normalize_frames(images) if images.dtype == jnp.uint8 else images
    feats: ImageFeatures = model.forward_image(images)
    masks = batch["masks"].reshape(r, t, size, size)
    obj_valid = batch["obj_valid"].reshape(r)
    frame_valid = batch["frame_valid"][video]  # [r, t]
    use_pt = batch["use_pt"][video]
    init_frames = batch["init_frames"][video].astype(jnp.int32)  # [r, 2]
    init_valid = batch["init_valid"][video]
    correct_frame = batch["correct_frame"][video]
    points = batch["init_points"].reshape(r, 2, 2, 2)
    labels = batch["init_labels"].reshape(r, 2, 2)
    init_multi = batch["init_multimask"].reshape(r, 2)
    seeds = batch["corr_seed"][video].astype(jnp.uint32)
    keys = jax.vmap(lambda sd, j: jax.random.fold_in(jax.random.wrap_key_data(sd), j))(
        seeds, jnp.tile(jnp.arange(o), b)
    )
    rows = jnp.arange(r)
    dims = {**model.memory_dims(), "dtype": jnp.float32}  # training keeps memories in fp32
    bank = mb.MemoryBank.empty(b=r, c=3, **dims)  # 2 initial + 1 corrected conditioning frame
    terms = _zero_terms(r)
    on = obj_valid.astype(jnp.float32)
    out_iou = jnp.zeros((r, t), jnp.float32)

    for slot in range(2):
        f = init_frames[:, slot]
        fe = feats.expand(video * t + f)
        gt = masks[rows, f]
        weight = on * init_valid[:, slot]
        from_mask = model.use_mask_as_output(fe, gt[:, None].astype(jnp.float32))
        pix = model.pix_without_memory(fe)
        from_pts = model.forward_sam_heads(
            pix,
            fe.high_res,
            point_coords=points[:, slot],
            point_labels=labels[:, slot],
            multimask_output=init_multi[:, slot],
        )
        terms = terms + _step_terms(from_mask, gt, weight * ~use_pt, s)
        terms = terms + _step_terms(from_pts, gt, weight * use_pt, s)
        k = jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, 1000 + slot)
        fixed, corr_terms = correct(
            model,
            pix,
            fe.high_res,
            gt,
            from_pts,
            points[:, slot],
            labels[:, slot],
            k,
            weight * use_pt,
            s,
            multimask_first=False,
        )
        terms = terms + corr_terms
        final = _select(use_pt, fixed, from_mask)
        mem = _memory(model, fe, final, use_pt)
        bank = bank.add_cond(slot, mem, final.obj_ptr, f, init_valid[:, slot])

    def step(carry, f):
        bank, terms = carry
        fe = feats.expand(video * t + f)
        gt = masks[:, f]
        is_init = jnp.any((init_frames == f) & init_valid, -1)
        tracked = frame_valid[:, f] & ~is_init
        weight = on * tracked
        memory = mb.gather(
            bank,
            f,
            num_maskmem=model.cfg.num_maskmem,
            max_cond=model.cfg.max_cond_frames_in_attn,
            reverse=False,
            signed_ptr_dist=model.cfg.use_signed_tpos_enc_to_obj_ptrs,
            ptrs_in_past_only=False,
        )
        pix = model.pix_with_memory(fe, memory, jnp.int32(t), bucketed=False)
        multi = jnp.full((r,), model.cfg.multimask_output_for_tracking)
        out = model.forward_sam_heads(pix, fe.high_res, multimask_output=multi)
        terms = terms + _step_terms(out, gt, weight, s)
        corr_now = (correct_frame == f) & tracked

        def with_clicks(_):
            k = jax.vmap(lambda key: jax.random.fold_in(key, 2000 + f))(keys)
            none_p = jnp.zeros((r, 0, 2), jnp.float32)
            none_l = jnp.zeros((r, 0), jnp.int32)
            fixed, corr_terms = correct(
                model, pix, fe.high_res, gt, out, none_p, none_l, k, weight * corr_now, s,
                multimask_first=True,
            )  # fmt: skip
            return _select(corr_now, fixed, out), corr_terms

        def without(_):
            return _select(corr_now, out, out), _zero_terms(r)

        final, corr_terms = jax.lax.cond(jnp.any(corr_now), with_clicks, without, None)
        mem = _memory(model, fe, final, corr_now)
        bank = bank.add_cond(2, mem, final.obj_ptr, jnp.full((r,), f), corr_now)
        bank = bank.push(f, mem, final.obj_ptr, tracked & ~corr_now)
        pred = final.high_res_masks[:, 0] > 0
        inter = jnp.sum(pred & gt, (-2, -1))
        union = jnp.maximum(jnp.sum(pred | gt, (-2, -1)), 1)
        return (bank, terms + corr_terms), (inter / union, tracked & jnp.any(gt, (-2, -1)))

    steps = jnp.arange(1, t, dtype=jnp.int32)
    (_, terms), (iou, ok) = jax.lax.scan(
        jax.checkpoint(step), (bank, terms), steps, unroll=SCAN_UNROLL
    )
    out_iou = out_iou.at[:, 1:].set(iou.T)
    track_valid = jnp.zeros((r, t), bool).at[:, 1:].set(ok.T) & obj_valid[:, None]
    return TrainOutput(terms=terms, track_iou=out_iou, track_valid=track_valid)


def sam2_loss(out: TrainOutput, obj_valid: Bool[Array, "r"], s: TrainSettings = TrainSettings()):
    """The trainer's total: each term summed over rows, frames and steps, divided by the number
    of objects in the (global) batch, weighted 20 : 1 : 1 : 1. Returns (loss, metrics)."""
    n = jnp.maximum(jnp.sum(obj_valid), 1).astype(jnp.float32)
    parts = {k: jnp.sum(getattr(out.terms, k)) / n for k in ("mask", "dice", "iou", "obj")}
    loss = (
        s.mask_weight * parts["mask"]
        + s.dice_weight * parts["dice"]
        + s.iou_weight * parts["iou"]
        + s.class_weight * parts["obj"]
    )
    counted = jnp.maximum(jnp.sum(out.track_valid), 1)
    metrics = {f"loss_{k}": v for k, v in parts.items()}
    metrics["track_iou"] = jnp.sum(jnp.where(out.track_valid, out.track_iou, 0.0)) / counted
    return loss, metrics
