"""SAM's multi-head attention with optional down-projection and key masking.

Port of `sam2/modeling/sam/transformer.py::Attention` (sam2 1.1.0). Batch-first: q is [b, s, d],
k and v are [b, m, kv_in_dim]. `kv_valid` masks padded keys (our fixed-capacity memory bank); with
all keys valid the result equals the reference, and a masked key contributes exactly zero.
"""

import einops
import jax
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, Bool, Float


def attend(
    q: Float[Array, "b n s k"],
    k: Float[Array, "b n m k"],
    v: Float[Array, "b n m k"],
    kv_valid: Bool[Array, "b m"] | None = None,
) -> Float[Array, "b n s k"]:
    """softmax(q kᵀ / √k) v, softmax in float32; masked keys get zero weight."""
    logits = jnp.einsum("bnsk,bnmk->bnsm", q, k) / jnp.sqrt(q.shape[-1]).astype(q.dtype)
    logits = logits.astype(jnp.float32)
    if kv_valid is not None:
        logits = jnp.where(kv_valid[:, None, None, :], logits, -jnp.inf)
    weights = jax.nn.softmax(logits, axis=-1)
    if kv_valid is not None:
        # A row with no valid key (never the case in SAM2 use) would be NaN; make it zero.
        weights = jnp.where(jnp.any(kv_valid, -1)[:, None, None, None], weights, 0.0)
    return jnp.einsum("bnsm,bnmk->bnsk", weights.astype(v.dtype), v)


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
