"""Hiera, the hierarchical ViT trunk of the SAM2 image encoder, in Flax NNX (channels-last).

Port of `sam2/modeling/backbones/hieradet.py` (`Hiera`, `MultiScaleBlock`, `MultiScaleAttention`,
`do_pool`) and `sam2/modeling/backbones/utils.py` (`PatchEmbed`, `window_partition`,
`window_unpartition`) (sam2 1.1.0). Attribute names equal the PyTorch ones, so
`weights.torch_names.load_torch_state` maps `blocks.3.attn.qkv.weight` and friends by path.
"""

import functools

import einops
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jaxtyping import Array, Float

from jax_refvos.model.sam2.attention import attend
from jax_refvos.model.sam2.config import HieraConfig
from jax_refvos.model.sam2.layers import MLP, gelu, in_row_chunks

# Position-wise work on maps larger than this runs in chunks of it (see `in_row_chunks`).
_CHUNK_BYTES = 1 * 2**20

# torch's bicubic kernel uses Keys' cubic convolution with a = -0.75 (jax.image uses -0.5).
_CUBIC_A = -0.75


def _cubic_weights(t: np.ndarray) -> np.ndarray:
    """Weights of taps floor(src) - 1 .. floor(src) + 2 for fractional offsets t, [n, 4]."""
    a = _CUBIC_A

    def near(x):  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x):  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a

    return np.stack([far(t + 1), near(t), near(1 - t), far(2 - t)], -1)


@functools.lru_cache(maxsize=64)
def bicubic_matrix(in_size: int, out_size: int) -> np.ndarray:
    """Float32[out_size, in_size] matrix of torch's 1-D bicubic resampling (rows sum to 1).

    Equals `F.interpolate(mode="bicubic", align_corners=False)` along one axis (no antialias):
    source coordinate `in / out * (i + 0.5) - 0.5`, four taps around its floor with indices
    clamped to the border, as ATen's `HelperInterpCubic`. Built in float64: it matches torch's
    float64 kernel to float32 rounding; torch's float32 kernel rounds the source coordinate and
    the weights itself and differs from the exact weights by up to ~1e-6.
    """
    src = in_size / out_size * (np.arange(out_size) + 0.5) - 0.5
    # ATen's guard_index_and_lambda: clamp the base index to in-1 and the offset to [0, 1].
    base = np.minimum(np.floor(src).astype(np.int64), in_size - 1)
    weights = _cubic_weights(np.clip(src - base, 0.0, 1.0))
    taps = np.clip(base[:, None] + np.arange(-1, 3)[None], 0, in_size - 1)
    out = np.zeros((out_size, in_size), np.float64)
    np.add.at(out, (np.repeat(np.arange(out_size), 4), taps.ravel()), weights.ravel())
    out = out.astype(np.float32)
    out.setflags(write=False)
    return out


def window_partition(
    x: Float[Array, "b h w d"], window: int
) -> tuple[Float[Array, "bw wh ww d"], tuple[int, int]]:
    """Zero-pad h and w up to multiples of `window`, then cut into windows (batch-major order).

    Returns:
        (windows float[b * num_windows, window, window, d], (padded h, padded w)).
    """
    _, h, w, _ = x.shape
    pad_h, pad_w = -h % window, -w % window
    x = jnp.pad(x, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)))
    windows = einops.rearrange(x, "b (nh wh) (nw ww) d -> (b nh nw) wh ww d", wh=window, ww=window)
    return windows, (h + pad_h, w + pad_w)


def window_unpartition(
    windows: Float[Array, "bw wh ww d"],
    window: int,
    padded_hw: tuple[int, int],
    hw: tuple[int, int],
) -> Float[Array, "b h w d"]:
    """Inverse of `window_partition`: stitch windows back and drop the padding."""
    hp, wp = padded_hw
    x = einops.rearrange(
        windows, "(b nh nw) wh ww d -> b (nh wh) (nw ww) d", nh=hp // window, nw=wp // window
    )
    return x[:, : hw[0], : hw[1]]


def pooled_windows(
    window: int, padded_hw: tuple[int, int], stride: tuple[int, int]
) -> tuple[int, tuple[int, int]]:
    """Window size and window-grid extent after max-pooling each window by `stride` (floor)."""
    pooled = window // stride[0]
    return pooled, (padded_hw[0] // window * pooled, padded_hw[1] // window * pooled)


def max_pool(x: Float[Array, "b h w *c"], stride: tuple[int, int]) -> Float[Array, "b h w *c"]:
    """`nn.MaxPool2d(kernel_size=stride, stride=stride, ceil_mode=False)` over axes 1 and 2."""
    sh, sw = stride
    h, w = x.shape[1] // sh * sh, x.shape[2] // sw * sw
    return einops.reduce(x[:, :h, :w], "b (h sh) (w sw) ... -> b h w ...", "max", sh=sh, sw=sw)


class PatchEmbed(nnx.Module):
    """Conv 7x7 stride 4 padding 3 from RGB to `embed_dim` (`backbones/utils.py::PatchEmbed`)."""

    def __init__(self, embed_dim: int, *, in_chans: int = 3, dtype=jnp.float32, rngs: nnx.Rngs):
        self.proj = nnx.Conv(
            in_chans,
            embed_dim,
            kernel_size=(7, 7),
            strides=(4, 4),
            padding=((3, 3), (3, 3)),
            dtype=dtype,
            rngs=rngs,
        )

    def __call__(self, x: Float[Array, "b h w c"]) -> Float[Array, "b h/4 w/4 d"]:
        return self.proj(x)


class MultiScaleAttention(nnx.Module):
    """Multi-head self-attention whose queries may be max-pooled (the stage transitions)."""

    def __init__(
        self,
        dim: int,
        dim_out: int,
        num_heads: int,
        *,
        q_stride: tuple[int, int] | None = None,
        dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.dim, self.dim_out, self.num_heads = dim, dim_out, num_heads
        # torch holds the (parameter-free) MaxPool2d module as `q_pool`; we keep its stride.
        self.q_stride = q_stride
        self.qkv = nnx.Linear(dim, dim_out * 3, dtype=dtype, rngs=rngs)
        self.proj = nnx.Linear(dim_out, dim_out, dtype=dtype, rngs=rngs)

    def __call__(self, x: Float[Array, "b h w d"]) -> Float[Array, "b h2 w2 d2"]:
        """Attend over all h*w tokens of each map (window); with q_stride the output is pooled."""
        return self.proj(self.attend_qkv(self.qkv(x)))

    def attend_qkv(self, qkv: Float[Array, "b h w 3d2"]) -> Float[Array, "b h2 w2 d2"]:
        """Attention of projected q/k/v maps, before the output projection."""
        # torch reshapes qkv to (B, HW, 3, heads, -1): channels are ordered (qkv, head, head_dim).
        q, k, v = einops.rearrange(qkv, "b h w (t n k) -> t b h w n k", t=3, n=self.num_heads)
        if self.q_stride is not None:
            q = max_pool(q, self.q_stride)
        h, w = q.shape[1:3]
        q, k, v = (einops.rearrange(a, "b h w n k -> b n (h w) k") for a in (q, k, v))
        out = attend(q, k, v)
        return einops.rearrange(out, "b n (h w) k -> b h w (n k)", h=h, w=w)

    def windowed(self, x: Float[Array, "b h w d"], window: int) -> Float[Array, "b h2 w2 d2"]:
        """Attention within `window` x `window` windows of a map zero-padded to whole windows.

        Equals `window_partition` -> `self` -> `window_unpartition`, but projects only the real
        tokens: a padded token is zero after the norm, so its q/k/v are the qkv bias and its
        output is cropped away (a third of Hiera's stage-3 windows at 512 px are padding).
        """
        b, h, w, _ = x.shape
        qkv = self.qkv(x)
        pad_h, pad_w = -h % window, -w % window
        if pad_h or pad_w:
            bias = self.qkv.bias[...].astype(qkv.dtype)
            qkv = jnp.concatenate([qkv, jnp.broadcast_to(bias, (b, h, pad_w, bias.size))], 2)
            qkv = jnp.concatenate([qkv, jnp.broadcast_to(bias, (b, pad_h) + qkv.shape[2:])], 1)
        windows, padded_hw = window_partition(qkv, window)
        # Windows are independent: attend a few at a time so q/k/v stay in cache.
        out = in_row_chunks(self.attend_qkv, windows, max_bytes=_CHUNK_BYTES)
        if self.q_stride is not None:
            window, padded_hw = pooled_windows(window, padded_hw, self.q_stride)
            h, w = h // self.q_stride[0], w // self.q_stride[1]
        return self.proj(window_unpartition(out, window, padded_hw, (h, w)))


class MultiScaleBlock(nnx.Module):
    """Pre-norm (windowed) attention + MLP block; at stage changes it widens and pools 2x."""

    def __init__(
        self,
        dim: int,
        dim_out: int,
        num_heads: int,
        *,
        mlp_ratio: float = 4.0,
        q_stride: tuple[int, int] | None = None,
        window_size: int = 0,
        dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.dim, self.dim_out = dim, dim_out
        self.window_size, self.q_stride = window_size, q_stride
        # Hiera builds nn.LayerNorm with eps=1e-6 (norm_layer="LayerNorm" -> partial(eps=1e-6)).
        # Two-pass variance like torch (not flax's default E[x^2] - E[x]^2).
        norm = functools.partial(
            nnx.LayerNorm, epsilon=1e-6, use_fast_variance=False, dtype=dtype, rngs=rngs
        )
        self.norm1 = norm(dim)
        self.attn = MultiScaleAttention(
            dim, dim_out, num_heads, q_stride=q_stride, dtype=dtype, rngs=rngs
        )
        # DEVIATION(sam2): no DropPath (stochastic depth); inference port, and every SAM2 yaml
        # leaves drop_path_rate at 0.
        self.norm2 = norm(dim_out)
        self.mlp = MLP(
            dim_out, int(dim_out * mlp_ratio), dim_out, 2, activation=gelu, dtype=dtype, rngs=rngs
        )
        if dim != dim_out:
            self.proj = nnx.Linear(dim, dim_out, dtype=dtype, rngs=rngs)

    def __call__(self, x: Float[Array, "b h w d"]) -> Float[Array, "b h2 w2 d2"]:
        shortcut = x
        x = self.norm1(x)
        if self.dim != self.dim_out:
            # The residual path is projected from the *normed* input, then pooled like q.
            shortcut = self.proj(x)
            if self.q_stride is not None:
                shortcut = max_pool(shortcut, self.q_stride)
        window = self.window_size
        if window > 0 and (x.shape[1] % window or x.shape[2] % window):
            x = self.attn.windowed(x, window)
        elif window > 0:
            x, padded_hw = window_partition(x, window)
            # Windows are independent: attend a few at a time so q/k/v stay in cache.
            x = in_row_chunks(self.attn, x, max_bytes=_CHUNK_BYTES)
            if self.q_stride is not None:
                window, padded_hw = pooled_windows(window, padded_hw, self.q_stride)
            x = window_unpartition(x, window, padded_hw, shortcut.shape[1:3])
        else:
            x = self.attn(x)
        x = shortcut + x
        tokens = einops.rearrange(x, "b h w d -> (b h w) d")
        tokens = in_row_chunks(lambda t: t + self.mlp(self.norm2(t)), tokens,
                               max_bytes=_CHUNK_BYTES)  # fmt: skip
        return einops.rearrange(tokens, "(b h w) d -> b h w d", b=x.shape[0], h=x.shape[1])


def _nchw_to_nhwc(w: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(w.transpose(0, 2, 3, 1))


class Hiera(nnx.Module):
    """Hiera trunk: patch embed + windowed pos-embed + 4 stages of `MultiScaleBlock`s.

    Input float[b, H, W, 3] (normalised RGB, H and W multiples of 32); output one map per stage,
    highest resolution first: float[b, H/4, W/4, C], [b, H/8, W/8, 2C], [b, H/16, W/16, 4C],
    [b, H/32, W/32, 8C] with C = embed_dim (the torch trunk's list, as NHWC).
    """

    # Torch stores the positional embeddings [1, C, h, w]; we keep them [1, h, w, C].
    TORCH_LAYOUT = {"pos_embed": _nchw_to_nhwc, "pos_embed_window": _nchw_to_nhwc}

    def __init__(self, cfg: HieraConfig, *, dtype=jnp.float32, rngs: nnx.Rngs):
        if len(cfg.stages) != len(cfg.window_spec):
            raise ValueError(
                f"stages {cfg.stages} and window_spec {cfg.window_spec} differ in length"
            )
        self.cfg = cfg
        self.stage_ends = tuple(sum(cfg.stages[: i + 1]) - 1 for i in range(len(cfg.stages)))
        q_pool_blocks = [end + 1 for end in self.stage_ends[:-1]][: cfg.q_pool]
        self.patch_embed = PatchEmbed(cfg.embed_dim, dtype=dtype, rngs=rngs)
        # Zero-initialised as in torch (the checkpoint supplies them).
        bkg_h, bkg_w = cfg.window_pos_embed_bkg_spatial_size
        win = cfg.window_spec[0]
        self.pos_embed = nnx.Param(jnp.zeros((1, bkg_h, bkg_w, cfg.embed_dim), jnp.float32))
        self.pos_embed_window = nnx.Param(jnp.zeros((1, win, win, cfg.embed_dim), jnp.float32))

        blocks = []
        dim, num_heads, stage = cfg.embed_dim, cfg.num_heads, 0
        for i in range(sum(cfg.stages)):
            # The window size lags a block: a stage's first block (which pools) still uses the
            # previous stage's window.
            window = 0 if i in cfg.global_att_blocks else cfg.window_spec[stage]
            dim_out = dim
            if i - 1 in self.stage_ends:
                dim_out = int(dim * cfg.dim_mul)
                num_heads = int(num_heads * cfg.head_mul)
                stage += 1
            blocks.append(
                MultiScaleBlock(
                    dim,
                    dim_out,
                    num_heads,
                    mlp_ratio=cfg.mlp_ratio,
                    q_stride=tuple(cfg.q_stride) if i in q_pool_blocks else None,
                    window_size=window,
                    dtype=dtype,
                    rngs=rngs,
                )
            )
            dim = dim_out
        self.blocks = nnx.List(blocks)

    @property
    def channel_list(self) -> tuple[int, ...]:
        """Stage output channels, lowest resolution first (torch `Hiera.channel_list`)."""
        return tuple(self.blocks[i].dim_out for i in reversed(self.stage_ends))

    def _get_pos_embed(self, h: int, w: int) -> Float[Array, "1 h w d"]:
        """Bicubic-resized background embedding plus the tiled window embedding."""
        win = self.pos_embed_window.shape[1]
        if h % win or w % win:
            raise ValueError(f"feature map {h}x{w} is not a multiple of the window {win}")
        bkg = self.pos_embed[...]
        resize_h = bicubic_matrix(bkg.shape[1], h)
        resize_w = bicubic_matrix(bkg.shape[2], w)
        # HIGHEST: default f32 matmuls on TPU (bf16 passes) or GPU (tf32) would round the params.
        # Contract w first, then h: two small matmuls instead of one [h*w, i*j] product.
        pos = jnp.einsum("wj,bijd->biwd", resize_w, bkg, precision="highest")
        pos = jnp.einsum("hi,biwd->bhwd", resize_h, pos, precision="highest")
        return pos + jnp.tile(self.pos_embed_window[...], (1, h // win, w // win, 1))

    def __call__(self, images: Float[Array, "b H W c"]) -> list[Float[Array, "b h w d"]]:
        """Stage outputs (see the class docstring), highest resolution first."""
        x = self.patch_embed(images)
        x = x + self._get_pos_embed(*x.shape[1:3]).astype(x.dtype)
        outputs = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in self.stage_ends:
                outputs.append(x)
        return outputs
