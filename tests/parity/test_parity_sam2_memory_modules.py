"""Parity of `MemoryAttention` (axial RoPE) and `MemoryEncoder` with sam2 1.1.0 (float32, CPU).

The torch `MemoryAttention` is sequence-first ([s, b, d]; `batch_first=True` means it transposes
internally) and takes `curr`/`curr_pos` as one-element lists, as `SAM2Base` calls it. Our masked
fixed-capacity memory must equal the reference run on the valid tokens only.
"""

import functools

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sam2")

import jax.numpy as jnp  # noqa: E402
import sam2_reference  # noqa: E402
from flax import nnx  # noqa: E402

from jax_refvos.model.sam2 import config as sam2_config  # noqa: E402
from jax_refvos.model.sam2.memory_attention import MemoryAttention  # noqa: E402
from jax_refvos.model.sam2.memory_encoder import MemoryEncoder  # noqa: E402
from jax_refvos.weights.torch_names import load_torch_state  # noqa: E402

pytestmark = pytest.mark.parity

ATOL = RTOL = 1e-5
S = 16 * 16  # stride-16 tokens at image_size 256
B = 2


@pytest.fixture(scope="module")
def models():
    ref = sam2_reference.build_reference("sam2.1_hiera_t", image_size=256, video=False)
    cfg = sam2_config.from_name("sam2.1_hiera_t", image_size=256)
    attn = MemoryAttention(cfg.memory_attention, rngs=nnx.Rngs(0))
    load_torch_state(attn, sam2_reference.state_dict_numpy(ref, "memory_attention."))
    enc = MemoryEncoder(cfg.memory_encoder, rngs=nnx.Rngs(0))
    load_torch_state(enc, sam2_reference.state_dict_numpy(ref, "memory_encoder."))
    return ref, attn, enc


def _attn_inputs(num_slots: int, num_ptr: int, seed: int):
    rng = np.random.default_rng(seed)
    m = num_slots * S + num_ptr
    f = lambda *shape: rng.standard_normal(shape).astype(np.float32)
    return f(B, S, 256), f(B, S, 256), f(B, m, 64), f(B, m, 64)


def _torch_attn(ref, curr, curr_pos, memory, memory_pos, num_ptr):
    """The reference on batch-first numpy inputs; returns batch-first numpy."""
    seq_first = lambda x: torch.from_numpy(np.ascontiguousarray(x.transpose(1, 0, 2)))
    with torch.no_grad():
        out = ref.memory_attention(
            curr=[seq_first(curr)],
            curr_pos=[seq_first(curr_pos)],
            memory=seq_first(memory),
            memory_pos=seq_first(memory_pos),
            num_obj_ptr_tokens=num_ptr,
        )
    return sam2_reference.to_numpy(out).transpose(1, 0, 2)


@functools.partial(nnx.jit, static_argnames="num_ptr")
def _ours(attn, curr, curr_pos, mem, mem_pos, valid=None, *, num_ptr):
    # Jitted: one compile per shape is cheaper on CPU than eager op-by-op dispatch.
    return attn(curr, curr_pos, mem, mem_pos, num_obj_ptr_tokens=num_ptr, memory_valid=valid)


def _check(got, want):
    got = np.asarray(got)
    assert got.shape == want.shape
    assert np.std(want) > 0.1  # non-trivial output
    err = np.max(np.abs(got - want))
    print(f"max abs err {err:.2e} (max |want| {np.max(np.abs(want)):.2f})")
    np.testing.assert_allclose(got, want, atol=ATOL, rtol=RTOL)
    return err


@pytest.mark.parametrize("num_slots,num_ptr", [(2, 0), (2, 16), (3, 4)])
def test_memory_attention_all_valid(models, num_slots, num_ptr):
    ref, attn, _ = models
    curr, curr_pos, mem, mem_pos = _attn_inputs(num_slots, num_ptr, seed=num_slots + num_ptr)
    want = _torch_attn(ref, curr, curr_pos, mem, mem_pos, num_ptr)
    _check(_ours(attn, curr, curr_pos, mem, mem_pos, num_ptr=num_ptr), want)
    valid = np.ones(mem.shape[:2], bool)
    _check(_ours(attn, curr, curr_pos, mem, mem_pos, valid, num_ptr=num_ptr), want)


def test_memory_attention_invalid_slots_and_pointers(models):
    """Masked slots/pointers == the reference on the concatenation of the valid ones only."""
    ref, attn, _ = models
    num_slots, num_ptr = 3, 12
    curr, curr_pos, mem, mem_pos = _attn_inputs(num_slots, num_ptr, seed=7)
    slot_valid = np.array([[True, False, True], [False, True, True]])
    ptr_valid = np.array([[True] * 8 + [False] * 4, [False] * 4 + [True] * 8])
    valid = np.concatenate([np.repeat(slot_valid, S, axis=1), ptr_valid], axis=1)
    # Garbage in the invalid tokens: they must not leak into the output.
    mem[~valid] = 1e3
    mem_pos[~valid] = -1e3
    got = np.asarray(_ours(attn, curr, curr_pos, mem, mem_pos, valid, num_ptr=num_ptr))
    for i in range(B):
        want = _torch_attn(
            ref,
            curr[i : i + 1],
            curr_pos[i : i + 1],
            mem[i : i + 1, valid[i]],
            mem_pos[i : i + 1, valid[i]],
            int(ptr_valid[i].sum()),
        )
        _check(got[i : i + 1], want)


@pytest.mark.parametrize("skip_mask_sigmoid", [False, True])
def test_memory_encoder(models, skip_mask_sigmoid):
    ref, _, enc = models
    rng = np.random.default_rng(int(skip_mask_sigmoid))
    pix_feat = rng.standard_normal((B, 16, 16, 256)).astype(np.float32)
    masks = (4 * rng.standard_normal((B, 256, 256, 1))).astype(np.float32)
    if skip_mask_sigmoid:  # as SAM2Base passes them: sigmoid(20 x - 10)
        masks = (0.5 + 0.5 * np.tanh(10 * masks - 5)).astype(np.float32)
    with torch.no_grad():
        out = ref.memory_encoder(
            sam2_reference.nhwc_to_nchw(pix_feat),
            sam2_reference.nhwc_to_nchw(masks),
            skip_mask_sigmoid=skip_mask_sigmoid,
        )
    want_feat = sam2_reference.nchw_to_nhwc(sam2_reference.to_numpy(out["vision_features"]))
    want_pos = sam2_reference.nchw_to_nhwc(sam2_reference.to_numpy(out["vision_pos_enc"][0]))
    run = nnx.jit(lambda enc, p, m: enc(p, m, skip_mask_sigmoid=skip_mask_sigmoid))
    feat, pos = run(enc, jnp.asarray(pix_feat), jnp.asarray(masks))
    _check(feat, want_feat)
    _check(pos, want_pos)
