"""SAM2 image encoder: Hiera trunk + FPN neck, with sine positional encodings (channels-last).

Port of `sam2/modeling/backbones/image_encoder.py` (`ImageEncoder`, `FpnNeck`) with
`sam2/modeling/position_encoding.py::PositionEmbeddingSine` (sam2 1.1.0). Attribute names equal
the PyTorch ones: `trunk.blocks.0.attn.qkv.weight`, `neck.convs.0.conv.weight`, ...
"""

import flax.struct
import jax
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, Float

from jax_refvos.model.sam2.config import HieraConfig, NeckConfig
from jax_refvos.model.sam2.hiera import Hiera
from jax_refvos.model.sam2.position import sine_pe_2d


@flax.struct.dataclass
class ImageEncoderOutput:
    """Multi-scale features of a batch of images (torch's output dict, NHWC).

    Attributes:
        vision_features: float[b, H/16, W/16, d_model], the lowest level kept (= backbone_fpn[-1]).
        vision_pos_enc: sine encodings, same shapes as `backbone_fpn`.
        backbone_fpn: FPN maps highest resolution first; with scalp=1 strides 4, 8, 16.
    """

    vision_features: Float[Array, "b h w d"]
    vision_pos_enc: tuple[Float[Array, "b h w d"], ...]
    backbone_fpn: tuple[Float[Array, "b h w d"], ...]


class _Lateral(nnx.Module):
    """torch's `nn.Sequential(conv=Conv2d)`: one 1x1 conv, kept nested for the `.conv.` key."""

    def __init__(self, in_dim: int, d_model: int, *, dtype=jnp.float32, rngs: nnx.Rngs):
        self.conv = nnx.Conv(in_dim, d_model, kernel_size=(1, 1), dtype=dtype, rngs=rngs)

    def __call__(self, x: Float[Array, "b h w c"]) -> Float[Array, "b h w d"]:
        return self.conv(x)


def _upsample2x(x: Float[Array, "b h w d"], mode: str) -> Float[Array, "b 2h 2w d"]:
    """`F.interpolate(scale_factor=2.0, align_corners=None|False, antialias=False)`."""
    if mode == "nearest":
        # torch nearest reads source floor(i / 2): every pixel repeated twice.
        return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
    if mode == "bilinear":
        b, h, w, d = x.shape
        return jax.image.resize(x, (b, 2 * h, 2 * w, d), method="linear", antialias=False)
    raise ValueError(f"fpn_interp_model {mode!r} is not supported (nearest or bilinear)")


def fold_1x1(
    first: nnx.Conv, second: nnx.Conv, x: Float[Array, "b h w c"]
) -> Float[Array, "b h w e"]:
    """`second(first(x))` for two 1x1 convs, as one matmul by the product of their kernels.

    DEVIATION(sam2): same math, other rounding (~1e-7 relative); skips the d_model-wide
    intermediate map (at 1024 px, 256 x 256 x 256 floats for SAM2's stride-4 level).
    """
    w1, w2 = first.kernel[...][0, 0], second.kernel[...][0, 0]
    hp = jax.lax.Precision.HIGHEST  # the weights are combined once; keep them float32-exact
    kernel = jnp.matmul(w1, w2, precision=hp)
    bias = second.bias[...] + jnp.matmul(first.bias[...], w2, precision=hp)
    dtype = second.dtype or x.dtype
    return x.astype(dtype) @ kernel.astype(dtype) + bias.astype(dtype)


class FpnNeck(nnx.Module):
    """1x1 lateral convs to d_model, top-down upsample-and-sum on `fpn_top_down_levels`.

    Levels are numbered like the trunk outputs, 0 = highest resolution. `convs[j]` belongs to
    trunk level n - j (torch builds them from `backbone_channel_list`, lowest resolution first).
    """

    def __init__(self, cfg: NeckConfig, *, dtype=jnp.float32, rngs: nnx.Rngs):
        self.d_model = cfg.d_model
        self.backbone_channel_list = tuple(cfg.backbone_channel_list)
        self.fpn_top_down_levels = tuple(cfg.fpn_top_down_levels)
        self.fpn_interp_model = cfg.fpn_interp_model
        # DEVIATION(sam2): fuse_type is always "sum" (the only value any SAM2 yaml uses).
        self.convs = nnx.List(
            [_Lateral(c, cfg.d_model, dtype=dtype, rngs=rngs) for c in cfg.backbone_channel_list]
        )

    def __call__(self, xs: list[Float[Array, "b h w c"]]) -> list[Float[Array, "b h w d"]]:
        """Trunk maps, highest resolution first -> FPN maps of d_model channels, same order."""
        if len(xs) != len(self.convs):
            raise ValueError(f"neck expects {len(self.convs)} trunk levels, got {len(xs)}")
        n = len(self.convs) - 1
        out: list = [None] * len(xs)
        prev = None
        for i in range(n, -1, -1):  # lowest resolution first
            lateral = self.convs[n - i](xs[i])
            if i in self.fpn_top_down_levels and prev is not None:
                # Upsample and sum in float32 like torch, but
                # DEVIATION(sam2): cast the sum back to the compute dtype; torch leaves fused
                # levels float32 (type promotion), so a bf16 model would mix dtypes across levels.
                top_down = _upsample2x(prev.astype(jnp.float32), self.fpn_interp_model)
                prev = (lateral.astype(jnp.float32) + top_down).astype(lateral.dtype)
            else:
                prev = lateral
            out[i] = prev
        return out


class ImageEncoder(nnx.Module):
    """Hiera trunk + FPN neck; the `scalp` lowest-resolution levels are dropped from the output."""

    def __init__(
        self,
        trunk_cfg: HieraConfig,
        neck_cfg: NeckConfig,
        *,
        dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.trunk = Hiera(trunk_cfg, dtype=dtype, rngs=rngs)
        self.neck = FpnNeck(neck_cfg, dtype=dtype, rngs=rngs)
        self.scalp = neck_cfg.scalp
        if self.trunk.channel_list != self.neck.backbone_channel_list:
            raise ValueError(
                f"trunk channels {self.trunk.channel_list} do not match the neck's "
                f"backbone_channel_list {self.neck.backbone_channel_list}"
            )

    def __call__(self, images: Float[Array, "b H W 3"]) -> ImageEncoderOutput:
        """Encode normalised RGB images (H, W multiples of 32) into FPN features + encodings."""
        return self.encode(images)[1]

    def encode(
        self, images: Float[Array, "b H W 3"]
    ) -> tuple[list[Float[Array, "b h w c"]], ImageEncoderOutput]:
        """(trunk maps highest resolution first, the encoder output) for the same images."""
        trunk = self.trunk(images)
        return trunk, self._output(self.neck(trunk))

    def _output(self, features: list) -> ImageEncoderOutput:
        if self.scalp > 0:
            features = features[: -self.scalp]
        # The sine encoding depends on the shape only: a trace-time constant per level.
        pos = tuple(
            jnp.broadcast_to(
                jnp.asarray(sine_pe_2d(f.shape[1], f.shape[2], self.neck.d_model), f.dtype),
                f.shape[:3] + (self.neck.d_model,),
            )
            for f in features
        )
        return ImageEncoderOutput(
            vision_features=features[-1], vision_pos_enc=pos, backbone_fpn=tuple(features)
        )
