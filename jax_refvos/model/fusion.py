"""VIRST's Spatio-Temporal Fusion: Initial ST-Fusion and SegPrompter, in Flax NNX.

Port of `model/seg_prompter.py` (AIDASLab/VIRST @ 954276f: `InitialSegFusion`, `SegPrompter`,
`RoPEDecoderLayer`, `RotaryMHA`, `RoPE3D`); see shared/reference/virst.md §3.1, §3.2. Both read
SAM2's stride-16 `vision_features` of the T STF frames, [b, t, 64, 64, 256] channels-last, cut to
an 8 x 8 grid by three stride-2 convs; tokens are ordered (t, y, x) like the reference.

- `InitialSegFusion` (before the LLM): the `[SEG]` input embeddings [b, q, D] cross-attend (torch
  `nn.MultiheadAttention`, no positions) to the projected tokens; out = E + gate * attn.
- `SegPrompter` (after the LLM): `seg_proj` of the `[SEG]` hidden states, each repeated over the
  t frames (query n * t + f), then post-norm decoder layers: self-attention, RoPE cross-attention
  to the memory (queries time-RoPE, keys t/y/x RoPE, interleaved pairs), FFN. Returns prompts
  [b, q, t, 256] and the unused `frame_score` [b, t].

Padding (R5): `frame_valid` [b, t] masks frames as attention keys; `seg_valid` [b, q] masks
`[SEG]` slots as self-attention keys. With valid frames forming a prefix, valid outputs equal the
reference run on the valid frames only. Attribute names equal the torch state-dict keys under
`model.initial_seg_fusion_module.` and `model.seg_prompter.` (`convert.torch_names`).
"""

import dataclasses
from collections.abc import Mapping
from typing import Any

import einops
import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jaxtyping import Array, Bool, Float

from jax_refvos import sharding
from jax_refvos.errors import InputError
from jax_refvos.model.sam2.layers import GELU

# Three stride-2 convs: the reference hard-codes a 64 x 64 map -> an 8 x 8 grid.
_DOWN_STEPS = 3


class FusionInputError(InputError):
    """STF inputs whose shapes do not fit the configured fusion module."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class InitialSegFusionConfig:
    """`InitialSegFusion(hidden_dim, vision_dim, token_dim, grid_hw, num_heads)` (VIRST values)."""

    hidden_dim: int = 3584  # LLM width
    vision_dim: int = 256  # SAM2 d_model
    token_dim: int = 256
    grid_hw: int = 8
    num_heads: int = 8
    norm_eps: float = 1e-5  # torch nn.LayerNorm default
    gate_init: float = 0.1

    @classmethod
    def from_virst_config(cls, config: Mapping[str, Any]) -> "InitialSegFusionConfig":
        """From a VIRST `config.json` dict: only `hidden_size` is read (the rest is hard-coded)."""
        return cls(hidden_dim=_hidden_size(config))


@dataclasses.dataclass(frozen=True, kw_only=True)
class SegPrompterConfig:
    """`SegPrompter(in_dim, token_dim, max_length, grid_hw, nhead, n_layers)` (VIRST values)."""

    in_dim: int = 3584  # LLM width
    vision_dim: int = 256  # hard-coded 256 input channels in the reference
    token_dim: int = 256
    max_length: int = 100  # the reference asserts t <= max_length
    grid_hw: int = 8
    num_heads: int = 8
    num_layers: int = 2
    ffn_dim: int = 1024  # 4 * token_dim
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    dropout: float = 0.1  # DEVIATION(VIRST): kept for the record; we run dropout-free (eval)

    @property
    def head_dim(self) -> int:
        return self.token_dim // self.num_heads

    @property
    def rope_axis_dim(self) -> int:
        """Rotated dims per axis (t, y, x): 2 * floor(head_dim / 2 / 3) = 10 of 32."""
        return (self.head_dim // 2) // 3 * 2

    @classmethod
    def from_virst_config(cls, config: Mapping[str, Any]) -> "SegPrompterConfig":
        """From a VIRST `config.json` dict: `hidden_size` sets `in_dim`.

        `token_proj.hidden_dim` (1024) is not read: no code in VIRST @ 954276f uses it; the FFN
        width is 4 * token_dim, hard-coded in `RoPEDecoderLayer`.
        """
        return cls(in_dim=_hidden_size(config))


def _hidden_size(config: Mapping[str, Any]) -> int:
    if "hidden_size" not in config:
        raise FusionInputError("VIRST config: no 'hidden_size' (the LLM width) in the dict")
    return int(config["hidden_size"])


# ----------------------------------------------------------------------------- building blocks
def _annotated(init, axes: tuple[str | None, ...]):
    """`init` with logical axes (R7); sharded at creation only when a mesh is in context."""
    eager = not jax.sharding.get_abstract_mesh().empty
    return nnx.with_partitioning(init, axes, eager_sharding=eager)


def _linear(d_in, d_out, axes, *, dtype, param_dtype, rngs) -> nnx.Linear:
    return nnx.Linear(
        d_in,
        d_out,
        kernel_init=_annotated(nnx.initializers.lecun_normal(), axes),
        bias_init=_annotated(nnx.initializers.zeros_init(), (axes[1],)),
        dtype=dtype,
        param_dtype=param_dtype,
        rngs=rngs,
    )


def _layer_norm(d, eps, *, dtype, param_dtype, rngs) -> nnx.LayerNorm:
    return nnx.LayerNorm(
        d,
        epsilon=eps,
        scale_init=_annotated(nnx.initializers.ones_init(), ("embed",)),
        bias_init=_annotated(nnx.initializers.zeros_init(), ("embed",)),
        dtype=dtype,
        param_dtype=param_dtype,
        rngs=rngs,
    )


class ReLU(nnx.Module):
    """Parameter-free ReLU holding its torch `nn.Sequential` index."""

    def __call__(self, x: jax.Array) -> jax.Array:
        return jax.nn.relu(x)


def _spatial_down(c_in: int, d: int, *, dtype, param_dtype, rngs) -> nnx.List:
    """torch's `Sequential(Conv2d(3, s2, p1), ReLU) x 3`: indices 0, 2, 4 are the convs."""
    layers = []
    for i in range(_DOWN_STEPS):
        conv = nnx.Conv(
            c_in if i == 0 else d,
            d,
            kernel_size=(3, 3),
            strides=2,
            padding=((1, 1), (1, 1)),
            kernel_init=_annotated(nnx.initializers.lecun_normal(), (None, None, None, "embed")),
            bias_init=_annotated(nnx.initializers.zeros_init(), ("embed",)),
            dtype=dtype,
            param_dtype=param_dtype,
            rngs=rngs,
        )
        layers += [conv, ReLU()]
    return nnx.List(layers)


def _downsample(
    layers: nnx.List, feats: Float[Array, "b t H W c"], grid: int
) -> Float[Array, "b t s d"]:
    """SAM2 features -> (t, y, x)-ordered grid tokens (before the LayerNorm)."""
    b, t, h, w, _ = feats.shape
    if h != w or h != grid * 2**_DOWN_STEPS:
        raise FusionInputError(
            f"fusion.py: SAM2 features are {h}x{w}; the {_DOWN_STEPS} stride-2 convs need "
            f"{grid * 2**_DOWN_STEPS}x{grid * 2**_DOWN_STEPS} for a {grid}x{grid} grid"
        )
    x = einops.rearrange(feats, "b t h w c -> (b t) h w c")
    for layer in layers:
        x = layer(x)
    return einops.rearrange(x, "(b t) h w d -> b t (h w) d", b=b)


def _attend(
    q: Float[Array, "b n s k"],
    k: Float[Array, "b n m k"],
    v: Float[Array, "b n m k"],
    kv_valid: Bool[Array, "b m"] | None,
) -> tuple[Float[Array, "b n s k"], Float[Array, "b n s m"]]:
    """softmax(q kᵀ / √k) v with float32 softmax; masked keys weigh exactly 0 (no NaN rows)."""
    logits = jnp.einsum("bnsk,bnmk->bnsm", q, k).astype(jnp.float32) / np.sqrt(q.shape[-1])
    if kv_valid is not None:
        mask = kv_valid[:, None, None, :]
        logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
    probs = jax.nn.softmax(logits, axis=-1)
    if kv_valid is not None:
        probs = jnp.where(mask, probs, 0.0)
    out = jnp.einsum("bnsm,bnmk->bnsk", probs.astype(v.dtype), v)
    return out, probs


def _packed_to_ours(w: np.ndarray) -> np.ndarray:
    """torch `in_proj_weight` [3d, d_in] (q; k; v rows) -> [d_in, 3, d]."""
    return w.reshape(3, -1, w.shape[-1]).transpose(2, 0, 1)


class TorchMultiheadAttention(nnx.Module):
    """torch `nn.MultiheadAttention` (equal q/k/v widths, biased), batch-first, dropout-free.

    `in_proj_weight` is float[d, 3, d] (torch's packed [3d, d], transposed by `TORCH_LAYOUT`),
    `in_proj_bias` float[3, d]; `out_proj` is a Linear.
    """

    TORCH_LAYOUT = {
        "in_proj_weight": _packed_to_ours,
        "in_proj_bias": lambda b: b.reshape(3, -1),
    }

    def __init__(self, d: int, num_heads: int, *, dtype=jnp.float32, param_dtype, rngs):
        if d % num_heads:
            raise ValueError(f"width {d} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.dtype = dtype
        # torch: xavier-uniform over the packed [3d, d] matrix, zero biases.
        init = nnx.initializers.variance_scaling(
            1.0, "fan_avg", "uniform", in_axis=0, out_axis=(1, 2)
        )
        axes = ("embed", None, "heads")
        self.in_proj_weight = nnx.Param(
            _annotated(init, axes)(rngs.params(), (d, 3, d), param_dtype)
        )
        zeros = _annotated(nnx.initializers.zeros_init(), (None, "heads"))
        self.in_proj_bias = nnx.Param(zeros(rngs.params(), (3, d), param_dtype))
        self.out_proj = _linear(
            d, d, ("heads", "embed"), dtype=dtype, param_dtype=param_dtype, rngs=rngs
        )

    def __call__(
        self,
        query: Float[Array, "b s d"],
        key: Float[Array, "b m d"],
        kv_valid: Bool[Array, "b m"] | None = None,
    ) -> Float[Array, "b s d"]:
        w = self.in_proj_weight[...].astype(self.dtype)
        bias = self.in_proj_bias[...].astype(self.dtype)
        q = jnp.einsum("bsd,de->bse", query.astype(self.dtype), w[:, 0]) + bias[0]
        kv = jnp.einsum("bmd,dje->bmje", key.astype(self.dtype), w[:, 1:]) + bias[1:]
        split = lambda x: einops.rearrange(x, "b s (n k) -> b n s k", n=self.num_heads)
        out, _ = _attend(split(q), split(kv[:, :, 0]), split(kv[:, :, 1]), kv_valid)
        return self.out_proj(einops.rearrange(out, "b n s k -> b s (n k)"))


# ----------------------------------------------------------------------------- Initial ST-Fusion
class InitialSegFusion(nnx.Module):
    """Initial ST-Fusion: `[SEG]` input embeddings attend to the STF frames' grid tokens."""

    def __init__(
        self,
        cfg: InitialSegFusionConfig,
        *,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.cfg = cfg
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.spatial_down = _spatial_down(cfg.vision_dim, cfg.token_dim, **kw)
        self.spatial_norm = _layer_norm(cfg.token_dim, cfg.norm_eps, **kw)
        self.vision_proj = _linear(cfg.token_dim, cfg.hidden_dim, (None, "embed"), **kw)
        self.norm_q = _layer_norm(cfg.hidden_dim, cfg.norm_eps, **kw)
        self.norm_kv = _layer_norm(cfg.hidden_dim, cfg.norm_eps, **kw)
        self.cross_attn = TorchMultiheadAttention(cfg.hidden_dim, cfg.num_heads, **kw)
        self.gate = nnx.Param(jnp.asarray(cfg.gate_init, param_dtype))

    def vision_tokens(self, vision_feats: Float[Array, "b t H W c"]) -> Float[Array, "b t s d"]:
        """`spatial_norm(spatial_down(features))`: 64 tokens per frame, (y, x) order."""
        return self.spatial_norm(_downsample(self.spatial_down, vision_feats, self.cfg.grid_hw))

    def fuse(
        self,
        seg_embeds: Float[Array, "b q D"],
        tokens: Float[Array, "b t s d"],
        frame_valid: Bool[Array, "b t"] | None = None,
    ) -> Float[Array, "b q D"]:
        """E + gate * MHA(LN(E), LN(proj(tokens))) given the `vision_tokens` output."""
        b, t, s, _ = tokens.shape
        kv = self.norm_kv(self.vision_proj(einops.rearrange(tokens, "b t s d -> b (t s) d")))
        kv = sharding.shard(kv, "batch", "tokens", "embed")
        kv_valid = None
        if frame_valid is not None:
            kv_valid = einops.repeat(frame_valid, "b t -> b (t s)", s=s)
        fused = self.cross_attn(self.norm_q(seg_embeds), kv, kv_valid)
        return seg_embeds + self.gate[...].astype(fused.dtype) * fused

    def __call__(
        self,
        seg_embeds: Float[Array, "b q D"],
        vision_feats: Float[Array, "b t H W c"],
        frame_valid: Bool[Array, "b t"] | None = None,
    ) -> Float[Array, "b q D"]:
        """Fused `[SEG]` embeddings, to be written back at the `[SEG]` positions.

        Args:
            seg_embeds: input embeddings at the `[SEG]` positions.
            vision_feats: SAM2 stride-16 `vision_features` of the STF frames (64 x 64 x 256).
            frame_valid: which frames are real (None: all).
        """
        return self.fuse(seg_embeds, self.vision_tokens(vision_feats), frame_valid)


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
        self.spatial_down = _spatial_down(cfg.vision_dim, cfg.token_dim, **kw)
        self.memory_norm = _layer_norm(cfg.token_dim, cfg.norm_eps, **kw)
        self.seg_proj = _linear(cfg.in_dim, cfg.token_dim, ("embed", None), **kw)
        self.decoder = nnx.List([RoPEDecoderLayer(cfg, **kw) for _ in range(cfg.num_layers)])

    def memory(self, vision_feats: Float[Array, "b t H W c"]) -> Float[Array, "b t s d"]:
        """`memory_norm(spatial_down(features))`: 64 grid tokens per frame, (y, x) order."""
        return self.memory_norm(_downsample(self.spatial_down, vision_feats, self.cfg.grid_hw))

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
