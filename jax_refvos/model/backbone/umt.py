"""UMT ViT video tower of VideoChat-Flash ("umt-hd-large") in Flax NNX (batch-first, channels-last).

Port of `model/videochat/vision_tower_builder.py` (AIDASLab/VIRST @ 954276f: `PatchEmbed`,
`Attention`, `Block`, `PretrainVisionTransformerEncoder`, `get_sinusoid_encoding_table2`,
`UMTVisionTower.forward`). Attribute names equal the PyTorch ones under the state-dict prefix
`model.vision_tower.vision_tower.encoder.`, so `weights.videochat_flash` maps weights by path.

Frames are encoded in clips of `clip_frames` (4) with joint space-time attention over
4 * 784 tokens; a single image (t = 1) uses the image position table instead.
"""

import dataclasses
import functools
from collections.abc import Mapping
from typing import Any

import einops
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jaxtyping import Array, Float

from jax_refvos import sharding
from jax_refvos.errors import InputError
from jax_refvos.model.common_layers import layer_norm as _layer_norm
from jax_refvos.model.common_layers import linear
from jax_refvos.model.sam2.attention import attend
from jax_refvos.model.sam2.hiera import bicubic_matrix
from jax_refvos.model.sam2.layers import gelu

# The released UMT checkpoints were pretrained on 4-frame clips of 14 x 14 patches (224 px);
# their fixed sinusoid tables are built at that size and resized to the running grid.
_PRETRAIN_GRID = 14
_PRETRAIN_FRAMES = 4


@dataclasses.dataclass(frozen=True, kw_only=True)
class UmtConfig:
    """UMT ViT settings. `depth` counts the blocks actually built and run.

    VideoChat-Flash builds ViT-L with 24 blocks and `return_index = mm_vision_select_layer = -2`,
    so 24 - 2 + 1 = 23 blocks exist; the output is the final LayerNorm of the last of them.
    """

    img_size: int = 448
    patch_size: int = 16
    embed_dim: int = 1024
    depth: int = 23
    num_heads: int = 16
    mlp_ratio: float = 4.0
    qkv_bias: bool = True  # q_bias and v_bias parameters; k has none
    norm_eps: float = 1e-6
    final_norm_eps: float = 1e-12
    tubelet_size: int = 1
    clip_frames: int = 4

    def __post_init__(self):
        if self.img_size % self.patch_size:
            raise ValueError(f"img_size {self.img_size} is not a multiple of {self.patch_size}")
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim {self.embed_dim} is not divisible by {self.num_heads}")
        if self.tubelet_size != 1:
            raise ValueError("only tubelet_size 1 is supported (all released UMT towers)")
        if self.clip_frames != _PRETRAIN_FRAMES:
            # The reference then resizes the table along time as well (linear); not ported.
            raise ValueError(f"clip_frames must be {_PRETRAIN_FRAMES}, got {self.clip_frames}")

    @property
    def grid(self) -> int:
        """Patches per side (28 at 448 px)."""
        return self.img_size // self.patch_size

    @property
    def tokens_per_frame(self) -> int:
        return self.grid**2

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "UmtConfig":
        """From the fixture's `config_umt_tiny.json` keys (unknown keys are an error).

        `encoder_depth` and `mm_vision_select_layer` give the number of built blocks
        (`encoder_depth + select_layer + 1`); `blocks_run`, when present, must agree.
        `tome_heads` belongs to the projector and is accepted but not used here.
        """
        known = {
            "embed_dim", "encoder_depth", "num_heads", "patch_size", "image_size", "num_frames",
            "mm_vision_select_layer", "blocks_run", "qkv_bias", "norm_eps", "final_ln_eps",
            "tome_heads", "mlp_ratio", "tubelet_size",
        }  # fmt: skip
        unknown = sorted(set(d) - known)
        if unknown:
            raise InputError(f"UMT config: unknown keys {unknown}; known: {sorted(known)}")
        depth = int(d.get("encoder_depth", 24)) + int(d.get("mm_vision_select_layer", -2)) + 1
        if "blocks_run" in d and int(d["blocks_run"]) != depth:
            raise InputError(
                f"UMT config: blocks_run {d['blocks_run']} disagrees with encoder_depth + "
                f"mm_vision_select_layer + 1 = {depth}"
            )
        qkv_bias = d.get("qkv_bias", True)
        if isinstance(qkv_bias, str):
            if qkv_bias not in ("q_bias,v_bias", ""):
                raise InputError(f"UMT config: qkv_bias {qkv_bias!r} is not 'q_bias,v_bias'")
            qkv_bias = qkv_bias == "q_bias,v_bias"
        return cls(
            img_size=int(d.get("image_size", 448)),
            patch_size=int(d.get("patch_size", 16)),
            embed_dim=int(d.get("embed_dim", 1024)),
            depth=depth,
            num_heads=int(d.get("num_heads", 16)),
            mlp_ratio=float(d.get("mlp_ratio", 4.0)),
            qkv_bias=bool(qkv_bias),
            norm_eps=float(d.get("norm_eps", 1e-6)),
            final_norm_eps=float(d.get("final_ln_eps", 1e-12)),
            tubelet_size=int(d.get("tubelet_size", 1)),
            clip_frames=int(d.get("num_frames", 4)),
        )


def umt_large() -> UmtConfig:
    """UMT-L/16 at 448 px as VideoChat-Flash-Qwen2-7B_res448 runs it (23 of 24 blocks)."""
    return UmtConfig()


def umt_tiny() -> UmtConfig:
    """The VIRST tiny fixture's tower: width 64, 4 heads, 2 blocks built."""
    return UmtConfig(embed_dim=64, num_heads=4, depth=2)


def _sinusoid_1d(n: int, d: int) -> np.ndarray:
    """Float64[n, d]: angle p / 10000^(2 floor(j/2) / d); sine on even j, cosine on odd j."""
    expo = 2 * (np.arange(d) // 2) / d
    angles = np.arange(n, dtype=np.float64)[:, None] / np.power(10000.0, expo)[None]
    return np.where(np.arange(d)[None] % 2 == 0, np.sin(angles), np.cos(angles))


@functools.lru_cache(maxsize=16)
def sinusoid_pos_table(frames: int, grid: int, dim: int) -> np.ndarray:
    """Float32[frames * grid * grid, dim]: UMT's fixed position table, rows ordered (t, y, x).

    A 1-D table over frames * 14 * 14 positions is viewed as (t, 14, 14, d) and each frame is
    resized to grid x grid with torch's bicubic (a = -0.75, align_corners=False), as
    `get_sinusoid_encoding_table2` does (video: frames = 4; image: frames = 1).
    """
    # The reference casts the float64 table to float32 before interpolating.
    table = _sinusoid_1d(frames * _PRETRAIN_GRID**2, dim).astype(np.float32).astype(np.float64)
    table = einops.rearrange(table, "(t h w) d -> t h w d", h=_PRETRAIN_GRID, w=_PRETRAIN_GRID)
    if grid != _PRETRAIN_GRID:
        m = bicubic_matrix(_PRETRAIN_GRID, grid).astype(np.float64)
        table = np.einsum("yh,xw,thwd->tyxd", m, m, table)
    out = einops.rearrange(table, "t h w d -> (t h w) d").astype(np.float32)
    out.setflags(write=False)
    return out


def _oidhw_to_dhwio(w: np.ndarray) -> np.ndarray:
    return w.transpose(2, 3, 4, 1, 0)


class PatchConv(nnx.Module):
    """Conv3d with kernel = stride = (tubelet, p, p), as a patchify + matmul (channels-last).

    `weight` is float[tubelet, p, p, 3, d] (torch's OIDHW, transposed by `TORCH_LAYOUT`).
    """

    TORCH_LAYOUT = {"weight": _oidhw_to_dhwio}

    def __init__(self, cfg: UmtConfig, *, dtype=jnp.float32, param_dtype=jnp.float32, rngs):
        p, tub = cfg.patch_size, cfg.tubelet_size
        shape = (tub, p, p, 3, cfg.embed_dim)
        init = nnx.initializers.lecun_normal(in_axis=(0, 1, 2, 3), out_axis=4)
        self.weight = nnx.Param(
            sharding.annotated(init, (None,) * 4 + ("embed",))(rngs.params(), shape, param_dtype)
        )
        self.bias = nnx.Param(
            sharding.annotated(nnx.initializers.zeros_init(), ("embed",))(
                rngs.params(), (cfg.embed_dim,), param_dtype
            )
        )
        self.dtype = dtype

    def __call__(self, x: Float[Array, "b t H W c"]) -> Float[Array, "b t h w d"]:
        tub, p = self.weight.shape[0], self.weight.shape[1]
        patches = einops.rearrange(
            x, "b (t pt) (h ph) (w pw) c -> b t h w (pt ph pw c)", pt=tub, ph=p, pw=p
        )
        kernel = einops.rearrange(self.weight[...], "pt ph pw c d -> (pt ph pw c) d")
        out = jnp.einsum("bthwk,kd->bthwd", patches.astype(self.dtype), kernel.astype(self.dtype))
        return out + self.bias[...].astype(self.dtype)


class PatchEmbed(nnx.Module):
    """`patch_embed` of the reference: holds `proj` (the Conv3d)."""

    def __init__(self, cfg: UmtConfig, *, dtype=jnp.float32, param_dtype=jnp.float32, rngs):
        self.proj = PatchConv(cfg, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, x: Float[Array, "b t H W c"]) -> Float[Array, "b t h w d"]:
        return self.proj(x)


class Attention(nnx.Module):
    """Multi-head self-attention; qkv Linear without bias plus cat(q_bias, 0, v_bias)."""

    def __init__(self, cfg: UmtConfig, *, dtype=jnp.float32, param_dtype=jnp.float32, rngs):
        d = cfg.embed_dim
        self.num_heads = cfg.num_heads
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.qkv = linear(d, 3 * d, ("embed", "heads"), bias=False, **kw)
        if cfg.qkv_bias:
            zeros = sharding.annotated(nnx.initializers.zeros_init(), ("heads",))
            self.q_bias = nnx.Param(zeros(rngs.params(), (d,), param_dtype))
            self.v_bias = nnx.Param(zeros(rngs.params(), (d,), param_dtype))
        else:
            self.q_bias = self.v_bias = None
        self.proj = linear(d, d, ("heads", "embed"), **kw)

    def __call__(self, x: Float[Array, "b s d"]) -> Float[Array, "b s d"]:
        qkv = self.qkv(x)
        if self.q_bias is not None:
            q_bias = self.q_bias[...]
            bias = jnp.concatenate([q_bias, jnp.zeros_like(q_bias), self.v_bias[...]])
            qkv = qkv + bias.astype(qkv.dtype)
        q, k, v = einops.rearrange(
            qkv, "b s (three n k) -> three b n s k", three=3, n=self.num_heads
        )
        out = attend(q, k, v)
        return self.proj(einops.rearrange(out, "b n s k -> b s (n k)"))


class Mlp(nnx.Module):
    """fc1 -> exact GELU -> fc2."""

    def __init__(self, cfg: UmtConfig, *, dtype=jnp.float32, param_dtype=jnp.float32, rngs):
        hidden = int(cfg.embed_dim * cfg.mlp_ratio)
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.fc1 = linear(cfg.embed_dim, hidden, ("embed", "mlp"), **kw)
        self.fc2 = linear(hidden, cfg.embed_dim, ("mlp", "embed"), **kw)

    def __call__(self, x: Float[Array, "b s d"]) -> Float[Array, "b s d"]:
        return self.fc2(gelu(self.fc1(x)))


class Block(nnx.Module):
    """Pre-norm transformer block without layer scale (`init_values = 0`)."""

    def __init__(self, cfg: UmtConfig, *, dtype=jnp.float32, param_dtype=jnp.float32, rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.norm1 = _layer_norm(cfg.embed_dim, cfg.norm_eps, **kw)
        self.attn = Attention(cfg, **kw)
        self.norm2 = _layer_norm(cfg.embed_dim, cfg.norm_eps, **kw)
        self.mlp = Mlp(cfg, **kw)

    def __call__(self, x: Float[Array, "b s d"]) -> Float[Array, "b s d"]:
        x = x + self.attn(self.norm1(x))
        x = x + self.mlp(self.norm2(x))
        return sharding.shard(x, "batch", "tokens", "embed")


class UmtVisionTower(nnx.Module):
    """UMT ViT over 4-frame clips: patch embed + fixed sinusoid positions, blocks, final LN.

    Port of `PretrainVisionTransformerEncoder.forward_features` called as
    `UMTVisionTower.forward` does it. Attributes mirror the torch keys below
    `model.vision_tower.vision_tower.encoder.` (`patch_embed.proj`, `blocks.N`,
    `vision_layernorm`). The position tables are not in the state dict; they are constants
    (`sinusoid_pos_table`).
    """

    def __init__(
        self, cfg: UmtConfig, *, dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs
    ):
        self.cfg = cfg
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.patch_embed = PatchEmbed(cfg, **kw)
        self.blocks = nnx.List([Block(cfg, **kw) for _ in range(cfg.depth)])
        self.vision_layernorm = _layer_norm(cfg.embed_dim, cfg.final_norm_eps, **kw)
        self.dtype = dtype

    def pos_table(self, frames: int) -> np.ndarray:
        """Float32[frames * 784, d]: the video table for a clip, the image table for t = 1."""
        return sinusoid_pos_table(frames, self.cfg.grid, self.cfg.embed_dim)

    def encode_clips(self, clips: Float[Array, "b t H W c"]) -> Float[Array, "b s d"]:
        """Encode clips of t = clip_frames frames (or t = 1 images) jointly in space-time.

        Returns float[b, t * 784, d] with tokens ordered (t, y, x).
        """
        t = clips.shape[1]
        if t not in (1, self.cfg.clip_frames):
            raise ValueError(f"encode_clips: t must be 1 or {self.cfg.clip_frames}, got {t}")
        x = self.patch_embed(clips)
        x = einops.rearrange(x, "b t h w d -> b (t h w) d")
        x = x + jnp.asarray(self.pos_table(t), x.dtype)
        x = sharding.shard(x, "batch", "tokens", "embed")
        for blk in self.blocks:
            x = blk(x)
        return self.vision_layernorm(x)

    def __call__(self, frames: Float[Array, "b t H W c"]) -> Float[Array, "n s d"]:
        """ImageNet-normalised frames -> tokens per clip.

        Args:
            frames: float[b, t, img, img, 3]; t a multiple of clip_frames (video) or t = 1
                (image path, image position table).

        Returns:
            float[b * t / clip_frames, clip_frames * 784, d] for video (clip-major, like the
            reference's `umt_out`), float[b, 784, d] for t = 1.
        """
        b, t, h, w, c = frames.shape
        size = self.cfg.img_size
        if (h, w, c) != (size, size, 3):
            raise ValueError(f"UMT tower expects frames of {size}x{size}x3, got {(h, w, c)}")
        if t == 1:
            return self.encode_clips(frames)
        n = self.cfg.clip_frames
        if t % n:
            raise ValueError(f"UMT tower: {t} frames is not a multiple of the clip length {n}")
        clips = einops.rearrange(frames, "b (k t) H W c -> (b k) t H W c", t=n)
        return self.encode_clips(clips)
