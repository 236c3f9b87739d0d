"""lm_attention.attend: blocked GQA attention equals the one-shot softmax (HF eager math)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jax_refvos.model.backbone import lm_attention


def reference(q, k, v, mask):
    n, m = q.shape[2], k.shape[2]
    k = np.repeat(k, n // m, axis=2)  # HF repeat_kv
    v = np.repeat(v, n // m, axis=2)
    logits = np.einsum("blnk,bsnk->bnls", q, k) / np.sqrt(q.shape[-1])
    logits = np.where(mask[:, None], logits, -np.inf)
    w = np.exp(logits - logits.max(-1, keepdims=True))
    w = w / w.sum(-1, keepdims=True)
    out = np.einsum("bnls,bsnk->blnk", w, v)
    return out.reshape(*out.shape[:2], -1)


@pytest.mark.parametrize("budget", [None, 4096])  # one block / many blocks of 32 queries
@pytest.mark.parametrize("causal", [True, False])
def test_blocked_attention_equals_reference(monkeypatch, budget, causal):
    if budget is not None:
        monkeypatch.setitem(lm_attention._BLOCK_BYTES, jax.default_backend(), budget)
    rng = np.random.default_rng(0)
    b, n_q, n, m, d = 2, 100, 4, 2, 8
    q = rng.normal(size=(b, n_q, n, d)).astype(np.float32)
    k = rng.normal(size=(b, n_q, m, d)).astype(np.float32)
    v = rng.normal(size=(b, n_q, m, d)).astype(np.float32)
    mask = np.tril(np.ones((n_q, n_q), bool))[None].repeat(b, 0)
    if not causal:  # a cache-style mask: some keys invalid for every query (plus causal)
        mask[1, :, 90:] = False
        mask[1, np.arange(n_q), np.arange(n_q)] = True
    got = lm_attention.attend(*(jnp.asarray(a) for a in (q, k, v, mask)), causal=causal)
    np.testing.assert_allclose(got, reference(q, k, v, mask), rtol=2e-5, atol=2e-6)
