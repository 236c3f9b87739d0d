"""RoPE variants and HF config reading of the decoder LM (rope.py, lm_config.py), no torch."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from jax_refvos.model.backbone import lm_config, rope
from jax_refvos.model.backbone.lm_config import ConfigError, DecoderConfig

TOL = 1e-5  # f32, same math in another order


def _np_inv_freq(kind, dim, base, p, max_pos, seq_len=None):
    """numpy transcription of transformers.modeling_rope_utils (f64)."""
    inv = 1.0 / base ** (np.arange(0, dim, 2) / dim)
    if kind == "linear":
        return inv / p["factor"], 1.0
    if kind == "dynamic":
        seq = max(seq_len or max_pos, max_pos)
        b = base * ((p["factor"] * seq / max_pos) - (p["factor"] - 1)) ** (dim / (dim - 2))
        return 1.0 / b ** (np.arange(0, dim, 2) / dim), 1.0
    if kind == "llama3":
        old = p["original_max_position_embeddings"]
        lo, hi = old / p["low_freq_factor"], old / p["high_freq_factor"]
        out = []
        for f in inv:
            wl = 2 * math.pi / f
            if wl < hi:
                out.append(f)
            elif wl > lo:
                out.append(f / p["factor"])
            else:
                s = (old / wl - p["low_freq_factor"]) / (
                    p["high_freq_factor"] - p["low_freq_factor"]
                )
                out.append((1 - s) * f / p["factor"] + s * f)
        return np.array(out), 1.0
    if kind == "yarn":
        factor, old = p["factor"], p["original_max_position_embeddings"]
        corr = lambda r: dim * math.log(old / (r * 2 * math.pi)) / (2 * math.log(base))
        lo, hi = max(math.floor(corr(32)), 0), min(math.ceil(corr(1)), dim - 1)
        ramp = np.clip((np.arange(dim // 2) - lo) / (hi - lo), 0, 1)
        keep = 1 - ramp
        return inv / factor * (1 - keep) + inv * keep, 0.1 * math.log(factor) + 1.0
    return inv, 1.0


ROPE_CASES = [
    ("default", {}),
    ("linear", {"factor": 4.0}),
    ("dynamic", {"factor": 2.0}),
    (
        "llama3",
        {
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64,
        },
    ),
    ("yarn", {"factor": 4.0, "original_max_position_embeddings": 64}),
]


@pytest.mark.parametrize(("kind", "params"), ROPE_CASES, ids=[c[0] for c in ROPE_CASES])
def test_rope_inv_freq_matches_hf_formulas(kind, params):
    scaling = None if kind == "default" else {"rope_type": kind, **params}
    cfg = lm_config.tiny_llama(
        head_dim=32, rope_theta=5e5, max_position_embeddings=256, rope_scaling=scaling
    )
    for seq_len in [None, 100, 1000]:
        got, scale = rope.inv_freq(cfg, seq_len)
        want, want_scale = _np_inv_freq(kind, 32, 5e5, params, 256, seq_len)
        np.testing.assert_allclose(got, want, rtol=2e-6)
        assert scale == pytest.approx(want_scale)
    if kind == "llama3":  # all three bands are exercised
        wl = 2 * math.pi / _np_inv_freq("default", 32, 5e5, {}, 256)[0]
        assert (wl < 16).any() and (wl > 64).any() and ((wl > 16) & (wl < 64)).any()


def test_rope_apply_is_rotate_half():
    cfg = lm_config.tiny_llama(rope_scaling={"rope_type": "yarn", "factor": 2.0})
    pos = jnp.array([[0, 1, 5], [9, 2, 2]])
    cos, sin = rope.cos_sin(cfg, pos)
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 8)).astype(np.float32)
    inv, scale = _np_inv_freq(
        "yarn", 8, 1e4, {"factor": 2.0, "original_max_position_embeddings": 64}, 64
    )
    ang = np.asarray(pos)[..., None] * inv
    c, s = np.cos(ang) * scale, np.sin(ang) * scale
    x1, x2 = x[..., :4], x[..., 4:]
    want = np.concatenate(
        [x1 * c[:, :, None] - x2 * s[:, :, None], x2 * c[:, :, None] + x1 * s[:, :, None]], -1
    )
    np.testing.assert_allclose(rope.apply_rope(jnp.asarray(x), cos, sin), want, atol=1e-5)


def test_from_hf_old_and_new_rope_styles():
    common = dict(
        model_type="llama",
        vocab_size=50,
        hidden_size=16,
        intermediate_size=24,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=128,
    )
    old = DecoderConfig.from_hf(
        common | {"rope_theta": 5e5, "rope_scaling": {"type": "linear", "factor": 2.0}}
    )
    new = DecoderConfig.from_hf(
        common | {"rope_parameters": {"rope_theta": 5e5, "rope_type": "linear", "factor": 2.0}}
    )
    assert old == new and old.rope_theta == 5e5 and old.rope_scaling.factor == 2.0
    assert old.num_key_value_heads == 2 and old.head_dim == 8 and not old.attention_bias
    l3 = DecoderConfig.from_hf(
        common
        | {
            "rope_parameters": {
                "rope_theta": 5e5,
                "rope_type": "llama3",
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
            }
        }
    )
    assert l3.rope_scaling.original_max_position_embeddings == 128
    qwen = DecoderConfig.from_hf(common | {"model_type": "qwen2", "rope_theta": 1e6})
    assert qwen.attention_bias and not qwen.o_proj_bias and qwen.rope_scaling is None
    hash(l3)  # usable in a jit-static graphdef
    with pytest.raises(ConfigError, match="mistral"):
        DecoderConfig.from_hf(common | {"model_type": "mistral"})
    with pytest.raises(ConfigError, match="longrope"):
        DecoderConfig.from_hf(common | {"rope_scaling": {"rope_type": "longrope"}})
