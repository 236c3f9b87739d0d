"""Causal softmax attention of the decoder LM (GQA), in cache-sized query blocks.

Used by `decoder_lm.Attention`; the math is transformers' eager attention
(`modeling_llama.py::eager_attention_forward`): softmax(q kᵀ / √k + mask) v with kv heads shared
by groups of query heads (`repeat_kv`), here grouped instead of repeated.
"""

import einops
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float

# Bytes of f32 logits per query block: small enough for the per-core L2 on XLA:CPU; elsewhere
# large blocks (few kernels).
_BLOCK_BYTES = {"cpu": 2**21}


def _attend_block(q, keys, values, mask):
    m, n_q, k = keys.shape[2], q.shape[1], q.shape[3]
    # GQA: query head h reads kv head h // g (HF repeat_kv), grouped instead of repeated; the g
    # heads of a kv head and their l tokens are one matmul dimension.
    q = einops.rearrange(q, "b l (m g) k -> b m (g l) k", m=m)
    keys = einops.rearrange(keys, "b s m k -> b m s k")
    values = einops.rearrange(values, "b s m k -> b m s k")
    logits = jnp.einsum("bmqk,bmsk->bmqs", q, keys, preferred_element_type=jnp.float32)
    logits = einops.rearrange(logits * (k**-0.5), "b m (g l) s -> b m g l s", l=n_q)
    logits = jnp.where(mask[:, None, None], logits, jnp.finfo(jnp.float32).min)
    # DEVIATION(transformers): softmax normalised after the value matmul (one pass less over
    # the logits); the same result up to rounding.
    e = jnp.exp(logits - jnp.max(logits, axis=-1, keepdims=True))
    total = jnp.sum(e, axis=-1, keepdims=True)
    e = einops.rearrange(e.astype(values.dtype), "b m g l s -> b m (g l) s")
    out = jnp.einsum("bmqs,bmsk->bmqk", e, values, preferred_element_type=jnp.float32)
    out = einops.rearrange(out, "b m (g l) k -> b m g l k", l=n_q) / total
    return einops.rearrange(out.astype(values.dtype), "b m g l k -> b l (m g k)")


def attend(
    q: Float[Array, "b l n k"],
    keys: Float[Array, "b s m k"],
    values: Float[Array, "b s m k"],
    mask: Bool[Array, "b l s"],
    causal: bool,
) -> Float[Array, "b l nk"]:
    """Softmax attention of `q` over `keys`/`values` where `mask`, heads concatenated.

    Runs in blocks of queries whose f32 logits fit the CPU cache. `causal=True` promises that
    query i sees no key after i (the cache-free prefill, s = l): block [i, e) then reads only
    keys [0, e), which skips the masked upper triangle. Fully masked rows (padding queries) give
    finite garbage, like the reference.
    """
    b, n_q, n = q.shape[:3]
    s = keys.shape[1]
    # A power of two >= 32 rows, at most 32 blocks (compile time).
    budget = _BLOCK_BYTES.get(jax.default_backend(), 2**28)
    rows = max(32, budget // (4 * b * n * s), -(-n_q // 32))
    block = min(n_q, 1 << (rows - 1).bit_length())
    outs = []
    for i in range(0, n_q, block):
        e = min(i + block, n_q)
        width = e if causal else s
        outs.append(
            _attend_block(q[:, i:e], keys[:, :width], values[:, :width], mask[:, i:e, :width])
        )
    return outs[0] if len(outs) == 1 else jnp.concatenate(outs, axis=1)
