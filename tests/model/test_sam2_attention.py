"""attention.py: the blocked and online-softmax (flash) paths equal the one-shot softmax."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jax_refvos.model.sam2 import attention as A


def reference(q, k, v, valid):
    logits = np.einsum("bnsk,bnmk->bnsm", q, k) / np.sqrt(q.shape[-1])
    logits = np.where(valid[:, None, None, :], logits, -np.inf)
    with np.errstate(invalid="ignore"):  # rows without a valid key; zeroed below
        w = np.exp(logits - logits.max(-1, keepdims=True))
    w = np.where(valid[:, None, None, :], w, 0)
    w = w / np.maximum(w.sum(-1, keepdims=True), 1e-30)
    w = np.where(valid.any(-1)[:, None, None, None], w, 0)
    return np.einsum("bnsm,bnmk->bnsk", w, v)


@pytest.fixture
def small_limits(monkeypatch):
    """Make 'big' tiny so the blocked and flash paths run on small inputs."""
    monkeypatch.setattr(A, "_MAX_LOGIT_BYTES", 4 * 1024)
    monkeypatch.setattr(A, "_FLASH_MIN_BYTES", 4 * 1024)
    monkeypatch.setattr(A, "_BLOCK_BYTES", 1024)
    monkeypatch.setattr(A, "_FLASH_Q_BLOCK", 7)
    monkeypatch.setattr(A, "_FLASH_K_BLOCK", 5)
    monkeypatch.setattr(A, "_FLASH_MIN_KEYS", 8)


def inputs(b=2, n=3, s=13, m=23, k=8, seed=0):
    rng = np.random.default_rng(seed)
    q, kk, v = (rng.normal(size=shape).astype(np.float32) * 2
                for shape in ((b, n, s, k), (b, n, m, k), (b, n, m, k)))  # fmt: skip
    valid = rng.random((b, m)) > 0.4
    valid[1] = False  # a row with no valid key at all -> zeros
    return q, kk, v, valid


@pytest.mark.parametrize("flash", [False, True, "tiles"])
def test_attend_paths_equal_reference(small_limits, monkeypatch, flash):
    monkeypatch.setattr(A, "_FLASH", bool(flash))
    if flash == "tiles":  # query rows per block derived from the tile size (2 blocks here)
        monkeypatch.setattr(A, "_FLASH_Q_BLOCK", None)
        monkeypatch.setattr(A, "_FLASH_TILE_BYTES", 2 * 3 * 5 * 5 * 4)
        assert A._flash_q_block(jnp.zeros((2, 3, 13, 8))) == 8
    q, k, v, valid = inputs()
    got = A.attend(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), jnp.asarray(valid))
    np.testing.assert_allclose(got, reference(q, k, v, valid), atol=2e-6, rtol=1e-5)
    assert np.abs(np.asarray(got)[0]).max() > 0.1 and np.all(np.asarray(got)[1] == 0)
    unmasked = A.attend(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v))
    np.testing.assert_allclose(unmasked, reference(q, k, v, np.ones_like(valid)), atol=2e-6)


@pytest.mark.parametrize("flash", [False, True])
def test_shared_values_equal_projecting_first(small_limits, monkeypatch, flash):
    monkeypatch.setattr(A, "_FLASH", flash)
    q, k, _, valid = inputs()
    v_in = np.random.default_rng(1).normal(size=(2, 23, 4)).astype(np.float32)
    proj = nnx.Linear(4, 3 * 8, rngs=nnx.Rngs(0))
    proj.bias[...] = jax.random.normal(jax.random.key(1), (24,))
    v = np.asarray(proj(jnp.asarray(v_in))).reshape(2, 23, 3, 8).transpose(0, 2, 1, 3)
    got = A.attend_shared_values(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v_in), proj,
                                 jnp.asarray(valid))  # fmt: skip
    np.testing.assert_allclose(got, reference(q, k, v, valid), atol=5e-6, rtol=1e-5)


def test_big_inputs_take_the_flash_path(monkeypatch):
    calls = []
    orig = A._flash_rows
    monkeypatch.setattr(A, "_flash_rows", lambda *a: calls.append(1) or orig(*a))
    monkeypatch.setattr(A, "_FLASH_MIN_BYTES", 4 * 1024)
    monkeypatch.setattr(A, "_FLASH_MIN_KEYS", 8)
    q, k, v, valid = inputs()
    A.attend(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), jnp.asarray(valid))
    assert calls


@pytest.mark.parametrize("flash", [False, True])
def test_masked_keys_with_huge_logits_get_no_weight(small_limits, monkeypatch, flash):
    """The -1e30 key bias dominates any real logit: a masked key scoring 1e6 above the valid
    ones changes nothing (a mask applied after the row max would underflow every valid key)."""
    monkeypatch.setattr(A, "_FLASH", flash)
    q, k, v, valid = inputs()
    valid[1] = True
    k[:, :, ~valid[0]] *= 1e4
    got = A.attend(jnp.asarray(q), jnp.asarray(k), jnp.asarray(v), jnp.asarray(valid))
    np.testing.assert_allclose(got, reference(q, k, v, valid), atol=2e-6, rtol=1e-5)
