"""VIRST inference propagation: SAM2 video tracking from anchor frames prompted by learned prompts.

Port of `model/VIRST.py::VirstForCausalLM.video_propagate` with `model/sam2/sam2_virst.py::
SAM2Virst.add_new_prompt` / `propagate_in_video_preflight` / `propagate_in_video`
(AIDASLab/VIRST @ 954276f). Spec: shared/reference/virst.md §4.2, §5.2, §9.

1. Every anchor is an initial conditioning frame: no memory, its learned prompt tokens as the
   sparse prompt (`anchor_updater.anchor_prompt_outputs`; eval: multimask, best predicted IoU).
2. Preflight: each anchor's memory is encoded from its best low-res mask, bilinearly upsampled to
   the model size (`propagation.cond_frame_memory`). The preflight passes `is_mask_from_pts=True`
   but VIRST leaves `binarize_mask_from_pts_for_mem_enc` False, so the mask enters the memory
   encoder as sigmoid(logits) x 20 - 10, not binarised (the fixture's fp32
   `prop_maskmem_features_call0` agrees). Memories are stored in bfloat16, as the predictor does.
3. Forward tracking over all frames from frame 0 with the anchors as conditioning frames (at most
   `max_cond_frames_in_attn` closest ones in attention, `num_maskmem` memories, object pointers of
   past anchors and tracked frames): `propagation.propagate_chunk` over chunks of frames, the
   memory bank carried between chunks (host loop as in `Sam2VideoPredictor`).
4. Output per frame: the best low-res mask logits bilinearly resized to the video size
   (align_corners False, no antialias), anchors' from their prompt output.
   `iter_propagate_with_anchors` yields them chunk by chunk in frame order (host memory flat in
   the video length); `propagate_with_anchors` collects them.

Shapes: `t` frames, `o` objects (VIRST: one, the expression), `k` anchors (static capacity with a
valid mask; anchors are shared by the objects), `q` prompt tokens, `S` the model input size,
`H x W` the video size.
"""

import dataclasses
import functools
from collections.abc import Callable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jaxtyping import Array, Bool, Float, Int

from jax_refvos.errors import InputError
from jax_refvos.methods.virst import anchor_updater as au
from jax_refvos.model.sam2 import memory_bank as mb
from jax_refvos.model.sam2 import propagation as prop
from jax_refvos.model.sam2.resize import resize_bilinear
from jax_refvos.model.sam2.sam2_model import Sam2Model

# frames: uint8 (or float in [0, 255]) [t, S, S, 3], or a loader `frames(indices) -> [n, S, S, 3]`.
FrameSource = np.ndarray | Callable[[Sequence[int]], np.ndarray]


@dataclasses.dataclass
class AnchoredPropagation:
    """Host outputs of `propagate_with_anchors` (frame-indexed)."""

    video_res_logits: np.ndarray  # float32[t, o, H, W]
    object_score_logits: np.ndarray  # float32[t, o]
    obj_ptr: np.ndarray  # float32[t, o, d]
    is_anchor: np.ndarray  # bool[t]
    anchor_heads: au.AnchorHeads  # [o * k, ...] in (o, k) order
    promoted: np.ndarray  # bool[t, o]: tracked frames that became dynamic anchors


def anchor_memory(
    model: Sam2Model,
    anchor_frames: Float[Array, "k S S 3"],
    anchor_index: Int[Array, "k"],
    valid: Bool[Array, "k"],
    seg_prompts: Float[Array, "o k q d"],
    *,
    multimask: bool = True,
) -> tuple[mb.MemoryBank, prop.CondFrames, au.AnchorHeads]:
    """Anchors' heads + preflight: the initial memory bank (conditioning slot j = anchor j).

    `anchor_frames` are the anchors' frames (uint8 or float in [0, 255]); rows with `valid` False
    are computed but never used (their slots are invalid). Memory features in storage dtype.
    """
    o, k = seg_prompts.shape[:2]
    if anchor_frames.shape[0] != k or anchor_index.shape != (k,) or valid.shape != (k,):
        raise InputError(
            f"VIRST propagation: {anchor_frames.shape[0]} anchor frames, anchor_index "
            f"{anchor_index.shape}, valid {valid.shape} for {k} prompted anchors"
        )
    feats = model.forward_image(prop.normalize_frames(anchor_frames))
    feats = feats.expand(jnp.tile(jnp.arange(k), o))  # (o, k) order
    heads = au.anchor_prompt_outputs(model, feats, seg_prompts, multimask=multimask)
    mem = prop.cond_frame_memory(model, feats, heads.low_res_masks, heads.object_score_logits)
    dims = model.memory_dims()
    bank = mb.MemoryBank.empty(b=o, c=k, **dims)
    frame = jnp.broadcast_to(jnp.where(valid, anchor_index, mb.NO_FRAME), (o, k))
    bank = bank.replace(
        cond_feats=mem.reshape(o, k, dims["s"], dims["e"]).astype(bank.cond_feats.dtype),
        cond_ptr=heads.obj_ptr.reshape(o, k, -1),
        cond_frame=frame.astype(jnp.int32),
        cond_valid=jnp.broadcast_to(valid, (o, k)),
    )
    low = heads.low_res_masks
    cond = prop.CondFrames(
        frame=bank.cond_frame,
        valid=bank.cond_valid,
        low_res_masks=low.reshape(o, k, *low.shape[1:]),
        object_score_logits=heads.object_score_logits.reshape(o, k),
    )
    return bank, cond, heads


@functools.partial(jax.jit, static_argnames=("graphdef", "multimask", "video_size"))
def _anchor_memory_jit(graphdef, state, frames, index, valid, prompts, *, multimask, video_size):
    model = nnx.merge(graphdef, state)
    bank, cond, heads = anchor_memory(model, frames, index, valid, prompts, multimask=multimask)
    return bank, cond, heads, resize_bilinear(cond.low_res_masks, video_size)


def anchor_memory_jit(
    model: Sam2Model, frames, index, valid, prompts, *, multimask: bool, video_size
) -> tuple[mb.MemoryBank, prop.CondFrames, au.AnchorHeads, Float[Array, "o k 1 H W"]]:
    """`anchor_memory` compiled once per shapes, plus the anchors' video-size mask logits."""
    graphdef, state = nnx.split(model)
    return _anchor_memory_jit(
        graphdef,
        state,
        jnp.asarray(frames),
        jnp.asarray(index, jnp.int32),
        jnp.asarray(valid),
        jnp.asarray(prompts, jnp.float32),
        multimask=multimask,
        video_size=tuple(video_size),
    )


def _load(frames: FrameSource, idx: Sequence[int]) -> np.ndarray:
    return np.asarray(frames(list(idx)) if callable(frames) else frames[np.asarray(idx)])


@dataclasses.dataclass
class PropagationChunk:
    """Consecutive outputs of `iter_propagate_with_anchors`, frames in increasing order."""

    frame_index: np.ndarray  # int64[n], increasing across chunks, every frame once
    video_res_logits: np.ndarray  # float32[n, o, H, W]
    object_score_logits: np.ndarray  # float32[n, o]
    obj_ptr: np.ndarray  # float32[n, o, d]
    is_anchor: np.ndarray  # bool[n]
    promoted: np.ndarray  # bool[n, o]: became a dynamic anchor (`AnchorConfig.dynamic_update`)


def iter_propagate_with_anchors(
    model: Sam2Model,
    frames: FrameSource,
    anchor_index: Int[np.ndarray, "k"],
    anchor_valid: Bool[np.ndarray, "k"],
    seg_prompts: Float[Array, "o k q d"],
    *,
    num_frames: int | None = None,
    video_size: tuple[int, int],
    multimask: bool = True,
    chunk_size: int = 8,
    anchor_cfg: au.AnchorConfig | None = None,
) -> tuple[au.AnchorHeads, Iterator[PropagationChunk]]:
    """`propagate_with_anchors`, streamed: memory flat in the number of frames.

    The anchors are prompted and encoded now (errors are raised here); the returned iterator then
    tracks the other frames `chunk_size` at a time, loading only those frames, and yields each
    tracked chunk together with the anchors that precede its last frame, so the frames come out
    in increasing order, each once (the anchors after the last tracked frame come last). Host
    memory: one chunk of frames and outputs plus the anchors' video-size logits (k <= 8 in
    VIRST's eval), whatever the video length. Arguments as `propagate_with_anchors`.

    Returns:
        (the anchors' heads [o * k, ...] in (o, k) order, the iterator of `PropagationChunk`s).
    """
    if num_frames is None:
        if callable(frames):
            raise InputError("VIRST propagation: pass num_frames with a frame loader")
        num_frames = len(frames)
    n = int(num_frames)
    index = np.asarray(anchor_index, np.int64)
    valid = np.asarray(anchor_valid, bool)
    anchors = index[valid].tolist()
    if not anchors or len(set(anchors)) != len(anchors) or min(anchors) < 0 or max(anchors) >= n:
        raise InputError(
            f"VIRST propagation: need distinct valid anchors in [0, {n}), got {anchors}"
        )
    o, k = seg_prompts.shape[:2]
    bank, cond, heads, anchor_video = anchor_memory_jit(
        model,
        _load(frames, np.where(valid, index, 0).tolist()),
        index,
        valid,
        seg_prompts,
        multimask=multimask,
        video_size=video_size,
    )
    heads, anchor_video = jax.device_get((heads, anchor_video))
    promote = None if anchor_cfg is None else anchor_cfg.promote_rule()
    if promote is not None:  # free conditioning slots for promoted frames
        bank = bank.grow_cond(anchor_cfg.extra_cond_slots())
    d = heads.obj_ptr.shape[-1]
    anchor_out = {  # video frame -> (logits [o, H, W], scores [o], ptr [o, d], promoted [o])
        int(index[j]): (
            np.asarray(anchor_video[:, j, 0], np.float32),
            heads.object_score_logits.reshape(o, k)[:, j],
            heads.obj_ptr.reshape(o, k, d)[:, j],
            np.zeros(o, bool),
        )
        for j in np.flatnonzero(valid)
    }
    del anchor_video
    # Anchors are prompted for every object, so they are never tracked (the reference returns
    # their stored output and writes no tracked memory for them).
    to_track = [f for f in range(n) if f not in anchor_out]

    def merged(idx: list[int], tracked) -> PropagationChunk:
        """The tracked frames `idx` with the pending anchors before `idx[-1]` (all if empty)."""
        last = idx[-1] if idx else n
        pending = sorted(f for f in anchor_out if f < last)
        rows = {f: tuple(a[i] for a in tracked) for i, f in enumerate(idx)}
        rows.update((f, anchor_out.pop(f)) for f in pending)
        order = sorted(rows)
        return PropagationChunk(
            frame_index=np.asarray(order, np.int64),
            video_res_logits=np.stack([rows[f][0] for f in order]).astype(np.float32),
            object_score_logits=np.stack([rows[f][1] for f in order]).astype(np.float32),
            obj_ptr=np.stack([rows[f][2] for f in order]).astype(np.float32),
            is_anchor=np.isin(order, pending),
            promoted=np.stack([rows[f][3] for f in order]),
        )

    def chunks() -> Iterator[PropagationChunk]:
        nonlocal bank
        obj_video = jnp.zeros((o,), jnp.int32)
        step = max(min(chunk_size, len(to_track)), 1)
        for lo in range(0, len(to_track), step):
            idx = to_track[lo : lo + step]
            pad = step - len(idx)
            chunk = _load(frames, idx)
            chunk = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), chunk.dtype)])
            bank, out = prop.propagate_chunk_jit(
                model,
                bank,
                cond,
                jnp.asarray(chunk[:, None]),
                jnp.asarray(idx + [idx[-1]] * pad, jnp.int32),
                jnp.asarray(np.arange(step) < len(idx)),
                obj_video,
                jnp.int32(n),
                video_size=tuple(video_size),
                reverse=False,
                promote=promote,
            )
            del chunk
            out = jax.device_get(out)
            m = len(idx)
            yield merged(
                idx,
                (
                    out.video_res_masks[:m, :, 0],
                    out.object_score_logits[:m, :, 0],
                    out.obj_ptr[:m],
                    out.promoted[:m],
                ),
            )
        if anchor_out:
            yield merged([], None)

    return heads, chunks()


def propagate_with_anchors(
    model: Sam2Model,
    frames: FrameSource,
    anchor_index: Int[np.ndarray, "k"],
    anchor_valid: Bool[np.ndarray, "k"],
    seg_prompts: Float[Array, "o k q d"],
    *,
    num_frames: int | None = None,
    video_size: tuple[int, int],
    multimask: bool = True,
    chunk_size: int = 8,
    anchor_cfg: au.AnchorConfig | None = None,
) -> AnchoredPropagation:
    """`video_propagate`: anchors prompted with `seg_prompts`, then forward tracking from frame 0.

    Collects `iter_propagate_with_anchors` into whole-video arrays.

    Args:
        frames: the video at the model size (PIL-bicubic resized, `video_frames.load_frame`),
            uint8 [t, S, S, 3], or a loader returning the frames of a list of indices (then pass
            `num_frames`).
        anchor_index, anchor_valid: video frame of anchor j and whether slot j is used (e.g.
            `anchor_updater.eval_anchors`); valid anchors must be distinct and in [0, t).
        seg_prompts: per object and anchor slot, the q prompt tokens (VIRST: `SegPrompter`
            output at the anchors, `[b, q, k, 256]` transposed to `[b, k, q, 256]`).
        video_size: (H, W) of the output logits.
        multimask: decode anchors with multimask output (VIRST eval: True). Tracked frames follow
            the SAM2 config (`multimask_output_for_tracking`).
        chunk_size: frames per compiled scan call.
        anchor_cfg: with `dynamic_update`, tracked frames whose predicted quality clears the
            threshold become conditioning frames (`anchor_updater.PromoteRule`; up to
            `max_dynamic_anchors` more slots). None / off: the released code.

    Returns:
        `AnchoredPropagation`; `video_res_logits[f, i]` are object i's mask logits on frame f.
    """
    heads, chunks = iter_propagate_with_anchors(
        model,
        frames,
        anchor_index,
        anchor_valid,
        seg_prompts,
        num_frames=num_frames,
        video_size=video_size,
        multimask=multimask,
        chunk_size=chunk_size,
        anchor_cfg=anchor_cfg,
    )
    n = len(frames) if num_frames is None else int(num_frames)
    o, d = seg_prompts.shape[0], heads.obj_ptr.shape[-1]
    logits = np.zeros((n, o, *video_size), np.float32)
    scores = np.zeros((n, o), np.float32)
    ptrs = np.zeros((n, o, d), np.float32)
    is_anchor = np.zeros(n, bool)
    promoted = np.zeros((n, o), bool)
    for c in chunks:
        logits[c.frame_index] = c.video_res_logits
        scores[c.frame_index] = c.object_score_logits
        ptrs[c.frame_index] = c.obj_ptr
        is_anchor[c.frame_index] = c.is_anchor
        promoted[c.frame_index] = c.promoted
    return AnchoredPropagation(
        video_res_logits=logits,
        object_score_logits=scores,
        obj_ptr=ptrs,
        is_anchor=is_anchor,
        anchor_heads=heads,
        promoted=promoted,
    )
