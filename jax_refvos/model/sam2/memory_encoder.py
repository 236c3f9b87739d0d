"""SAM2 memory encoder: fuse a frame's features with its (downsampled) mask into memory tokens.

Port of `sam2/modeling/memory_encoder.py::{MaskDownSampler, CXBlock, Fuser, MemoryEncoder}`
(sam2 1.1.0), channels-last: feature maps are [b, h, w, c], masks [b, H, W, 1] with
H = total_stride * h. Attribute names and `nn.Sequential` indices equal the PyTorch ones
(`mask_downsampler.encoder.3` is the second conv), so `weights/torch_names.load_torch_state` maps
the weights mechanically.
"""

import math

import jax
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, Float

from jax_refvos.model.sam2.config import MemoryEncoderConfig
from jax_refvos.model.sam2.layers import GELU, LayerNorm2d, gelu
from jax_refvos.model.sam2.position import sine_pe_2d


class MaskDownSampler(nnx.Module):
    """(conv k s p -> LayerNorm2d -> GELU) x log_s(total_stride), then a 1x1 conv to `embed_dim`.

    Each conv multiplies the channels by stride² (1 -> 4 -> 16 -> 64 -> 256 in SAM 2.1).
    """

    def __init__(
        self,
        embed_dim: int = 256,
        *,
        kernel_size: int = 4,
        stride: int = 4,
        padding: int = 0,
        total_stride: int = 16,
        dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        num_layers = round(math.log(total_stride) / math.log(stride))
        if stride**num_layers != total_stride:
            raise ValueError(f"total_stride {total_stride} is not a power of stride {stride}")
        layers: list[nnx.Module] = []
        c_in = 1
        for _ in range(num_layers):
            c_out = c_in * stride**2
            layers.append(
                nnx.Conv(
                    c_in,
                    c_out,
                    (kernel_size, kernel_size),
                    strides=stride,
                    padding=((padding, padding), (padding, padding)),
                    dtype=dtype,
                    rngs=rngs,
                )
            )
            layers += [LayerNorm2d(c_out), GELU()]
            c_in = c_out
        layers.append(nnx.Conv(c_in, embed_dim, (1, 1), dtype=dtype, rngs=rngs))
        self.encoder = nnx.List(layers)

    def __call__(self, x: Float[Array, "b H W 1"]) -> Float[Array, "b h w c"]:
        for layer in self.encoder:
            x = layer(x)
        return x


class CXBlock(nnx.Module):
    """ConvNeXt block: depthwise conv, LayerNorm, Linear-GELU-Linear, layer scale, residual."""

    def __init__(
        self,
        dim: int,
        *,
        kernel_size: int = 7,
        padding: int = 3,
        layer_scale_init_value: float = 1e-6,
        use_dwconv: bool = True,
        dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.dwconv = nnx.Conv(
            dim,
            dim,
            (kernel_size, kernel_size),
            padding=((padding, padding), (padding, padding)),
            feature_group_count=dim if use_dwconv else 1,
            dtype=dtype,
            rngs=rngs,
        )
        self.norm = LayerNorm2d(dim, eps=1e-6)
        self.pwconv1 = nnx.Linear(dim, 4 * dim, dtype=dtype, rngs=rngs)
        self.pwconv2 = nnx.Linear(4 * dim, dim, dtype=dtype, rngs=rngs)
        self.gamma = (
            nnx.Param(jnp.full((dim,), layer_scale_init_value, jnp.float32))
            if layer_scale_init_value > 0
            else None
        )
        # DEVIATION(sam2): no DropPath; SAM2 builds CXBlock with drop_path=0 (identity).

    def _depthwise(self, x: Float[Array, "b h w c"]) -> Float[Array, "b h w c"]:
        """`dwconv` as a sum of shifted, per-channel-scaled copies of the padded input.

        DEVIATION(sam2): same arithmetic as the grouped convolution, but XLA's CPU grouped conv
        is ~20x slower than these 49 fused multiply-adds (14 ms vs < 1 ms at 32x32x256).
        """
        conv = self.dwconv
        if conv.feature_group_count == 1:
            return conv(x)
        kh, kw = conv.kernel_size
        (pt, pb), (pl, pr) = conv.padding
        kernel = conv.kernel[...].astype(x.dtype)  # [kh, kw, 1, c]
        xp = jnp.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
        h, w = xp.shape[1] - kh + 1, xp.shape[2] - kw + 1
        out = sum(
            xp[:, i : i + h, j : j + w, :] * kernel[i, j, 0] for i in range(kh) for j in range(kw)
        )
        return out + conv.bias[...].astype(x.dtype)

    def __call__(self, x: Float[Array, "b h w c"]) -> Float[Array, "b h w c"]:
        y = self.pwconv2(gelu(self.pwconv1(self.norm(self._depthwise(x)))))
        if self.gamma is not None:
            y = self.gamma[...].astype(y.dtype) * y
        return x + y


class Fuser(nnx.Module):
    """A stack of `CXBlock`s (SAM2 uses no input projection, so there is no `proj`)."""

    def __init__(self, cfg: MemoryEncoderConfig, *, dtype=jnp.float32, rngs: nnx.Rngs):
        self.layers = nnx.List(
            [
                CXBlock(
                    cfg.in_dim,
                    kernel_size=cfg.fuser_kernel_size,
                    padding=cfg.fuser_padding,
                    layer_scale_init_value=cfg.layer_scale_init_value,
                    dtype=dtype,
                    rngs=rngs,
                )
                for _ in range(cfg.fuser_num_layers)
            ]
        )

    def __call__(self, x: Float[Array, "b h w c"]) -> Float[Array, "b h w c"]:
        for layer in self.layers:
            x = layer(x)
        return x


class MemoryEncoder(nnx.Module):
    """Downsampled mask + 1x1-projected features, fused by CXBlocks, projected to `out_dim`."""

    def __init__(self, cfg: MemoryEncoderConfig, *, dtype=jnp.float32, rngs: nnx.Rngs):
        self.mask_downsampler = MaskDownSampler(
            cfg.in_dim,
            kernel_size=cfg.downsampler_kernel_size,
            stride=cfg.downsampler_stride,
            padding=cfg.downsampler_padding,
            total_stride=cfg.downsampler_total_stride,
            dtype=dtype,
            rngs=rngs,
        )
        self.pix_feat_proj = nnx.Conv(cfg.in_dim, cfg.in_dim, (1, 1), dtype=dtype, rngs=rngs)
        self.fuser = Fuser(cfg, dtype=dtype, rngs=rngs)
        # The reference's out_proj is nn.Identity when out_dim == in_dim.
        self.out_proj = (
            nnx.Conv(cfg.in_dim, cfg.out_dim, (1, 1), dtype=dtype, rngs=rngs)
            if cfg.out_dim != cfg.in_dim
            else None
        )
        self.out_dim = cfg.out_dim

    def __call__(
        self,
        pix_feat: Float[Array, "b h w d"],
        masks: Float[Array, "b H W 1"],
        *,
        skip_mask_sigmoid: bool = False,
    ) -> tuple[Float[Array, "b h w e"], Float[Array, "b h w e"]]:
        """Encode one frame into memory.

        Args:
            pix_feat: the frame's stride-16 features (d = in_dim, 256).
            masks: mask logits at total_stride x the feature resolution (or already-scaled
                probabilities when `skip_mask_sigmoid`; SAM2Base passes sigmoid(20 x - 10) and
                skips it).
            skip_mask_sigmoid: static; True leaves `masks` as given.

        Returns:
            (vision_features, vision_pos_enc), each [b, h, w, out_dim]; the second is the sine
            encoding of the grid, broadcast over the batch.
        """
        # DEVIATION(sam2): returns a tuple (features, pos) instead of the reference's dict with a
        # one-element list of positional encodings.
        if not skip_mask_sigmoid:
            masks = jax.nn.sigmoid(masks)
        x = self.pix_feat_proj(pix_feat) + self.mask_downsampler(masks)
        x = self.fuser(x)
        if self.out_proj is not None:
            x = self.out_proj(x)
        b, h, w, _ = x.shape
        pos = jnp.broadcast_to(jnp.asarray(sine_pe_2d(h, w, self.out_dim), x.dtype), x.shape)
        return x, pos
