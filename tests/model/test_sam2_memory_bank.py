"""MemoryBank selection equals the reference's dict-walking rules (no torch needed).

The expected sets come from a plain-Python transcription of
`sam2_base.py::_prepare_memory_conditioned_features` and `select_closest_cond_frames` (eval mode):
which frames' memories are attended to with which temporal index, and which frames' object
pointers with which distance.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jax_refvos.model.sam2 import memory_bank as mb

NUM_MASKMEM, MAX_PTRS = 7, 16


def reference_select(t, cond, max_cond):
    if max_cond == -1 or len(cond) <= max_cond:
        return list(cond), []
    sel = []
    before = max((c for c in cond if c < t), default=None)
    if before is not None:
        sel.append(before)
    after = min((c for c in cond if c >= t), default=None)
    if after is not None:
        sel.append(after)
    rest = sorted((c for c in cond if c not in sel), key=lambda c: abs(c - t))
    sel += rest[: max_cond - len(sel)]
    return sel, [c for c in cond if c not in sel]


def reference_memory(t, cond, tracked, max_cond, num_frames, reverse):
    """-> ({(frame, tpos_index)}, {(frame, ptr_dist)}) as the reference builds them."""
    sel, unsel = reference_select(t, cond, max_cond)
    mem = {(c, NUM_MASKMEM - 1) for c in sel}
    for t_pos in range(1, NUM_MASKMEM):
        t_rel = NUM_MASKMEM - t_pos
        prev = t + t_rel if reverse else t - t_rel
        if prev in tracked or prev in unsel:
            mem.add((prev, NUM_MASKMEM - t_pos - 1))
    sign = -1 if reverse else 1
    ptr_cond = [c for c in sel if (c >= t if reverse else c <= t)]
    ptrs = {(c, (t - c) * sign) for c in ptr_cond}
    for d in range(1, min(num_frames, MAX_PTRS)):
        f = t + d if reverse else t - d
        if f < 0 or f >= num_frames:
            break
        if f in tracked or f in unsel:
            ptrs.add((f, d))
    return mem, ptrs


def build_bank(cond, tracked):
    """The bank after `tracked` frames were pushed in that order (push() is tested below)."""
    r, p = NUM_MASKMEM - 1, MAX_PTRS - 1
    bank = jax.tree.map(np.array, mb.MemoryBank.empty(b=1, c=len(cond), r=r, p=p, s=1, e=1, d=1))
    bank.cond_frame[0] = cond
    bank.cond_valid[0] = True
    for f in tracked:
        bank.mem_frame[0, f % r], bank.mem_valid[0, f % r] = f, True
        bank.ptr_frame[0, f % p], bank.ptr_valid[0, f % p] = f, True
    return bank


_gather = jax.jit(
    mb.gather,
    static_argnames=("num_maskmem", "max_cond", "reverse", "signed_ptr_dist", "ptrs_in_past_only"),
)


def ours(bank, t, max_cond, reverse):
    g = mb.gather(
        bank,
        jnp.int32(t),
        num_maskmem=NUM_MASKMEM,
        max_cond=max_cond,
        reverse=reverse,
        signed_ptr_dist=True,
        ptrs_in_past_only=True,
    )
    frames = np.concatenate([np.asarray(bank.cond_frame), np.asarray(bank.mem_frame)], 1)[0]
    ptr_frames = np.concatenate([np.asarray(bank.cond_frame), np.asarray(bank.ptr_frame)], 1)[0]
    mem = {
        (int(f), int(p))
        for f, p, v in zip(
            frames, np.asarray(g.feats_tpos)[0], np.asarray(g.feats_valid)[0], strict=True
        )
        if v
    }
    ptrs = {
        (int(f), int(p))
        for f, p, v in zip(
            ptr_frames, np.asarray(g.ptr_dist)[0], np.asarray(g.ptr_valid)[0], strict=True
        )
        if v
    }
    return mem, ptrs


CASES = [
    # (cond frames in insertion order, num_frames)
    ([0], 30),
    ([3], 30),
    ([0, 10], 30),
    ([2, 9, 20, 25], 30),
    ([0, 2, 8, 10], 12),  # equidistant candidates: ties resolved by insertion order
    ([5, 1, 14, 7, 22], 25),
]


@pytest.mark.parametrize("max_cond", [-1, 2, 3])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("case", range(len(CASES)))
def test_gather_equals_reference(case, max_cond, reverse):
    cond, n = CASES[case]
    start = min(cond) if not reverse else max(cond)
    order = range(start, n) if not reverse else range(start, -1, -1)
    tracked = []
    for t in order:
        if t in cond:
            continue
        bank = build_bank(cond, tracked)
        want = reference_memory(t, cond, set(tracked), max_cond, n, reverse)
        got = ours(bank, t, max_cond, reverse)
        assert got[0] == want[0], f"t={t}: memory frames"
        assert got[1] == want[1], f"t={t}: pointer frames"
        tracked.append(t)


def test_select_cond_all_subsets():
    frames = [0, 3, 4, 9, 15]
    select = jax.jit(mb.select_cond, static_argnums=3)
    for k in range(1, 6):
        for subset in itertools.combinations(frames, k):
            for t in range(0, 17, 2):
                want, _ = reference_select(t, list(subset), 3)
                arr = jnp.array([list(subset)])
                got = select(jnp.int32(t), arr, jnp.ones_like(arr, bool), 3)
                assert sorted(np.asarray(arr)[np.asarray(got)].tolist()) == sorted(want)


def test_push_matches_ring_layout():
    bank = mb.MemoryBank.empty(b=1, c=1, r=6, p=15, s=1, e=1, d=1, dtype=jnp.float32)
    for f in range(3, 20):
        bank = bank.push(jnp.int32(f), jnp.zeros((1, 1, 1)), jnp.zeros((1, 1)), jnp.array([True]))
    want = build_bank([0], list(range(3, 20)))
    np.testing.assert_array_equal(bank.mem_frame, want.mem_frame)
    np.testing.assert_array_equal(bank.ptr_frame, want.ptr_frame)
    np.testing.assert_array_equal(bank.ptr_valid, want.ptr_valid)


def test_push_respects_write_mask():
    bank = mb.MemoryBank.empty(b=2, c=1, r=6, p=15, s=2, e=3, d=4, dtype=jnp.float32)
    bank = bank.push(jnp.int32(4), jnp.ones((2, 2, 3)), jnp.ones((2, 4)), jnp.array([True, False]))
    assert bank.mem_valid[:, 4].tolist() == [True, False]
    assert float(bank.mem_feats[1].sum()) == 0.0
    assert bank.ptr_frame[0, 4] == 4 and bank.ptr_frame[1, 4] == mb.NO_FRAME
