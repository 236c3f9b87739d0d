"""Axial RoPE, `MemoryAttention`, `MemoryEncoder` without torch: shapes, jit, masks, RoPE maths."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jax_refvos.model.sam2.config import MemoryAttentionConfig, MemoryEncoderConfig
from jax_refvos.model.sam2.memory_attention import MemoryAttention
from jax_refvos.model.sam2.memory_encoder import MemoryEncoder
from jax_refvos.model.sam2.position import sine_pe_2d
from jax_refvos.model.sam2.rope import RoPEAttention, apply_rope, rope_tables
from jax_refvos.weights.torch_names import torch_key_map

# Distinct dims (R11); the token grid must be square (side 7), the head dim a multiple of 4.
B, SIDE, D, E, HEADS, PTR = 3, 7, 32, 12, 2, 4
S = SIDE * SIDE
ATTN_CFG = MemoryAttentionConfig(
    d_model=D, mem_dim=E, num_layers=2, num_heads=HEADS, dim_feedforward=40
)


def _normal(seed: int, *shape: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _complex_rope(x: np.ndarray, h: int, w: int, theta: float) -> np.ndarray:
    """Independent float64 version of the reference's complex-number rotation."""
    k = x.shape[-1]
    freqs = 1.0 / theta ** (np.arange(0, k, 4)[: k // 4] / k)
    t = np.arange(h * w)
    angles = np.concatenate([np.outer(t % w, freqs), np.outer(t // w, freqs)], -1)
    z = x[..., 0::2] + 1j * x[..., 1::2]
    z = z * np.exp(1j * angles)
    return np.stack([z.real, z.imag], -1).reshape(x.shape)


def test_apply_rope_matches_complex_rotation_and_preserves_norms():
    x = _normal(0, 2, 3, 5 * 5, 16)
    got = np.asarray(apply_rope(jnp.asarray(x), 5, 5, theta=100.0))
    np.testing.assert_allclose(got, _complex_rope(x.astype(np.float64), 5, 5, 100.0), atol=1e-5)
    # A rotation of every channel pair keeps each pair's (hence each token's) norm.
    pair_norm = lambda a: np.hypot(a[..., 0::2], a[..., 1::2])
    np.testing.assert_allclose(pair_norm(got), pair_norm(x), rtol=1e-5)
    # Token 0 sits at (0, 0): zero angle, unchanged; the others do move.
    np.testing.assert_allclose(got[:, :, 0], x[:, :, 0], atol=1e-6)
    assert np.abs(got[:, :, 1:] - x[:, :, 1:]).max() > 0.1


def test_rope_scores_depend_only_on_the_grid_offset():
    """q·k after RoPE is a function of (dy, dx) only: shifting both tokens by one grid step in x
    and two in y leaves their score unchanged (same q and k content at every position)."""
    side, k = 6, 8
    q = np.broadcast_to(_normal(1, k), (1, 1, side * side, k))
    kk = np.broadcast_to(_normal(2, k), (1, 1, side * side, k))
    rq = np.asarray(apply_rope(jnp.asarray(q), side, side))[0, 0]
    rk = np.asarray(apply_rope(jnp.asarray(kk), side, side))[0, 0]
    scores = rq @ rk.T
    idx = lambda y, x: y * side + x
    pairs = [((0, 0), (3, 2)), ((1, 4), (0, 1)), ((2, 2), (2, 2)), ((0, 3), (3, 0))]
    for (y1, x1), (y2, x2) in pairs:
        base = scores[idx(y1, x1), idx(y2, x2)]
        shifted = scores[idx(y1 + 2, x1 + 1), idx(y2 + 2, x2 + 1)]
        np.testing.assert_allclose(shifted, base, rtol=1e-5, atol=1e-5)
    # ... and does depend on the offset.
    assert abs(scores[idx(0, 0), idx(0, 1)] - scores[idx(0, 0), idx(1, 0)]) > 1e-3


def test_apply_rope_repeat_uses_the_same_table_per_grid():
    x = _normal(3, 1, 2, 3 * 16, 8)
    got = np.asarray(apply_rope(jnp.asarray(x), 4, 4, repeat=3))
    for r in range(3):
        one = np.asarray(apply_rope(jnp.asarray(x[:, :, r * 16 : (r + 1) * 16]), 4, 4))
        np.testing.assert_array_equal(got[:, :, r * 16 : (r + 1) * 16], one)


def test_rope_shape_errors():
    with pytest.raises(ValueError, match="divisible by 4"):
        rope_tables(4, 4, 6)
    with pytest.raises(ValueError, match="tokens"):
        apply_rope(jnp.zeros((1, 1, 15, 8)), 4, 4)
    attn = RoPEAttention(16, 1, kv_in_dim=E, rope_k_repeat=True, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="square"):
        attn(jnp.zeros((1, 15, 16)), jnp.zeros((1, 30, E)), jnp.zeros((1, 30, E)))
    with pytest.raises(ValueError, match="whole number"):
        attn(jnp.zeros((1, 16, 16)), jnp.zeros((1, 30, E)), jnp.zeros((1, 30, E)))
    with pytest.raises(ValueError, match="out of range"):
        attn(
            jnp.zeros((1, 16, 16)), jnp.zeros((1, 4, E)), jnp.zeros((1, 4, E)), num_k_exclude_rope=5
        )
    no_repeat = RoPEAttention(16, 1, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="rope_k_repeat=False"):
        no_repeat(jnp.zeros((1, 16, 16)), jnp.zeros((1, 32, 16)), jnp.zeros((1, 32, 16)))


def _memory_inputs(num_slots: int, seed: int = 0):
    m = num_slots * S + PTR
    return (
        jnp.asarray(_normal(seed, B, S, D)),
        jnp.asarray(_normal(seed + 1, B, S, D)),
        _normal(seed + 2, B, m, E),
        _normal(seed + 3, B, m, E),
    )


@functools.partial(nnx.jit, static_argnames="num_obj_ptr_tokens")
def _apply(model, curr, curr_pos, mem, mem_pos, valid=None, rngs=None, *, num_obj_ptr_tokens=PTR):
    # Jitted in the tests too: one compile per shape is much cheaper than eager op-by-op.
    out = model(
        curr,
        curr_pos,
        mem,
        mem_pos,
        num_obj_ptr_tokens=num_obj_ptr_tokens,
        memory_valid=valid,
        rngs=rngs,
    )
    return out


def test_memory_attention_shapes_jit_and_torch_names():
    model = MemoryAttention(ATTN_CFG, rngs=nnx.Rngs(0))
    curr, curr_pos, mem, mem_pos = _memory_inputs(num_slots=3)
    got = _apply(model, curr, curr_pos, mem, mem_pos, jnp.ones(mem.shape[:2], bool))
    assert got.shape == (B, S, D)
    assert np.std(np.asarray(got)) > 0.5  # final LayerNorm output, non-trivial
    # An all-True mask and no mask are two programs (the masked one adds a `where` before the
    # softmax); XLA may fuse them differently: 1.5e-6 measured on a 2-core EPYC, values ~1.
    np.testing.assert_allclose(got, _apply(model, curr, curr_pos, mem, mem_pos), atol=1e-5)
    keys = set(torch_key_map(model))
    assert "layers.1.cross_attn_image.k_proj.weight" in keys
    assert {"norm.weight", "norm.bias", "layers.0.norm3.weight", "layers.0.linear2.bias"} <= keys
    assert model.layers[0].cross_attn_image.k_proj.kernel.shape == (E, D)


def test_memory_attention_masked_slot_is_ignored():
    """Changing invalid tokens does nothing, and masking equals dropping the slot/pointers."""
    model = MemoryAttention(ATTN_CFG, rngs=nnx.Rngs(0))
    curr, curr_pos, mem, mem_pos = _memory_inputs(num_slots=3, seed=10)
    slot_valid = np.array([[True, False, True], [False, True, True], [False, False, True]])
    ptr_valid = np.array([[True, True, False, True], [False, True, True, True], [False] * PTR])
    valid = np.concatenate([np.repeat(slot_valid, S, axis=1), ptr_valid], axis=1)
    run = lambda mem, mem_pos: np.asarray(_apply(model, curr, curr_pos, mem, mem_pos, valid))
    base = run(mem, mem_pos)
    noisy_mem, noisy_pos = mem.copy(), mem_pos.copy()
    noisy_mem[~valid] = 50 * _normal(20, int((~valid).sum()), E)
    noisy_pos[~valid] = -7.0
    np.testing.assert_allclose(run(noisy_mem, noisy_pos), base, atol=1e-6)
    # Changing a valid token does change the output (the test can fail).
    changed = mem.copy()
    changed[:, -S - PTR] += 3.0
    assert np.abs(run(changed, mem_pos) - base).max() > 1e-3
    # Rows 0 and 1 keep 2 slots + 3 pointers each (one call), row 2 one slot and no pointer.
    for rows in ([0, 1], [2]):
        sub = lambda x, rows=rows: np.stack([x[r, valid[r]] for r in rows])
        want = _apply(
            model,
            curr[np.array(rows)],
            curr_pos[np.array(rows)],
            sub(mem),
            sub(mem_pos),
            num_obj_ptr_tokens=int(ptr_valid[rows[0]].sum()),
        )
        np.testing.assert_allclose(base[rows], want, atol=1e-5)


def test_memory_attention_dropout_only_with_rngs():
    model = MemoryAttention(dataclasses.replace(ATTN_CFG, dropout=0.5), rngs=nnx.Rngs(0))
    curr, curr_pos, mem, mem_pos = _memory_inputs(num_slots=3)
    plain = _apply(model, curr, curr_pos, mem, mem_pos)
    np.testing.assert_allclose(plain, _apply(model, curr, curr_pos, mem, mem_pos), atol=1e-6)
    dropped = _apply(model, curr, curr_pos, mem, mem_pos, rngs=nnx.Rngs(dropout=1))
    assert np.abs(np.asarray(dropped) - np.asarray(plain)).max() > 1e-2


ENC_CFG = MemoryEncoderConfig(
    in_dim=24,
    out_dim=8,
    downsampler_total_stride=4,
    fuser_num_layers=1,
    fuser_kernel_size=3,
    fuser_padding=1,
    layer_scale_init_value=0.5,
)


def test_memory_encoder_shapes_jit_sigmoid_and_torch_names():
    model = MemoryEncoder(ENC_CFG, rngs=nnx.Rngs(0))
    h, w = 5, 7
    pix = jnp.asarray(_normal(0, B, h, w, 24))
    masks = jnp.asarray(3 * _normal(1, B, 4 * h, 4 * w, 1))
    run = nnx.jit(lambda m, p, x, skip=False: m(p, x, skip_mask_sigmoid=skip), static_argnums=3)
    feat, pos = run(model, pix, masks)
    assert feat.shape == pos.shape == (B, h, w, 8)
    np.testing.assert_array_equal(pos, np.broadcast_to(sine_pe_2d(h, w, 8), (B, h, w, 8)))
    # The sigmoid happens before the downsampler, and only without skip_mask_sigmoid.
    skipped, _ = run(model, pix, jax.nn.sigmoid(masks), True)
    np.testing.assert_allclose(feat, skipped, atol=1e-5)
    raw, _ = run(model, pix, masks, True)
    assert np.abs(np.asarray(raw) - np.asarray(feat)).max() > 1e-3
    # The mask matters at its own location: change one 4x4 mask patch, only nearby tokens move.
    masks2 = masks.at[:, :4, :4].add(5.0)
    feat2, _ = run(model, pix, masks2)
    diff = np.abs(np.asarray(feat2) - np.asarray(feat)).max(axis=(0, 3))
    assert diff[0, 0] > 1e-4 and diff[4, 6] < 1e-5
    keys = set(torch_key_map(model))
    # torch Sequential indices: conv 0, LN 1, GELU 2, conv 3, LN 4, GELU 5, final 1x1 conv 6.
    down = {k.rsplit(".", 1)[0] for k in keys if k.startswith("mask_downsampler.")}
    assert down == {f"mask_downsampler.encoder.{i}" for i in (0, 1, 3, 4, 6)}
    assert {"fuser.layers.0.gamma", "fuser.layers.0.dwconv.weight", "out_proj.bias"} <= keys
    assert model.fuser.layers[0].dwconv.kernel.shape == (3, 3, 1, 24)
