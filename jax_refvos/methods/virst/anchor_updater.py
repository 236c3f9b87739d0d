"""VIRST's Temporal Dynamic Anchor Updater (TDAU): anchor choice, rollout order, anchor heads.

Port of `model/VIRST.py::select_keyframes`, the frame bookkeeping of `VirstForCausalLM.forward`
(`use_cond_frames`) and `model/sam2/sam2_virst.py::SAM2Virst.forward_tracking` /
`_forward_sam_heads_with_embedding` (AIDASLab/VIRST @ 954276f). Spec: shared/reference/virst.md
§4.1-4.3, §5.2, §9.

- Eval: K = max(1, T // 4) anchors, uniform (`eval_anchors`, `eval_anchors_np`).
- Training: min(3, T) random distinct anchors, optionally with their +1..+5 / -1, -2 windows;
  the sub-sequence is processed first anchor first, then in index order (`rollout_plan`).
- Anchor frames are SAM2 initial conditioning frames: no memory, the learned segmentation prompts
  as the sparse prompt tokens (`anchor_prompt_outputs`).
- `AnchorConfig.dynamic_update` (default off = the released code, which has no such step): the
  paper's "dynamically updated anchor frames": during propagation a tracked frame whose
  predicted quality clears a threshold becomes a conditioning frame (`PromoteRule`,
  `promote_into_bank`; `virst_propagation` passes it to the SAM2 scan).

Shapes: `b` objects/videos, `t` frames (a static capacity), `k` anchors, `q` prompt tokens,
`m` candidate masks.
"""

import dataclasses

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from jax_refvos.errors import InputError
from jax_refvos.model.sam2 import memory_bank as mb
from jax_refvos.model.sam2.sam2_model import NO_OBJ_SCORE, ImageFeatures, Sam2Model, SamOutput


@dataclasses.dataclass(frozen=True, kw_only=True)
class AnchorConfig:
    """TDAU settings. The defaults are the released code's (hard-coded there)."""

    eval_frames_per_anchor: int = 4  # eval: K = max(1, T // 4)
    num_train_anchors: int = 3  # training: min(3, T) random anchors
    window_forward: int = 5  # training window a+1 .. a+5 (`max_prop`)
    window_backward: int = 2  # training window a-1, a-2 (hard-coded)
    use_cond_frames: bool = False  # training: also process the window frames
    # Paper option, not in the released code (virst.md §4: "dynamically updated anchor frames
    # that provide stable temporal cues under large motion, occlusion, reappearance").
    dynamic_update: bool = False
    promote_threshold: float = 0.9  # quality = best predicted IoU x sigmoid(object score)
    promote_min_gap: int = 4  # frames to the nearest anchor before a frame may be promoted
    max_dynamic_anchors: int = 8  # conditioning slots reserved for promoted frames

    def promote_rule(self) -> "PromoteRule | None":
        """The propagation hook of the dynamic update, or None when it is off."""
        if not self.dynamic_update:
            return None
        return PromoteRule(threshold=self.promote_threshold, min_gap=self.promote_min_gap)

    def max_tracked_frames(self, num_frames: int) -> int:
        """Static bound on the tracked (non-anchor) frames of a training rollout over t frames."""
        if not self.use_cond_frames:
            return 0
        k = min(self.num_train_anchors, num_frames)
        return min(num_frames, k * (1 + self.window_forward + self.window_backward)) - k

    def extra_cond_slots(self) -> int:
        """Conditioning slots the memory bank needs beyond the anchors."""
        return self.max_dynamic_anchors if self.dynamic_update else 0


# ----------------------------------------------------------------------------- eval anchors
def _torch_linspace_f32(end: float, steps, i):
    """`torch.linspace(0, end, steps)` on CPU in float32, element `i` (its two-sided formula).

    torch computes `step = end / (steps - 1)` in float32, then `step * i` for the first half and
    `end - step * (steps - 1 - i)` for the second. Rounding these float32 values (half to even)
    differs from exact rational rounding for some T (the first is T = 94), so we follow torch.
    With one step torch returns the start (0).
    """
    xp = jnp if isinstance(i, jax.Array) else np
    f32 = xp.float32
    denom = xp.maximum(steps - 1, 1)
    step = xp.asarray(end, f32) / xp.asarray(denom, f32)
    lo = step * xp.asarray(i, f32)
    hi = xp.asarray(end, f32) - step * xp.asarray(steps - 1 - i, f32)
    return xp.where(steps == 1, xp.asarray(0, f32), xp.where(i < steps // 2, lo, hi))


def eval_anchors_np(num_frames: int, *, frames_per_anchor: int = 4) -> np.ndarray:
    """`select_keyframes(is_evaluation=True)`: int64[K] anchor indices, K = max(1, T // 4)."""
    if num_frames < 1:
        raise InputError(f"anchor_updater.py: need at least one frame, got {num_frames}")
    k = max(1, num_frames // frames_per_anchor)
    i = np.arange(k)
    return np.rint(_torch_linspace_f32(num_frames - 1, k, i)).astype(np.int64)


def eval_anchors(
    num_valid_frames: Int[Array, ""] | int, *, k_max: int, frames_per_anchor: int = 4
) -> tuple[Int[Array, "k"], Bool[Array, "k"]]:
    """`eval_anchors_np` with static shapes: int32[k_max] anchors (0 past K) and a valid mask.

    `num_valid_frames` may be traced (>= 1); `k_max` must be >= max(1, T // frames_per_anchor)
    for the largest T used (anchors beyond k_max are dropped).
    """
    t = jnp.asarray(num_valid_frames, jnp.int32)
    k = jnp.maximum(1, t // frames_per_anchor)
    i = jnp.arange(k_max, dtype=jnp.int32)
    idx = jnp.round(_torch_linspace_f32(t - 1, k, i)).astype(jnp.int32)  # half to even
    valid = i < k
    return jnp.where(valid, idx, 0), valid


# ----------------------------------------------------------------------------- training anchors
def train_anchors(key: Array, num_frames: int, *, num_anchors: int = 3) -> Int[Array, "k"]:
    """Sorted int32[min(num_anchors, T)] distinct random anchors (`randperm(T)[:K].sort()`).

    # DEVIATION(VIRST): drawn with JAX's PRNG, not torch's `randperm`: the distribution is the
    # same (uniform K-subsets), the draws are not.
    """
    k = min(num_anchors, num_frames)
    return jnp.sort(jax.random.permutation(key, num_frames)[:k]).astype(jnp.int32)


def train_anchors_np(
    rng: np.random.Generator, num_frames: int, *, num_anchors: int = 3
) -> np.ndarray:
    """Host version of `train_anchors` (numpy's generator; same distribution)."""
    k = min(num_anchors, num_frames)
    return np.sort(rng.permutation(num_frames)[:k]).astype(np.int64)


@flax.struct.dataclass
class RolloutPlan:
    """Which frames a training rollout processes, and in which order (static shapes, t = T).

    Local position j (0 <= j < n) is the j-th processed frame of the sub-sequence in frame order;
    SAM2's memory sees local positions as frame indices (`forward_tracking(frame_idx=stage_id)`).
    """

    window_valid: Bool[Array, "t"]  # per video frame: in the sub-sequence (anchor or window)
    frames: Int[Array, "t"]  # video frame of local position j (0 past n)
    frame_valid: Bool[Array, "t"]  # j < n
    is_anchor: Bool[Array, "t"]  # local position j is an anchor (prompted, no memory)
    prompt_index: Int[Array, "t"]  # which anchor's prompt (index into the sorted anchors), or -1
    order: Int[Array, "t"]  # local positions in processing order (0 past n)
    order_valid: Bool[Array, "t"]


def rollout_plan(
    anchors: Int[Array, "k"],
    num_frames: int,
    *,
    use_cond_frames: bool,
    window_forward: int = 5,
    window_backward: int = 2,
    frame_valid: Bool[Array, "t"] | None = None,
) -> RolloutPlan:
    """The frames `VirstForCausalLM.forward` hands to `SAM2Virst.forward_tracking`.

    `anchors`: sorted distinct frame indices (from `train_anchors`). Without `use_cond_frames`
    the sub-sequence is the anchors alone; with it, every frame within +1..+window_forward and
    -1..-window_backward of an anchor joins. Processing order: the first anchor, then every
    other local position ascending. `frame_valid` (default all) masks padded frames out of the
    windows; anchors must be valid frames.
    """
    anchors = jnp.asarray(anchors, jnp.int32)
    g = jnp.arange(num_frames, dtype=jnp.int32)
    d = g[:, None] - anchors[None, :]  # [t, k]
    is_anchor_frame = jnp.any(d == 0, axis=1)
    in_window = (d >= -window_backward) & (d <= window_forward)
    window_valid = jnp.any(in_window, axis=1) if use_cond_frames else is_anchor_frame
    if frame_valid is not None:  # padded frames past the video's end never join
        window_valid = window_valid & frame_valid
    n = jnp.sum(window_valid)
    (frames,) = jnp.nonzero(window_valid, size=num_frames, fill_value=0)
    frames = frames.astype(jnp.int32)
    frame_valid = g < n
    is_anchor = is_anchor_frame[frames] & frame_valid
    prompt_index = jnp.where(
        is_anchor, jnp.searchsorted(anchors, frames).astype(jnp.int32), jnp.int32(-1)
    )
    first = jnp.sum(window_valid & (g < anchors[0])).astype(jnp.int32)  # local pos of anchor 0
    sort_key = jnp.where(g == first, -1, jnp.where(frame_valid, g, num_frames + g))
    order = jnp.argsort(sort_key).astype(jnp.int32)
    order_valid = g < n
    return RolloutPlan(
        window_valid=window_valid,
        frames=frames,
        frame_valid=frame_valid,
        is_anchor=is_anchor,
        prompt_index=prompt_index,
        order=jnp.where(order_valid, order, 0),
        order_valid=order_valid,
    )


def rollout_plan_np(
    anchors, num_frames: int, *, use_cond_frames: bool, window_forward=5, window_backward=2
) -> tuple[list[int], list[int]]:
    """Host version: (sub-sequence video frames, processing order of local positions)."""
    anchor_list = sorted(int(a) for a in anchors)
    window = set(anchor_list)
    if use_cond_frames:
        for a in anchor_list:
            window.update(range(a + 1, min(a + window_forward, num_frames - 1) + 1))
            window.update(range(max(a - window_backward, 0), a))
    frames = sorted(window)
    first = frames.index(anchor_list[0])
    return frames, [first] + [j for j in range(len(frames)) if j != first]


# ----------------------------------------------------------------------------- dynamic update
def anchor_quality(
    ious: Float[Array, "b m"], object_score_logits: Float[Array, "b 1"]
) -> Float[Array, "b"]:
    """Predicted quality of a frame's output: best predicted IoU x sigmoid(object score).

    Our choice (the paper gives no formula): the decoder's IoU head (sigmoid outputs in SAM2.1)
    rates the mask, the object score says whether the object is there at all.
    """
    return jnp.max(ious, axis=-1) * jax.nn.sigmoid(object_score_logits[:, 0])


def promote_into_bank(
    bank: mb.MemoryBank,
    t: Int[Array, ""],
    mem: Float[Array, "b s e"],
    obj_ptr: Float[Array, "b d"],
    quality: Float[Array, "b"],
    candidate: Bool[Array, "b"],
    *,
    threshold: float,
    min_gap: int,
) -> tuple[mb.MemoryBank, Bool[Array, "b"]]:
    """Promote tracked frame `t` to a conditioning frame (a dynamic anchor) where it qualifies.

    Qualifies: a `candidate` (tracked, not already conditioning), `quality >= threshold`, at least
    `min_gap` frames from every conditioning frame (so a run of confident frames does not fill
    the slots), and a free conditioning slot. A promoted frame's memory and object pointer go to
    that slot: from then on SAM2 treats it as it treats the anchors (never evicted; temporal
    index of a conditioning frame when among the closest `max_cond_frames_in_attn`), and it is
    not also written to the ring of tracked memories (the caller skips that for `promoted`).
    """
    c = bank.cond_valid.shape[1]
    free = ~bank.cond_valid
    slot = jnp.argmax(free, axis=-1)
    far = jnp.iinfo(jnp.int32).max
    gap = jnp.min(jnp.where(bank.cond_valid, jnp.abs(bank.cond_frame - t), far), axis=-1)
    promoted = candidate & (quality >= threshold) & (gap >= min_gap) & jnp.any(free, axis=-1)
    hit = (jnp.arange(c)[None] == slot[:, None]) & promoted[:, None]  # [b, c]
    bank = bank.replace(
        cond_feats=jnp.where(
            hit[..., None, None], mem[:, None].astype(bank.cond_feats.dtype), bank.cond_feats
        ),  # fmt: skip
        cond_ptr=jnp.where(hit[..., None], obj_ptr[:, None], bank.cond_ptr),
        cond_frame=jnp.where(hit, jnp.asarray(t, jnp.int32), bank.cond_frame),
        cond_valid=bank.cond_valid | hit,
    )
    return bank, promoted


@dataclasses.dataclass(frozen=True)
class PromoteRule:
    """The dynamic update as a propagation hook (`propagation.propagate_chunk(promote=...)`).

    Hashable and compared by value, so compiled propagation programs are reused across calls.
    """

    threshold: float
    min_gap: int

    def __call__(
        self, bank: mb.MemoryBank, t, out: SamOutput, mem, candidate
    ) -> tuple[mb.MemoryBank, Bool[Array, "b"]]:
        quality = anchor_quality(out.ious, out.object_score_logits)
        return promote_into_bank(
            bank,
            t,
            mem,
            out.obj_ptr,
            quality,
            candidate,
            threshold=self.threshold,
            min_gap=self.min_gap,
        )


# ----------------------------------------------------------------------------- anchor heads
@flax.struct.dataclass
class AnchorHeads:
    """SAM heads of anchor frames (`_forward_sam_heads_with_embedding` outputs)."""

    low_res_multimasks: Float[Array, "b m H4 W4"]  # after the object-score gate (-1024)
    low_res_masks: Float[Array, "b 1 H4 W4"]  # the best (multimask) or only mask
    ious: Float[Array, "b m"]
    object_score_logits: Float[Array, "b 1"]
    obj_ptr: Float[Array, "b d"]  # after the no-object mix


def anchor_prompt_outputs(
    model: Sam2Model,
    feats: ImageFeatures,
    seg_prompts: Float[Array, "b k q d"],
    *,
    multimask: bool,
    training: bool = False,
) -> AnchorHeads:
    """Anchor frames' SAM heads from the learned prompts; outputs flattened to [b * k, ...].

    `feats` are the anchor frames' image features, [b * k, ...] in (b, k) order. Each anchor is an
    initial conditioning frame: features + `no_mem_embed`, the k-th prompt's q tokens replace the
    sparse prompt embeddings, dense = `no_mask_embed`. VIRST decodes with `multimask=True` at eval
    (best mask by predicted IoU) and `multimask=False, training=True` in training (mask token 0;
    the stability fallback is off in torch's train mode).
    """
    b, k, q, d = seg_prompts.shape
    if feats.pix.shape[0] != b * k:
        raise InputError(
            f"anchor_updater.py: {feats.pix.shape[0]} anchor feature maps for {b}x{k} prompts"
        )
    prompts = seg_prompts.reshape(b * k, q, d)
    n = b * k
    # The prompt encoder's dense output only (its sparse output of a dummy padding point is
    # discarded, as in the reference).
    _, dense = model.sam_prompt_encoder(
        points=(jnp.zeros((n, 1, 2), jnp.float32), -jnp.ones((n, 1), jnp.int32)),
        boxes=None,
        masks=None,
    )
    dec = model.sam_mask_decoder(
        model.pix_without_memory(feats),
        model.sam_prompt_encoder.get_dense_pe(),
        prompts.astype(dense.dtype),
        dense,
        multimask_output=multimask,
        repeat_image=False,
        high_res_features=feats.high_res,
        training=training,
    )
    obj_score = dec.object_score_logits
    appearing = obj_score > 0
    masks = dec.masks
    if model.cfg.mask_decoder.pred_obj_scores:
        masks = jnp.where(appearing[:, :, None, None], masks, NO_OBJ_SCORE)
    tokens = dec.sam_tokens_out
    if multimask:
        best = jnp.argmax(dec.iou_pred, axis=-1)
        low = jnp.take_along_axis(masks, best[:, None, None, None], axis=1)
        token = tokens[:, 0]
        if tokens.shape[1] > 1:  # use_multimask_token_for_obj_ptr
            token = jnp.take_along_axis(tokens, best[:, None, None], axis=1)[:, 0]
    else:
        low, token = masks, tokens[:, 0]
    obj_ptr = model.obj_ptr_proj(token).astype(jnp.float32)
    if model.cfg.mask_decoder.pred_obj_scores:
        lam = (
            jax.nn.sigmoid(obj_score)
            if model.cfg.soft_no_obj_ptr
            else appearing.astype(jnp.float32)
        )
        if model.cfg.fixed_no_obj_ptr:
            obj_ptr = lam * obj_ptr
        obj_ptr = obj_ptr + (1 - lam) * model.no_obj_ptr[...]
    return AnchorHeads(
        low_res_multimasks=masks,
        low_res_masks=low,
        ious=dec.iou_pred,
        object_score_logits=obj_score,
        obj_ptr=obj_ptr,
    )
