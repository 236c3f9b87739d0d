"""Shared pieces of VIRST's Spatio-Temporal Fusion (`fusion.py`, `seg_prompter.py`): configs,
the conv-down of SAM2 features, torch-layout multi-head attention, layer helpers.

Port of `model/seg_prompter.py` (AIDASLab/VIRST @ 954276f); see `fusion.py` for the overview.
"""

import dataclasses
from collections.abc import Mapping
from typing import Any

import einops
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jaxtyping import Array, Bool, Float

from jax_refvos import sharding
from jax_refvos.errors import InputError
from jax_refvos.model.common_layers import linear as _linear

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
    down_steps: int = _DOWN_STEPS  # stride-2 convs from the stride-16 map to the grid
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
    down_steps: int = _DOWN_STEPS  # stride-2 convs from the stride-16 map to the grid
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


class ReLU(nnx.Module):
    """Parameter-free ReLU holding its torch `nn.Sequential` index."""

    def __call__(self, x: jax.Array) -> jax.Array:
        return jax.nn.relu(x)


def _spatial_down(
    c_in: int, d: int, steps: int = _DOWN_STEPS, *, dtype, param_dtype, rngs
) -> nnx.List:
    """torch's `Sequential(Conv2d(3, s2, p1), ReLU) x 3`: indices 0, 2, 4 are the convs.

    DEVIATION(VIRST): `steps` stride-2 convs (VIRST: 3, taking 64 x 64 to 8 x 8); with 0, one
    stride-1 conv (a map that already is the grid, e.g. the tiny preset's 8 x 8 at 128 px).
    """
    layers = []
    for i in range(max(steps, 1)):
        conv = nnx.Conv(
            c_in if i == 0 else d,
            d,
            kernel_size=(3, 3),
            strides=2 if steps else 1,
            padding=((1, 1), (1, 1)),
            kernel_init=sharding.annotated(
                nnx.initializers.lecun_normal(), (None, None, None, "embed")
            ),
            bias_init=sharding.annotated(nnx.initializers.zeros_init(), ("embed",)),
            dtype=dtype,
            param_dtype=param_dtype,
            rngs=rngs,
        )
        layers += [conv, ReLU()]
    return nnx.List(layers)


def _downsample(
    layers: nnx.List, feats: Float[Array, "b t H W c"], grid: int, steps: int = _DOWN_STEPS
) -> Float[Array, "b t s d"]:
    """SAM2 features -> (t, y, x)-ordered grid tokens (before the LayerNorm)."""
    b, t, h, w, _ = feats.shape
    if h != w or h != grid * 2**steps:
        raise FusionInputError(
            f"fusion.py: SAM2 features are {h}x{w}; the {steps} stride-2 convs need "
            f"{grid * 2**steps}x{grid * 2**steps} for a {grid}x{grid} grid"
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
            sharding.annotated(init, axes)(rngs.params(), (d, 3, d), param_dtype)
        )
        zeros = sharding.annotated(nnx.initializers.zeros_init(), (None, "heads"))
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
