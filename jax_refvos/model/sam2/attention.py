"""SAM's multi-head attention with optional down-projection and key masking.

Port of `sam2/modeling/sam/transformer.py::Attention` (sam2 1.1.0). Batch-first: q is [b, s, d],
k and v are [b, m, kv_in_dim]. `kv_valid` masks padded keys (our fixed-capacity memory bank); with
all keys valid the result equals the reference, and a masked key contributes exactly zero.
"""

import math
from collections.abc import Callable

import einops
import jax
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, Bool, Float

# Attention logits above this many bytes are computed for blocks of queries at a time, each block
# holding about `_BLOCK_BYTES` of logits: at 1024 px SAM2's memory attention would otherwise
# materialise 4096 x 28672 float32 logits (470 MB) per layer and run at memory speed.
_MAX_LOGIT_BYTES = 64 * 2**20
_BLOCK_BYTES = 16 * 2**20
# With at least `_FLASH_MIN_KEYS` keys and `_FLASH_MIN_BYTES` of logits, attention is
# online-softmax over key blocks (see `_flash_rows`) on [query rows, `_FLASH_K_BLOCK`] tiles of
# about `_FLASH_TILE_BYTES` (all heads). Measured on a 2-core CPU (docs/benchmarks.md): 10-25%
# faster than one-shot softmax for Hiera's global attention and SAM2's memory attention at
# 512 and 1024 px; tiles of 16 MB fall off the cache.
_FLASH = True
_FLASH_MIN_KEYS = 1024
_FLASH_MIN_BYTES = 4 * 2**20
_FLASH_TILE_BYTES = 8 * 2**20
_FLASH_K_BLOCK = 512
_FLASH_Q_BLOCK: int | None = None  # rows per query block; None: from `_FLASH_TILE_BYTES`


def _use_flash(q: jax.Array, k: jax.Array) -> bool:
    b, n, s = q.shape[:3]
    m = k.shape[2]
    return _FLASH and m >= _FLASH_MIN_KEYS and b * n * s * m * 4 > _FLASH_MIN_BYTES


def _flash_q_block(q: jax.Array) -> int:
    """Query rows per flash block: a [b, n, rows, k_block] float32 tile of ~_FLASH_TILE_BYTES."""
    if _FLASH_Q_BLOCK is not None:
        return _FLASH_Q_BLOCK
    b, n = q.shape[:2]
    return max(8, _FLASH_TILE_BYTES // (b * n * _FLASH_K_BLOCK * 4))


def over_query_blocks(
    fn: Callable[[jax.Array], jax.Array],
    q: Float[Array, "b n s k"],
    m: int,
    block: int | None = None,
) -> Float[Array, "b n s c"]:
    """`fn(q)` for an fn that treats query rows independently, in blocks when the logits are big.

    `m` is the number of keys; `block` fixes the rows per block. Exact: each query's softmax
    involves only its own row.
    """
    b, n, s = q.shape[:3]
    if block is None:
        if b * n * s * m * 4 <= _MAX_LOGIT_BYTES:
            return fn(q)
        block = max(8, _BLOCK_BYTES // (b * n * m * 4))
    if s <= block:
        return fn(q)
    blocks = math.ceil(s / block)
    block = math.ceil(s / blocks)
    q = jnp.pad(q, ((0, 0), (0, 0), (0, blocks * block - s), (0, 0)))
    q = einops.rearrange(q, "b n (c s) k -> c b n s k", c=blocks)
    out = jax.lax.map(fn, q)
    return einops.rearrange(out, "c b n s k -> b n (c s) k")[:, :, :s]


def _scores(
    q: Float[Array, "b n s k"], k: Float[Array, "b n m k"], kv_valid: Bool[Array, "b m"] | None
) -> Float[Array, "b n s m"]:
    """exp(q kᵀ / √k - row max) in float32, exactly 0 for masked keys (unnormalised softmax).

    Masking costs O(m), not O(s·m): q gets a column of ones and k a column that is 0 for valid
    keys and -1e30 for masked ones, so the matmul itself adds the mask (adding 0 leaves valid
    logits bit-identical) and exp() of a masked logit underflows to exactly 0 whenever the row
    has a valid key. Rows without any are zeroed by `_mix`, which drops masked values.
    """
    # Scale q rather than the logits: s*k multiplies instead of s*m, and XLA:CPU otherwise
    # materialises the broadcast scale when several attentions share its shape.
    q = q * jnp.asarray(1.0 / math.sqrt(q.shape[-1]), q.dtype)
    if kv_valid is not None:
        q, k = _with_key_bias(q, k, kv_valid)
    logits = jnp.einsum("bnsk,bnmk->bnsm", q, k).astype(jnp.float32)
    return jnp.exp(logits - jnp.max(logits, axis=-1, keepdims=True))


def _with_key_bias(q, k, kv_valid):
    """(q | 1, k | bias) with bias 0 on valid keys and -1e30 on masked ones."""
    ones = jnp.ones(q.shape[:-1] + (1,), q.dtype)
    bias = jnp.where(kv_valid, 0.0, -1e30).astype(k.dtype)[:, None, :, None]
    bias = jnp.broadcast_to(bias, k.shape[:-1] + (1,))
    return jnp.concatenate([q, ones], -1), jnp.concatenate([k, bias], -1)


def _valid_values(v: jax.Array, kv_valid: Bool[Array, "b m"] | None) -> jax.Array:
    """v with masked keys' rows zeroed (v is [b, n, m, c] or [b, m, c])."""
    if kv_valid is None:
        return v
    mask = kv_valid[:, None, :, None] if v.ndim == 4 else kv_valid[:, :, None]
    return jnp.where(mask, v, 0)


def _mix(
    scores: Float[Array, "b n s m"], v: jax.Array, spec: str, kv_valid=None
) -> Float[Array, "b n s c"]:
    """Σ_m scores·v / Σ_m scores over valid keys. The row sums come out of the same matmul (a
    ones column, zero on masked keys like their values: a row with no valid key gives 0).

    DEVIATION(sam2): softmax is normalised after the value product (same math). XLA:CPU runs
    softmax-then-matmul over SAM2's 1024 x 7232 memory logits 2-3x slower than this.
    """
    ones = jnp.ones(v.shape[:-1] + (1,), v.dtype)
    v1 = _valid_values(jnp.concatenate([v, ones], -1), kv_valid)
    out = jnp.einsum(spec, scores.astype(v.dtype), v1)
    total = out[..., -1:]
    return out[..., :-1] / jnp.where(total > 0, total, 1).astype(out.dtype)


def _flash_rows(q, k, v, kv_valid, spec: str, k_block: int):
    """Online-softmax attention of the query rows `q` over key blocks (lax.scan).

    Keys are visited `k_block` at a time with a running max and sum, so scores never exceed a
    [rows, k_block] tile (cache-resident on CPU); the result equals the one-shot softmax.
    """
    b, n, s, d = q.shape
    m = k.shape[2]
    pad = -m % k_block
    valid = jnp.ones((b, m), bool) if kv_valid is None else kv_valid
    valid = jnp.pad(valid, ((0, 0), (0, pad)))
    k = jnp.pad(k, ((0, 0), (0, 0), (0, pad), (0, 0)))
    v = _valid_values(jnp.pad(v, [(0, 0)] * (v.ndim - 2) + [(0, pad), (0, 0)]), valid)
    # Masked keys as in `_scores`: a -1e30 bias column in the matmul. A block before the first
    # valid key adds exp(0) to `total`; the correction exp(-1e30 - max) then clears it.
    q = q * jnp.asarray(1.0 / math.sqrt(d), q.dtype)
    q, k = _with_key_bias(q, k, valid)
    blocks = (m + pad) // k_block
    kb = einops.rearrange(k, "b n (c m) d -> c b n m d", c=blocks)
    vb = v.reshape(v.shape[:-2] + (blocks, k_block, v.shape[-1]))
    vb = jnp.moveaxis(vb, -3, 0)

    def step(carry, xs):
        top, total, acc = carry
        kc, vc = xs
        sc = jnp.einsum("bnsd,bnmd->bnsm", q, kc).astype(jnp.float32)
        new_top = jnp.maximum(top, sc.max(-1))
        p = jnp.exp(sc - new_top[..., None])
        corr = jnp.exp(top - new_top)
        total = total * corr + p.sum(-1)
        acc = acc * corr[..., None] + jnp.einsum(spec, p.astype(vc.dtype), vc)
        return (new_top, total, acc), None

    c = v.shape[-1]
    init = (
        jnp.full((b, n, s), -1e30, jnp.float32),
        jnp.zeros((b, n, s), jnp.float32),
        jnp.zeros((b, n, s, c), jnp.float32),
    )
    (_, total, acc), _ = jax.lax.scan(step, init, (kb, vb))
    return (acc / jnp.where(total > 0, total, 1.0)[..., None]).astype(v.dtype)


def attention_weights(
    q: Float[Array, "b n s k"],
    k: Float[Array, "b n m k"],
    kv_valid: Bool[Array, "b m"] | None = None,
) -> Float[Array, "b n s m"]:
    """softmax(q kᵀ / √k) in float32; masked keys get zero weight (rows with none: zero)."""
    scores = _scores(q, k, kv_valid)
    if kv_valid is not None:  # rows without a valid key
        scores = jnp.where(kv_valid[:, None, None, :], scores, 0.0)
    total = scores.sum(-1, keepdims=True)
    return scores / jnp.where(total > 0, total, 1.0)


def attend(
    q: Float[Array, "b n s k"],
    k: Float[Array, "b n m k"],
    v: Float[Array, "b n m k"],
    kv_valid: Bool[Array, "b m"] | None = None,
) -> Float[Array, "b n s k"]:
    """softmax(q kᵀ / √k) v, softmax in float32; masked keys get zero weight."""

    if _use_flash(q, k):
        rows = lambda q: _flash_rows(q, k, v, kv_valid, "bnsm,bnmc->bnsc", _FLASH_K_BLOCK)
        return over_query_blocks(rows, q, k.shape[2], block=_flash_q_block(q))

    def rows(q):
        return _mix(_scores(q, k, kv_valid), v, "bnsm,bnmc->bnsc", kv_valid)

    return over_query_blocks(rows, q, k.shape[2])


def attend_shared_values(
    q: Float[Array, "b n s k"],
    k: Float[Array, "b n m k"],
    v_in: Float[Array, "b m e"],
    v_proj: nnx.Linear,
    kv_valid: Bool[Array, "b m"] | None = None,
) -> Float[Array, "b n s k"]:
    """softmax(q kᵀ / √k) · v_proj(v_in), computed as (softmax · v_in) · W_v + b_v.

    Equal to projecting first (the projection is affine and every row of the softmax sums to 1,
    or is all zero when nothing is valid, which the bias term honours). Cheaper whenever the
    input width e is below the per-head width k: SAM2's memory cross-attention attends from
    256-d queries to 64-d memories, so the value product costs a quarter.
    """
    n = q.shape[1]
    kernel = einops.rearrange(v_proj.kernel[...], "e (n k) -> e n k", n=n).astype(v_in.dtype)

    flash = _use_flash(q, k)

    def rows(q):
        if flash:
            mixed = _flash_rows(q, k, v_in, kv_valid, "bnsm,bmc->bnsc", _FLASH_K_BLOCK)
        else:
            mixed = _mix(_scores(q, k, kv_valid), v_in, "bnsm,bmc->bnsc", kv_valid)
        out = jnp.einsum("bnse,enk->bnsk", mixed, kernel)
        if v_proj.bias is None:
            return out
        bias = einops.rearrange(v_proj.bias[...], "(n k) -> n k", n=n).astype(out.dtype)
        if kv_valid is None:
            return out + bias[None, :, None, :]
        any_valid = jnp.any(kv_valid, -1)[:, None, None, None].astype(out.dtype)
        return out + any_valid * bias[None, :, None, :]

    return over_query_blocks(rows, q, k.shape[2], block=_flash_q_block(q) if flash else None)


class Attention(nnx.Module):
    """Project q/k/v to `embedding_dim // downsample_rate`, attend per head, project back."""

    def __init__(
        self,
        embedding_dim: int,
        num_heads: int,
        *,
        downsample_rate: int = 1,
        dropout: float = 0.0,
        kv_in_dim: int | None = None,
        dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        kv_in_dim = embedding_dim if kv_in_dim is None else kv_in_dim
        self.internal_dim = embedding_dim // downsample_rate
        if self.internal_dim % num_heads:
            raise ValueError(f"num_heads {num_heads} must divide {self.internal_dim}")
        self.num_heads = num_heads
        self.q_proj = nnx.Linear(embedding_dim, self.internal_dim, dtype=dtype, rngs=rngs)
        self.k_proj = nnx.Linear(kv_in_dim, self.internal_dim, dtype=dtype, rngs=rngs)
        self.v_proj = nnx.Linear(kv_in_dim, self.internal_dim, dtype=dtype, rngs=rngs)
        self.out_proj = nnx.Linear(self.internal_dim, embedding_dim, dtype=dtype, rngs=rngs)
        self.dropout_p = dropout

    def split_heads(self, x: Float[Array, "b s d"]) -> Float[Array, "b n s k"]:
        return einops.rearrange(x, "b s (n k) -> b n s k", n=self.num_heads)

    def merge_heads(self, x: Float[Array, "b n s k"]) -> Float[Array, "b s d"]:
        return einops.rearrange(x, "b n s k -> b s (n k)")

    def __call__(
        self,
        q: Float[Array, "b s d"],
        k: Float[Array, "b m e"],
        v: Float[Array, "b m e"],
        kv_valid: Bool[Array, "b m"] | None = None,
    ) -> Float[Array, "b s d"]:
        # DEVIATION(sam2): attention dropout is not applied (inference port; the reference only
        # uses it in training, and SAM2.1 sets it for memory attention alone).
        q = self.split_heads(self.q_proj(q))
        k = self.split_heads(self.k_proj(k))
        v = self.split_heads(self.v_proj(v))
        return self.out_proj(self.merge_heads(attend(q, k, v, kv_valid)))
