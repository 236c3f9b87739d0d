"""Static-shape KV cache of the decoder LM (one pytree for all layers).

Replaces transformers' `DynamicCache`/`StaticCache` (transformers/cache_utils.py). Slots are
filled left to right for the whole batch at once (`index`); padding tokens occupy slots but are
marked invalid (`valid`), and each row carries its own next RoPE position (`next_pos`), so
left-padded, right-padded and spliced prompts all decode correctly with static shapes.
"""

import flax.struct
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from jax_refvos.model.backbone.lm_config import DecoderConfig


@flax.struct.dataclass
class KVCache:
    """Keys/values of every layer for `s` = max_len slots.

    Attributes:
        k: keys after RoPE, [layers, b, s, kv_heads, head_dim].
        v: values, [layers, b, s, kv_heads, head_dim].
        valid: bool[b, s], the slot holds a real (non-padding) token.
        index: int32[], the next slot to write (the same for every row).
        next_pos: int32[b], the RoPE position of each row's next real token.
    """

    k: Float[Array, "layers b s m k"]
    v: Float[Array, "layers b s m k"]
    valid: Bool[Array, "b s"]
    index: Int[Array, ""]
    next_pos: Int[Array, "b"]

    @classmethod
    def init(cls, cfg: DecoderConfig, batch: int, max_len: int, dtype=None) -> "KVCache":
        """An empty cache (dtype defaults to the model's compute dtype)."""
        shape = (cfg.num_hidden_layers, batch, max_len, cfg.num_key_value_heads, cfg.head_dim)
        dtype = cfg.dtype if dtype is None else dtype
        return cls(
            k=jnp.zeros(shape, dtype),
            v=jnp.zeros(shape, dtype),
            valid=jnp.zeros((batch, max_len), bool),
            index=jnp.zeros((), jnp.int32),
            next_pos=jnp.zeros((batch,), jnp.int32),
        )

    @property
    def max_len(self) -> int:
        return self.k.shape[2]


def default_positions(
    attention_mask: Bool[Array, "b l"], start: Int[Array, "b"] | None = None
) -> Int[Array, "b l"]:
    """RoPE positions that count only real tokens: start + cumsum(mask) - 1 (>= start).

    DEVIATION(transformers): HF's forward uses arange(l) when no position_ids are given; we use
    the attention-mask cumsum (what HF's `generate` passes), so a left-padded row gets the same
    positions as the unpadded one. Right padding gives arange at the valid tokens either way.
    """
    pos = jnp.maximum(jnp.cumsum(attention_mask.astype(jnp.int32), axis=1) - 1, 0)
    return pos if start is None else pos + start[:, None]


def causal_mask(attention_mask: Bool[Array, "b l"]) -> Bool[Array, "b l l"]:
    """[b, query, key] mask without a cache: causal and key is a real token."""
    n = attention_mask.shape[1]
    causal = jnp.tril(jnp.ones((n, n), bool))
    return causal[None] & attention_mask[:, None, :]


def advance(cache: KVCache, attention_mask: Bool[Array, "b l"]) -> tuple[KVCache, Bool]:
    """Marks the l new slots (cache.index ...) and returns (cache with k/v untouched, key mask).

    The key mask is bool[b, l, s]: a query may see a slot at or before its own slot that holds a
    real token. The caller writes the new k/v at `cache.index` (the old index) with
    `write_layers`. Writing past `max_len` is not detected under jit (the slice start is clamped):
    size the cache for prompt + new tokens.
    """
    n_new = attention_mask.shape[1]
    valid = jax.lax.dynamic_update_slice(cache.valid, attention_mask, (0, cache.index))
    slots = jnp.arange(cache.max_len)
    query_slot = cache.index + jnp.arange(n_new)
    mask = valid[:, None, :] & (slots[None, None, :] <= query_slot[None, :, None])
    new = cache.replace(
        valid=valid,
        index=cache.index + n_new,
        next_pos=cache.next_pos + jnp.sum(attention_mask, axis=1, dtype=jnp.int32),
    )
    return new, mask


def write(
    buf: Float[Array, "b s m k"], new: Float[Array, "b l m k"], index: Int[Array, ""]
) -> Float[Array, "b s m k"]:
    """`buf` with `new` written at slots index .. index + l - 1."""
    return jax.lax.dynamic_update_slice(buf, new.astype(buf.dtype), (0, index, 0, 0))


def write_layers(
    buf: Float[Array, "layers b s m k"], new: Float[Array, "layers b l m k"], index: Int[Array, ""]
) -> Float[Array, "layers b s m k"]:
    """`buf` with every layer's `new` entries written at slots index .. index + l - 1."""
    return jax.lax.dynamic_update_slice(buf, new.astype(buf.dtype), (0, 0, index, 0, 0))
