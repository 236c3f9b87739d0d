"""SAM2 memory attention: current-frame tokens self-attend, then cross-attend into the memory bank.

Port of `sam2/modeling/memory_attention.py::{MemoryAttentionLayer, MemoryAttention}` (sam2 1.1.0),
batch-first ([b, s, d]) where the reference runs sequence-first. The memory is a fixed-capacity
layout: m = num_slots * s spatial memory tokens (one s-token grid per slot, every slot present)
followed by `num_obj_ptr_tokens` object-pointer tokens; `memory_valid` masks empty slots and
pointers. Because every slot gets the same RoPE table, masking a slot gives the same result as the
reference run on the valid tokens alone.
"""

import jax
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, Bool, Float

from jax_refvos.model.sam2.config import MemoryAttentionConfig
from jax_refvos.model.sam2.layers import in_row_chunks
from jax_refvos.model.sam2.rope import RoPEAttention


class MemoryAttentionLayer(nnx.Module):
    """Pre-norm block: RoPE self-attention, RoPE cross-attention into memory, ReLU MLP."""

    def __init__(self, cfg: MemoryAttentionConfig, *, dtype=jnp.float32, rngs: nnx.Rngs):
        d = cfg.d_model
        attn = dict(rope_theta=cfg.rope_theta, dropout=cfg.dropout, dtype=dtype, rngs=rngs)
        self.self_attn = RoPEAttention(d, cfg.num_heads, **attn)
        self.cross_attn_image = RoPEAttention(
            d, cfg.num_heads, kv_in_dim=cfg.mem_dim, rope_k_repeat=True, **attn
        )
        self.linear1 = nnx.Linear(d, cfg.dim_feedforward, dtype=dtype, rngs=rngs)
        self.linear2 = nnx.Linear(cfg.dim_feedforward, d, dtype=dtype, rngs=rngs)
        self.norm1 = nnx.LayerNorm(d, epsilon=1e-5, dtype=dtype, rngs=rngs)
        self.norm2 = nnx.LayerNorm(d, epsilon=1e-5, dtype=dtype, rngs=rngs)
        self.norm3 = nnx.LayerNorm(d, epsilon=1e-5, dtype=dtype, rngs=rngs)
        # Residual-branch dropouts, active only when `rngs` is passed at call time (training).
        # DEVIATION(sam2): the attention-weight dropout inside the RoPEAttentions is not applied
        # (see `Attention`).
        self.dropout = nnx.Dropout(cfg.dropout)
        self.dropout1 = nnx.Dropout(cfg.dropout)
        self.dropout2 = nnx.Dropout(cfg.dropout)
        self.dropout3 = nnx.Dropout(cfg.dropout)
        self.pos_enc_at_attn = cfg.pos_enc_at_attn
        self.pos_enc_at_cross_attn_queries = cfg.pos_enc_at_cross_attn_queries
        self.pos_enc_at_cross_attn_keys = cfg.pos_enc_at_cross_attn_keys

    def __call__(
        self,
        tgt: Float[Array, "b s d"],
        memory: Float[Array, "b m e"],
        pos: Float[Array, "b m e"],
        query_pos: Float[Array, "b s d"],
        *,
        num_k_exclude_rope: int = 0,
        memory_valid: Bool[Array, "b m"] | None = None,
        rngs: nnx.Rngs | None = None,
    ) -> Float[Array, "b s d"]:
        """One layer; names follow `MemoryAttentionLayer.forward` (`pos` is the memory's)."""

        def drop(layer: nnx.Dropout, x):
            return layer(x, deterministic=rngs is None, rngs=rngs)

        y = self.norm1(tgt)
        qk = y + query_pos if self.pos_enc_at_attn else y
        tgt = tgt + drop(self.dropout1, self.self_attn(qk, qk, y))

        y = self.norm2(tgt)
        y = self.cross_attn_image(
            y + query_pos if self.pos_enc_at_cross_attn_queries else y,
            memory + pos if self.pos_enc_at_cross_attn_keys else memory,
            memory,
            num_k_exclude_rope=num_k_exclude_rope,
            kv_valid=memory_valid,
        )
        tgt = tgt + drop(self.dropout2, y)

        def mlp(t):
            return self.linear2(drop(self.dropout, jax.nn.relu(self.linear1(self.norm3(t)))))

        if rngs is None:  # tokens are independent: keep the 2048-wide hidden layer in cache
            y = in_row_chunks(mlp, tgt.reshape(-1, tgt.shape[-1]), max_bytes=2**20)
            y = y.reshape(tgt.shape)
        else:
            y = mlp(tgt)
        return tgt + drop(self.dropout3, y)


class MemoryAttention(nnx.Module):
    """`num_layers` `MemoryAttentionLayer`s and a final LayerNorm (SAM 2.1: 4 layers, d=256)."""

    def __init__(self, cfg: MemoryAttentionConfig, *, dtype=jnp.float32, rngs: nnx.Rngs):
        self.layers = nnx.List(
            [MemoryAttentionLayer(cfg, dtype=dtype, rngs=rngs) for _ in range(cfg.num_layers)]
        )
        self.norm = nnx.LayerNorm(cfg.d_model, epsilon=1e-5, dtype=dtype, rngs=rngs)
        self.pos_enc_at_input = cfg.pos_enc_at_input

    def __call__(
        self,
        curr: Float[Array, "b s d"],
        curr_pos: Float[Array, "b s d"],
        memory: Float[Array, "b m e"],
        memory_pos: Float[Array, "b m e"],
        *,
        num_obj_ptr_tokens: int = 0,
        memory_valid: Bool[Array, "b m"] | None = None,
        rngs: nnx.Rngs | None = None,
    ) -> Float[Array, "b s d"]:
        """Condition the current frame's tokens on the memory.

        Args:
            curr: current-frame tokens (s = h*h, a square grid, row-major).
            curr_pos: their sine positional encoding.
            memory: m = num_slots * s spatial memory tokens, then `num_obj_ptr_tokens` pointers.
            memory_pos: the memory's positional (+ temporal) encoding.
            num_obj_ptr_tokens: static count of trailing tokens that get no RoPE.
            memory_valid: False for tokens of empty slots / absent pointers (zero attention
                weight). None: all valid.
            rngs: enables the residual dropouts (training); None for inference.

        Returns:
            The conditioned tokens after the final LayerNorm, [b, s, d].
        """
        # DEVIATION(sam2): batch-first in and out; the reference takes sequence-first tensors
        # (or one-element lists of them) and transposes internally.
        output = curr + 0.1 * curr_pos if self.pos_enc_at_input else curr
        for layer in self.layers:
            output = layer(
                output,
                memory,
                memory_pos,
                curr_pos,
                num_k_exclude_rope=num_obj_ptr_tokens,
                memory_valid=memory_valid,
                rngs=rngs,
            )
        return self.norm(output)
