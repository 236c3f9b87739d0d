"""Whole-video SAM2 tracking as one `lax.scan` over frames, batched over videos and objects.

Port of the per-frame loop of `sam2/sam2_video_predictor.py::propagate_in_video` with
`_run_single_frame_inference` (sam2 1.1.0, eval). The reference keeps every frame's output in
dicts; here the scan carries a fixed-capacity `MemoryBank`, frames are encoded inside the scan, and
the per-frame outputs leave the device chunk by chunk, so device memory does not grow with the
video (`propagate_chunk` is called repeatedly with the bank it returned).

Shapes: `v` videos, `o` objects (object i belongs to video `obj_video[i]`), `k` frames per chunk,
`S` the model's input size, `H x W` the videos' own resolution (shared within a call).
"""

import functools
from collections.abc import Callable

import flax.struct
import jax
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, Bool, Float, Int, UInt8

from jax_refvos.model.sam2 import memory_bank as mb
from jax_refvos.model.sam2.resize import resize_bilinear
from jax_refvos.model.sam2.sam2_model import NO_OBJ_SCORE, ImageFeatures, Sam2Model, SamOutput

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize_frames(frames: UInt8[Array, "... S S 3"]) -> Float[Array, "... S S 3"]:
    """uint8 RGB at the model size -> ImageNet-normalised float32 (as `load_video_frames`)."""
    x = frames.astype(jnp.float32) / 255.0
    return (x - jnp.asarray(IMAGENET_MEAN)) / jnp.asarray(IMAGENET_STD)


@flax.struct.dataclass
class CondFrames:
    """The conditioning (prompted) frames' outputs, per object: slot j of object i."""

    frame: Int[Array, "o c"]
    valid: Bool[Array, "o c"]
    low_res_masks: Float[Array, "o c 1 H4 W4"]
    object_score_logits: Float[Array, "o c"]


@flax.struct.dataclass
class FrameOutput:
    """What one tracked frame yields per object (stacked over frames by the scan)."""

    video_res_masks: Float[Array, "o 1 H W"]  # logits at the video's resolution
    low_res_masks: Float[Array, "o 1 H4 W4"]
    object_score_logits: Float[Array, "o 1"]
    mem_feats: Float[Array, "o s e"]  # memory written for this frame (storage dtype)
    obj_ptr: Float[Array, "o d"]
    tracked: Bool[Array, "o"]  # False on an object's conditioning frame (output = its prompt)
    promoted: Bool[Array, "o"]  # became a conditioning frame (the `promote` hook)


def prompt_frame_output(
    model: Sam2Model,
    feats: ImageFeatures,
    *,
    point_coords: Float[Array, "b n 2"] | None = None,
    point_labels: Int[Array, "b n"] | None = None,
    mask_inputs: Float[Array, "b 1 S S"] | None = None,
    prev_mask_logits: Float[Array, "b 1 H4 W4"] | None = None,
) -> SamOutput:
    """`track_step` on an initial conditioning frame: the object's prompt, no memory."""
    if mask_inputs is not None and model.cfg.use_mask_input_as_output_without_sam:
        return model.use_mask_as_output(feats, mask_inputs)
    if prev_mask_logits is not None:
        mask_inputs = prev_mask_logits
    num_points = 0 if point_labels is None else point_labels.shape[1]
    return model.forward_sam_heads(
        model.pix_without_memory(feats),
        feats.high_res,
        point_coords=point_coords,
        point_labels=point_labels,
        mask_inputs=mask_inputs,
        multimask_output=model.use_multimask(True, num_points),
    )


def cond_frame_memory(
    model: Sam2Model,
    feats: ImageFeatures,
    low_res_masks: Float[Array, "b 1 H4 W4"],
    object_score_logits: Float[Array, "b 1"],
) -> Float[Array, "b s e"]:
    """`propagate_in_video_preflight`: memory of a prompted frame from its (low-res) output."""
    size = (model.cfg.image_size, model.cfg.image_size)
    high = resize_bilinear(low_res_masks, size)
    feats_mem = model.encode_memory(feats, high, object_score_logits, is_mask_from_pts=True)
    return feats_mem.astype(model.cfg.storage_dtype)


def track_frame(
    model: Sam2Model,
    bank: mb.MemoryBank,
    feats: ImageFeatures,
    t: Int[Array, ""],
    num_frames: Int[Array, ""],
    *,
    reverse: bool,
    training: bool = False,
) -> tuple[SamOutput, Float[Array, "o s e"]]:
    """One memory-conditioned frame: attend to the bank, decode, encode the new memory.

    `training` is the reference's `self.training`: object pointers of future conditioning
    frames too, single-mask output without the stability fallback (VIRST's `_use_multimask`),
    the memory kept in float32 (only the video predictor stores it in `storage_dtype`), and one
    attention branch over every slot (no bucket switch, which `vmap` would run in full).
    """
    c = model.cfg
    memory = mb.gather(
        bank,
        t,
        num_maskmem=c.num_maskmem,
        max_cond=c.max_cond_frames_in_attn,
        reverse=reverse,
        signed_ptr_dist=c.use_signed_tpos_enc_to_obj_ptrs,
        ptrs_in_past_only=c.only_obj_ptrs_in_the_past_for_eval and not training,
    )
    pix = model.pix_with_memory(feats, memory, num_frames, bucketed=not training)
    multimask = False if training else model.use_multimask(False, 0)
    out = model.forward_sam_heads(
        pix, feats.high_res, multimask_output=multimask, training=training
    )
    mem = model.encode_memory(
        feats, out.high_res_masks, out.object_score_logits, is_mask_from_pts=False
    )
    return out, mem if training else mem.astype(c.storage_dtype)


def propagate_chunk(
    model: Sam2Model,
    bank: mb.MemoryBank,
    cond: CondFrames,
    frames: UInt8[Array, "k v S S 3"],
    frame_idx: Int[Array, "k"],
    active: Bool[Array, "k"],
    obj_video: Int[Array, "o"],
    num_frames: Int[Array, ""],
    *,
    video_size: tuple[int, int],
    reverse: bool,
    promote: Callable | None = None,
    obj_start: Int[Array, "o"] | None = None,
) -> tuple[mb.MemoryBank, FrameOutput]:
    """Track `k` frames (in the order given) with one `lax.scan`; inactive frames change nothing.

    `obj_start`, optional: object i exists from frame `obj_start[i]` on (in the tracking
    direction); before it its output is "no object" and nothing enters its memory (objects
    that appear later in semi-supervised VOS, prompted on their first frame).

    `promote(bank, t, out, mem, candidate) -> (bank, promoted)`, optional and hashable (it is a
    static argument of the compiled version): may turn a tracked frame into a conditioning frame
    (VIRST's dynamic anchors, `anchor_updater.PromoteRule`); a promoted frame's memory is not
    also pushed to the ring of tracked frames.

    Returns the updated bank and the stacked per-frame outputs (leading axis k).
    """

    def step(bank, xs):
        # The model is only read in the body (R5), so the closure is safe under scan.
        image, t, on = xs
        feats = model.forward_image(normalize_frames(image)).expand(obj_video)
        out, mem = track_frame(model, bank, feats, t, num_frames, reverse=reverse)
        hit = cond.valid & (cond.frame == t)  # [o, c]
        is_cond = jnp.any(hit, -1)
        pick = jnp.argmax(hit, -1)
        cond_low = jnp.take_along_axis(cond.low_res_masks, pick[:, None, None, None, None], 1)
        cond_low = cond_low[:, 0]
        cond_score = jnp.take_along_axis(cond.object_score_logits, pick[:, None], 1)
        low = jnp.where(is_cond[:, None, None, None], cond_low, out.low_res_masks)
        score = jnp.where(is_cond[:, None], cond_score, out.object_score_logits)
        tracked = on & ~is_cond
        if obj_start is not None:
            started = (t <= obj_start) if reverse else (t >= obj_start)
            low = jnp.where(started[:, None, None, None], low, NO_OBJ_SCORE)
            score = jnp.where(started[:, None], score, NO_OBJ_SCORE)
            tracked = tracked & started
        promoted = jnp.zeros_like(tracked)
        if promote is not None:
            bank, promoted = promote(bank, t, out, mem, tracked)
        bank = bank.push(t, mem, out.obj_ptr, tracked & ~promoted)
        return bank, FrameOutput(
            video_res_masks=resize_bilinear(low, video_size),
            low_res_masks=low,
            object_score_logits=score,
            mem_feats=mem,
            obj_ptr=out.obj_ptr,
            tracked=tracked,
            promoted=promoted,
        )

    return jax.lax.scan(step, bank, (frames, frame_idx, active))


@functools.partial(jax.jit, static_argnames=("graphdef", "video_size", "reverse", "promote"))
def _propagate_chunk_jit(
    graphdef,
    state,
    bank,
    cond,
    frames,
    frame_idx,
    active,
    obj_video,
    num_frames,
    *,
    video_size,
    reverse,
    promote=None,
    obj_start=None,
):
    model = nnx.merge(graphdef, state)
    return propagate_chunk(
        model,
        bank,
        cond,
        frames,
        frame_idx,
        active,
        obj_video,
        num_frames,
        video_size=video_size,
        reverse=reverse,
        promote=promote,
        obj_start=obj_start,
    )


def propagate_chunk_jit(model: Sam2Model, *args, video_size, reverse, promote=None, obj_start=None):
    """`propagate_chunk` compiled once per (shapes, video size, direction, promote hook)."""
    graphdef, state = nnx.split(model)
    return _propagate_chunk_jit(
        graphdef,
        state,
        *args,
        video_size=video_size,
        reverse=reverse,
        promote=promote,
        obj_start=obj_start,
    )
