"""Fixed-capacity SAM2 memory bank: a pytree that replaces the reference's dicts keyed by frame.

Port of the memory bookkeeping in `sam2/modeling/sam2_base.py::_prepare_memory_conditioned_features`
and `sam2/modeling/sam2_utils.py::select_closest_cond_frames` (sam2 1.1.0, eval mode,
`memory_temporal_stride_for_eval=1`).

The reference keeps `cond_frame_outputs` and `non_cond_frame_outputs` as dicts and walks them with
Python loops. Here every kind of memory has a static capacity and a `valid` mask:

- conditioning slots (`cond_*`, capacity `c`): prompted frames, never evicted;
- a ring of the last `num_maskmem - 1` tracked frames' memories (`mem_*`);
- a ring of the last `max_obj_ptrs_in_encoder - 1` tracked frames' object pointers (`ptr_*`).

`gather` turns the bank into the attention memory for frame `t` with exactly the reference's
selection: the selected conditioning frames (all, or the `max_cond_frames_in_attn` closest) with
temporal index `num_maskmem - 1`; tracked frames and unselected conditioning frames at distance
r in 1..num_maskmem-1 with temporal index r - 1; object pointers of selected conditioning frames in
the past (signed distance) and of frames at distance 1..min(T, 16)-1. Attention over keys is
order-free, so the memory is laid out by slot, not by the reference's list order.
"""

import flax.struct
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

# A frame index no real frame can be within any window of.
NO_FRAME = -(2**30)


@flax.struct.dataclass
class MemoryBank:
    """Per-object SAM2 memory. `b` = objects (over all videos), `s` = h*w tokens of the s16 map."""

    cond_feats: Float[Array, "b c s e"]
    cond_ptr: Float[Array, "b c d"]
    cond_frame: Int[Array, "b c"]
    cond_valid: Bool[Array, "b c"]
    mem_feats: Float[Array, "b r s e"]
    mem_frame: Int[Array, "b r"]
    mem_valid: Bool[Array, "b r"]
    ptr: Float[Array, "b p d"]
    ptr_frame: Int[Array, "b p"]
    ptr_valid: Bool[Array, "b p"]

    @classmethod
    def empty(
        cls, *, b: int, c: int, r: int, p: int, s: int, e: int, d: int, dtype=jnp.bfloat16
    ) -> "MemoryBank":
        """An empty bank (no valid slot) with the given capacities."""

        def frames(n):
            return jnp.full((b, n), NO_FRAME, jnp.int32)

        return cls(
            cond_feats=jnp.zeros((b, c, s, e), dtype),
            cond_ptr=jnp.zeros((b, c, d), jnp.float32),
            cond_frame=frames(c),
            cond_valid=jnp.zeros((b, c), bool),
            mem_feats=jnp.zeros((b, r, s, e), dtype),
            mem_frame=frames(r),
            mem_valid=jnp.zeros((b, r), bool),
            ptr=jnp.zeros((b, p, d), jnp.float32),
            ptr_frame=frames(p),
            ptr_valid=jnp.zeros((b, p), bool),
        )

    def grow_cond(self, extra: int) -> "MemoryBank":
        """The same bank with `extra` more (empty) conditioning slots at the end."""
        if extra <= 0:
            return self

        def pad(x, value):
            widths = [(0, 0), (0, extra)] + [(0, 0)] * (x.ndim - 2)
            return jnp.pad(x, widths, constant_values=value)

        return self.replace(
            cond_feats=pad(self.cond_feats, 0),
            cond_ptr=pad(self.cond_ptr, 0),
            cond_frame=pad(self.cond_frame, NO_FRAME),
            cond_valid=pad(self.cond_valid, False),
        )

    def add_cond(
        self,
        slot: int,
        feats: Float[Array, "b s e"],
        ptr: Float[Array, "b d"],
        frame: Int[Array, "b"],
        valid: Bool[Array, "b"],
    ) -> "MemoryBank":
        """Write conditioning slot `slot` for the objects where `valid` (others keep theirs)."""
        return self.replace(
            cond_feats=_put(self.cond_feats, feats, slot, valid),
            cond_ptr=_put(self.cond_ptr, ptr, slot, valid),
            cond_frame=_put(self.cond_frame, frame, slot, valid),
            cond_valid=self.cond_valid.at[:, slot].set(valid | self.cond_valid[:, slot]),
        )

    def push(
        self,
        t: Int[Array, ""],
        feats: Float[Array, "b s e"],
        ptr: Float[Array, "b d"],
        write: Bool[Array, "b"],
    ) -> "MemoryBank":
        """Record tracked frame `t` for the objects where `write` (not a conditioning frame)."""
        r, p = self.mem_valid.shape[1], self.ptr_valid.shape[1]
        frame = jnp.full(write.shape, t, jnp.int32)
        ms, ps = t % r, t % p
        return self.replace(
            mem_feats=_put(self.mem_feats, feats, ms, write),
            mem_frame=_put(self.mem_frame, frame, ms, write),
            mem_valid=_put(self.mem_valid, write, ms, write),
            ptr=_put(self.ptr, ptr, ps, write),
            ptr_frame=_put(self.ptr_frame, frame, ps, write),
            ptr_valid=_put(self.ptr_valid, write, ps, write),
        )


def _put(buf: jax.Array, x: jax.Array, slot, where: Bool[Array, "b"]) -> jax.Array:
    """buf[:, slot] = x for the batch rows in `where`; other rows keep their value."""
    keep = where.reshape(where.shape + (1,) * (x.ndim - 1))
    return buf.at[:, slot].set(jnp.where(keep, x.astype(buf.dtype), buf[:, slot]))


def select_cond(
    t: Int[Array, ""], frame: Int[Array, "b c"], valid: Bool[Array, "b c"], max_cond: int
) -> Bool[Array, "b c"]:
    """`select_closest_cond_frames`: which conditioning slots frame `t` attends to.

    All of them when `max_cond == -1` or there are at most `max_cond`; otherwise the closest one
    before `t`, the closest at/after `t`, then the nearest others (ties by slot order, which is the
    reference's dict insertion order).
    """
    if max_cond == -1:
        return valid
    big = jnp.int32(2**30)
    before = valid & (frame < t)
    after = valid & (frame >= t)
    idx_before = jnp.max(jnp.where(before, frame, -big), -1, keepdims=True)
    idx_after = jnp.min(jnp.where(after, frame, big), -1, keepdims=True)
    picked = (before & (frame == idx_before)) | (after & (frame == idx_after))
    n_left = max_cond - picked.sum(-1, keepdims=True)
    c = frame.shape[1]
    key = jnp.abs(frame - t) * c + jnp.arange(c)
    others = valid & ~picked
    rank = jnp.sum(others[:, None, :] & (key[:, None, :] < key[:, :, None]), -1)
    chosen = picked | (others & (rank < n_left))
    few = valid.sum(-1, keepdims=True) <= max_cond
    return jnp.where(few, valid, chosen)


@flax.struct.dataclass
class GatheredMemory:
    """What frame `t` attends to: spatial memories, then object-pointer tokens."""

    feats: Float[Array, "b m s e"]  # spatial memory slots (cond, then tracked)
    feats_valid: Bool[Array, "b m"]
    feats_tpos: Int[Array, "b m"]  # index into maskmem_tpos_enc
    ptr: Float[Array, "b q d"]  # object pointers (cond, then tracked)
    ptr_valid: Bool[Array, "b q"]
    ptr_dist: Int[Array, "b q"]  # temporal distance fed to the pointer encoding


def gather(
    bank: MemoryBank,
    t: Int[Array, ""],
    *,
    num_maskmem: int,
    max_cond: int,
    reverse: bool,
    signed_ptr_dist: bool,
    ptrs_in_past_only: bool,
) -> GatheredMemory:
    """Select the memory frame `t` sees (see the module docstring)."""
    sign = -1 if reverse else 1
    selected = select_cond(t, bank.cond_frame, bank.cond_valid, max_cond)
    cond_dist = (t - bank.cond_frame) * sign  # > 0: in the past of the tracking direction
    mem_dist = (t - bank.mem_frame) * sign
    in_window = lambda dist: (dist >= 1) & (dist <= num_maskmem - 1)
    unselected_near = bank.cond_valid & ~selected & in_window(cond_dist)
    cond_use = selected | unselected_near
    cond_tpos = jnp.where(selected, num_maskmem - 1, cond_dist - 1)
    mem_use = bank.mem_valid & in_window(mem_dist)

    max_ptr = bank.ptr_valid.shape[1] + 1  # max_obj_ptrs_in_encoder
    ptr_window = lambda dist: (dist >= 1) & (dist <= max_ptr - 1)
    past = cond_dist >= 0 if ptrs_in_past_only else jnp.ones_like(selected)
    ptr_dist_cond = cond_dist if signed_ptr_dist else jnp.abs(cond_dist)
    cond_ptr_use = (selected & past) | (bank.cond_valid & ~selected & ptr_window(cond_dist))
    track_ptr_dist = (t - bank.ptr_frame) * sign
    track_ptr_use = bank.ptr_valid & ptr_window(track_ptr_dist)
    return GatheredMemory(
        feats=jnp.concatenate([bank.cond_feats, bank.mem_feats], 1),
        feats_valid=jnp.concatenate([cond_use, mem_use], 1),
        feats_tpos=jnp.concatenate([cond_tpos, mem_dist - 1], 1),
        ptr=jnp.concatenate([bank.cond_ptr, bank.ptr], 1),
        ptr_valid=jnp.concatenate([cond_ptr_use, track_ptr_use], 1),
        ptr_dist=jnp.concatenate([ptr_dist_cond, track_ptr_dist], 1),
    )


def clip_index(index: Int[Array, "..."], n: int) -> Int[Array, "..."]:
    """Indices of invalid slots can be anything; keep gathers in range."""
    return jax.numpy.clip(index, 0, n - 1)
