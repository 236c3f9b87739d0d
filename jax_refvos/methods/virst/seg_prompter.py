"""VIRST's second Spatio-Temporal Fusion (`SegPrompter`) with its RoPE decoder layers.

Port of `model/seg_prompter.py` (AIDASLab/VIRST @ 954276f: `SegPrompter`, `RoPEDecoderLayer`,
`RotaryMHA`, `RoPE3D`); overview and padding rules in `fusion.py`.
"""

import einops
import flax.struct
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jaxtyping import Array, Bool, Float

from jax_refvos import sharding
from jax_refvos.methods.virst.fusion_common import (
    FusionInputError,
    SegPrompterConfig,
    TorchMultiheadAttention,
    _attend,
    _downsample,
    _spatial_down,
)
from jax_refvos.model.common_layers import layer_norm as _layer_norm
from jax_refvos.model.common_layers import linear as _linear
from jax_refvos.model.sam2.layers import GELU


# ----------------------------------------------------------------------------- SegPrompter
def _rope_angles(pos: np.ndarray, dim: int, theta: float) -> np.ndarray:
    """Angles [len(pos), dim / 2]: position p times 1 / theta^(i / (dim / 2)), float32."""
    half = dim // 2
    inv_freq = 1.0 / (np.float32(theta) ** (np.arange(half, dtype=np.float32) / half))
    return pos.astype(np.float32)[:, None] * inv_freq.astype(np.float32)[None, :]


def _rotate_pairs(x: Float[Array, "b n s r"], angles: np.ndarray) -> Float[Array, "b n s r"]:
    """Interleaved-pair RoPE: (x0, x1) of each pair -> (x0 cos - x1 sin, x1 cos + x0 sin)."""
    cos = jnp.asarray(np.cos(angles), x.dtype)
    sin = jnp.asarray(np.sin(angles), x.dtype)
    pairs = einops.rearrange(x, "... (i two) -> ... i two", two=2)
    x0, x1 = pairs[..., 0], pairs[..., 1]
    out = jnp.stack([x0 * cos - x1 * sin, x1 * cos + x0 * sin], axis=-1)
    return einops.rearrange(out, "... i two -> ... (i two)")


def _rope(x: Float[Array, "b n s k"], positions: list[np.ndarray], dim: int, theta: float):
    """Rotate consecutive `dim`-wide blocks of the head dims by the given axis positions."""
    parts = [
        _rotate_pairs(x[..., i * dim : (i + 1) * dim], _rope_angles(p, dim, theta))
        for i, p in enumerate(positions)
    ]
    return jnp.concatenate(parts + [x[..., len(positions) * dim :]], axis=-1)


class RotaryMHA(nnx.Module):
    """Cross-attention with time-RoPE on the queries and (t, y, x) RoPE on the memory keys.

    Head layout [t | y | x | free] = [10 | 10 | 10 | 2] of 32; values are not rotated.
    """

    def __init__(self, cfg: SegPrompterConfig, *, dtype, param_dtype, rngs):
        self.cfg = cfg
        d = cfg.token_dim
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.q_proj = _linear(d, d, ("embed", "heads"), **kw)
        self.k_proj = _linear(d, d, ("embed", "heads"), **kw)
        self.v_proj = _linear(d, d, ("embed", "heads"), **kw)
        self.o_proj = _linear(d, d, ("heads", "embed"), **kw)

    def __call__(
        self,
        x: Float[Array, "b l d"],
        memory: Float[Array, "b t s d"],
        kv_valid: Bool[Array, "b m"] | None,
    ) -> tuple[Float[Array, "b l d"], Float[Array, "b n l m"]]:
        """x: queries ordered (q, t); memory: (t, y, x) grid tokens. Returns (out, probs)."""
        cfg = self.cfg
        t, s = memory.shape[1], memory.shape[2]
        g, dim, theta = cfg.grid_hw, cfg.rope_axis_dim, cfg.rope_theta
        split = lambda y: einops.rearrange(y, "b s (n k) -> b n s k", n=cfg.num_heads)
        mem = einops.rearrange(memory, "b t s d -> b (t s) d")
        q, k, v = split(self.q_proj(x)), split(self.k_proj(mem)), split(self.v_proj(mem))
        q = _rope(q, [np.tile(np.arange(t), x.shape[1] // t)], dim, theta)
        grid = np.stack(np.meshgrid(np.arange(t), np.arange(g), np.arange(g), indexing="ij"))
        k = _rope(k, list(grid.reshape(3, t * s)), dim, theta)
        out, probs = _attend(q, k, v, kv_valid)
        return self.o_proj(einops.rearrange(out, "b n l k -> b l (n k)")), probs


class RoPEDecoderLayer(nnx.Module):
    """Post-norm: x = LN1(x + SA(x)); x = LN2(x + RoPE-CA(x, M)); x = LN3(x + FFN(x))."""

    def __init__(self, cfg: SegPrompterConfig, *, dtype, param_dtype, rngs):
        d = cfg.token_dim
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.cross_attn = RotaryMHA(cfg, **kw)
        self.self_attn = TorchMultiheadAttention(d, cfg.num_heads, **kw)
        self.ff = nnx.List(
            [
                _linear(d, cfg.ffn_dim, ("embed", "mlp"), **kw),
                GELU(),
                _linear(cfg.ffn_dim, d, ("mlp", "embed"), **kw),
            ]
        )
        self.norm1 = _layer_norm(d, cfg.norm_eps, **kw)
        self.norm2 = _layer_norm(d, cfg.norm_eps, **kw)
        self.norm3 = _layer_norm(d, cfg.norm_eps, **kw)

    def __call__(self, x, memory, query_valid, memory_valid):
        """Returns (x, cross-attention probabilities [b, n, l, m])."""
        x = self.norm1(x + self.self_attn(x, x, query_valid))
        ca, probs = self.cross_attn(x, memory, memory_valid)
        x = self.norm2(x + ca)
        y = x
        for layer in self.ff:
            y = layer(y)
        x = self.norm3(x + y)
        return sharding.shard(x, "batch", "tokens", "embed"), probs


@flax.struct.dataclass
class SegPrompterOutput:
    """Prompts per `[SEG]` and frame, the attention frame score, and each layer's output."""

    prompts: Float[Array, "b q t d"]  # the reference's `(conv, N, T, C)`
    frame_score: Float[Array, "b t"]  # computed but unused by VIRST (0 for invalid frames)
    layer_outputs: tuple[Float[Array, "b l d"], ...]  # l = q * t, query n * t + f


class SegPrompter(nnx.Module):
    """Second ST-Fusion: per-frame SAM2 prompts from the `[SEG]` hidden states."""

    def __init__(self, cfg: SegPrompterConfig, *, dtype=jnp.float32, param_dtype=jnp.float32, rngs):
        if cfg.rope_axis_dim % 2:
            raise ValueError(f"head dim {cfg.head_dim} leaves an odd RoPE axis width")
        self.cfg = cfg
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.spatial_down = _spatial_down(cfg.vision_dim, cfg.token_dim, cfg.down_steps, **kw)
        self.memory_norm = _layer_norm(cfg.token_dim, cfg.norm_eps, **kw)
        self.seg_proj = _linear(cfg.in_dim, cfg.token_dim, ("embed", None), **kw)
        self.decoder = nnx.List([RoPEDecoderLayer(cfg, **kw) for _ in range(cfg.num_layers)])

    def memory(self, vision_feats: Float[Array, "b t H W c"]) -> Float[Array, "b t s d"]:
        """`memory_norm(spatial_down(features))`: 64 grid tokens per frame, (y, x) order."""
        return self.memory_norm(
            _downsample(self.spatial_down, vision_feats, self.cfg.grid_hw, self.cfg.down_steps)
        )

    def decode(
        self,
        seg_token: Float[Array, "b q D"],
        memory: Float[Array, "b t s d"],
        seg_valid: Bool[Array, "b q"] | None = None,
        frame_valid: Bool[Array, "b t"] | None = None,
    ) -> SegPrompterOutput:
        """The prompts given the `memory` output (see `__call__`)."""
        b, t, s, _ = memory.shape
        q = seg_token.shape[1]
        if t > self.cfg.max_length:
            raise FusionInputError(f"fusion.py: {t} frames exceed max_length {self.cfg.max_length}")
        seg_valid = jnp.ones((b, q), bool) if seg_valid is None else seg_valid.astype(bool)
        frame_valid = jnp.ones((b, t), bool) if frame_valid is None else frame_valid.astype(bool)
        query_valid = einops.rearrange(
            seg_valid[:, :, None] & frame_valid[:, None, :], "b q t -> b (q t)"
        )
        memory_valid = einops.repeat(frame_valid, "b t -> b (t s)", s=s)
        # Temporal expansion: each [SEG] token copied once per frame, query index n * t + f.
        x = einops.repeat(self.seg_proj(seg_token), "b q d -> b (q t) d", t=t)
        outputs, probs = [], None
        for layer in self.decoder:
            x, probs = layer(x, memory, query_valid, memory_valid)
            outputs.append(x)
        # frame score: last layer's probabilities averaged over heads, valid queries, grid cells.
        per_frame = einops.reduce(probs, "b n l (t s) -> b l t", "mean", t=t)
        weight = query_valid.astype(jnp.float32)[:, :, None]
        frame_score = (per_frame * weight).sum(1) / jnp.maximum(weight.sum(1), 1.0)
        prompts = einops.rearrange(x, "b (q t) d -> b q t d", t=t)
        return SegPrompterOutput(
            prompts=prompts, frame_score=frame_score, layer_outputs=tuple(outputs)
        )

    def __call__(
        self,
        seg_token: Float[Array, "b q D"],
        vision_feats: Float[Array, "b t H W c"],
        seg_valid: Bool[Array, "b q"] | None = None,
        frame_valid: Bool[Array, "b t"] | None = None,
    ) -> SegPrompterOutput:
        """Per-frame prompts for SAM2.

        Args:
            seg_token: final-norm LLM hidden states at the `[SEG]` positions.
            vision_feats: SAM2 stride-16 `vision_features` of the STF frames (64 x 64 x 256).
            seg_valid: which `[SEG]` slots are real (None: all).
            frame_valid: which frames are real (None: all); invalid frames get frame_score 0.
        """
        return self.decode(seg_token, self.memory(vision_feats), seg_valid, frame_valid)
