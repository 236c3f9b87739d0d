"""Rotary position embedding of the Qwen2 / LLaMA decoders (HF "rotate_half", non-interleaved).

Port of transformers/modeling_rope_utils.py (default, linear, dynamic, llama3, yarn inverse
frequencies and attention scaling) and transformers/models/llama/modeling_llama.py
(`LlamaRotaryEmbedding.forward`, `rotate_half`, `apply_rotary_pos_emb`). Positions are an int
array [b, l] so left/right padding and multimodal splicing just pass their own positions.
"""

import math

import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from jax_refvos.model.backbone.lm_config import DecoderConfig


def _default_inv_freq(base, dim: int) -> Float[Array, "k2"]:
    exponents = jnp.arange(0, dim, 2, dtype=jnp.float32) / dim
    return 1.0 / (jnp.asarray(base, jnp.float32) ** exponents)


def _llama3(inv: Float[Array, "k2"], s) -> Float[Array, "k2"]:
    old_len = s.original_max_position_embeddings
    low_wavelen = old_len / s.low_freq_factor
    high_wavelen = old_len / s.high_freq_factor
    wavelen = 2 * math.pi / inv
    # Long wavelengths (low frequencies) are divided by `factor`, short ones kept, and the band in
    # between is interpolated smoothly.
    scaled = jnp.where(wavelen > low_wavelen, inv / s.factor, inv)
    smooth = (old_len / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor)
    smoothed = (1 - smooth) * scaled / s.factor + smooth * scaled
    medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
    return jnp.where(medium, smoothed, scaled)


def _yarn(cfg: DecoderConfig, dim: int) -> tuple[Float[Array, "k2"], float]:
    s, base = cfg.rope_scaling, cfg.rope_theta
    factor = s.factor
    if factor is None:
        factor = cfg.max_position_embeddings / s.original_max_position_embeddings

    def mscale(scale, m=1.0):
        return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0

    attention = s.attention_factor
    if attention is None:
        if s.mscale and s.mscale_all_dim:
            attention = mscale(factor, s.mscale) / mscale(factor, s.mscale_all_dim)
        else:
            attention = mscale(factor)
    beta_fast, beta_slow = s.beta_fast or 32, s.beta_slow or 1

    def correction_dim(rotations):
        length = s.original_max_position_embeddings
        return dim * math.log(length / (rotations * 2 * math.pi)) / (2 * math.log(base))

    low, high = correction_dim(beta_fast), correction_dim(beta_slow)
    if s.truncate:
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001  # avoids a zero-width ramp, as the reference does
    ramp = jnp.clip((jnp.arange(dim // 2, dtype=jnp.float32) - low) / (high - low), 0, 1)
    extrapolation = 1 - ramp  # 1: keep the original frequency, 0: interpolate by `factor`
    pos_freqs = jnp.asarray(base, jnp.float32) ** (jnp.arange(0, dim, 2, dtype=jnp.float32) / dim)
    inv = (1.0 / (factor * pos_freqs)) * (1 - extrapolation) + (1.0 / pos_freqs) * extrapolation
    return inv, float(attention)


def inv_freq(cfg: DecoderConfig, seq_len=None) -> tuple[Float[Array, "k2"], float]:
    """Inverse frequencies float32[head_dim // 2] and the cos/sin scaling of `cfg`'s RoPE variant.

    Args:
        cfg: the decoder config (head_dim, rope_theta, rope_scaling, max_position_embeddings).
        seq_len: only for "dynamic": the current length (max position + 1; may be traced). HF
            recomputes the base when it exceeds max_position_embeddings.
    """
    dim, base, s = cfg.head_dim, cfg.rope_theta, cfg.rope_scaling
    kind = cfg.rope_type
    if kind == "default":
        return _default_inv_freq(base, dim), 1.0
    if kind == "linear":
        return _default_inv_freq(base, dim) / s.factor, 1.0
    if kind == "llama3":
        return _llama3(_default_inv_freq(base, dim), s), 1.0
    if kind == "yarn":
        return _yarn(cfg, dim)
    if kind == "dynamic":
        default = _default_inv_freq(base, dim)
        if seq_len is None:
            return default, 1.0
        # DEVIATION(transformers): HF keeps the grown frequencies as module state across calls;
        # we recompute them from this call's positions (the same values for prefill + decoding).
        max_pos = cfg.max_position_embeddings
        seq = jnp.maximum(jnp.asarray(seq_len, jnp.float32), max_pos)
        ntk_base = base * ((s.factor * seq / max_pos) - (s.factor - 1)) ** (dim / (dim - 2))
        return jnp.where(seq > max_pos, _default_inv_freq(ntk_base, dim), default), 1.0
    raise ValueError(f"unknown rope type {kind!r}")


def cos_sin(
    cfg: DecoderConfig, positions: Int[Array, "b l"]
) -> tuple[Float[Array, "b l k"], Float[Array, "b l k"]]:
    """cos and sin float32[b, l, head_dim] of `positions` (first and second half share angles)."""
    seq_len = jnp.max(positions) + 1 if cfg.rope_type == "dynamic" else None
    inv, scaling = inv_freq(cfg, seq_len)
    angles = positions.astype(jnp.float32)[..., None] * inv
    angles = jnp.concatenate([angles, angles], axis=-1)
    return jnp.cos(angles) * scaling, jnp.sin(angles) * scaling


def rotate_half(x: Float[Array, "... k"]) -> Float[Array, "... k"]:
    """(x1, x2) -> (-x2, x1) over the two halves of the last axis."""
    half = x.shape[-1] // 2
    return jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)


def apply_rope(
    x: Float[Array, "b l n k"], cos: Float[Array, "b l k"], sin: Float[Array, "b l k"]
) -> Float[Array, "b l n k"]:
    """Rotates every head of `x` by its token's angles (cos/sin cast to x's dtype, like HF)."""
    cos = cos[:, :, None, :].astype(x.dtype)
    sin = sin[:, :, None, :].astype(x.dtype)
    return x * cos + rotate_half(x) * sin
