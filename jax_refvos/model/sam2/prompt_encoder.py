"""SAM's prompt encoder: points/boxes -> sparse tokens, mask -> dense map, random-Fourier PE.

Port of `sam2/modeling/sam/prompt_encoder.py::PromptEncoder` and
`sam2/modeling/position_encoding.py::PositionEmbeddingRandom` (sam2 1.1.0). Batch-first,
channels-last: dense outputs are [b, h, w, d] instead of torch's [b, d, h, w]. Attribute names
equal the PyTorch ones (`pe_layer.positional_encoding_gaussian_matrix`, `point_embeddings.0`,
`mask_downscaling.3`, ...) so `weights.torch_names.load_torch_state` maps weights by path.

Learned prompt tokens (VIRST/GLUS) do not go through this module: the caller passes them to
`MaskDecoder` as `sparse_prompt_embeddings` directly.
"""

import math

import einops
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jaxtyping import Array, Float, Int

from jax_refvos.model.sam2.layers import GELU, Buffer, LayerNorm2d


class PositionEmbeddingRandom(nnx.Module):
    """Random Fourier features of normalised (x, y) coordinates: [sin(2π·c·G), cos(2π·c·G)].

    Port of `sam2/modeling/position_encoding.py::PositionEmbeddingRandom`. The Gaussian matrix
    is a torch buffer in the checkpoint, hence a `Buffer` (non-trainable) of shape [2, f].
    """

    def __init__(self, num_pos_feats: int = 64, scale: float | None = None, *, rngs: nnx.Rngs):
        scale = 1.0 if scale is None or scale <= 0.0 else scale
        init = scale * jax.random.normal(rngs.params(), (2, num_pos_feats), jnp.float32)
        self.positional_encoding_gaussian_matrix = Buffer(init)

    def _pe_encoding(self, coords: Float[Array, "*n 2"]) -> Float[Array, "*n d"]:
        """Encode points in [0, 1]² (x first); output width d = 2 * num_pos_feats."""
        coords = 2.0 * coords - 1.0
        # Full-precision f32 (no TF32 on GPU): the phases reach ~20 rad, and sin/cos amplify
        # any rounding. K=2, so this costs nothing.
        gauss = self.positional_encoding_gaussian_matrix[...]
        proj = jnp.matmul(coords, gauss, precision=jax.lax.Precision.HIGHEST)
        proj = 2.0 * math.pi * proj
        return jnp.concatenate([jnp.sin(proj), jnp.cos(proj)], axis=-1)

    def __call__(self, size: tuple[int, int]) -> Float[Array, "h w d"]:
        """The encoding of every pixel centre of an h x w grid (a shape-only grid, numpy)."""
        h, w = size
        # Pixel centres as torch builds them: cumsum(ones) - 0.5, divided by the side.
        y = (np.arange(1, h + 1, dtype=np.float32) - 0.5) / h
        x = (np.arange(1, w + 1, dtype=np.float32) - 0.5) / w
        grid = np.stack(np.broadcast_arrays(x[None, :], y[:, None]), axis=-1)
        return self._pe_encoding(jnp.asarray(grid))

    def forward_with_coords(
        self, coords: Float[Array, "b n 2"], image_size: tuple[int, int]
    ) -> Float[Array, "b n d"]:
        """Encode pixel coordinates (x, y) of an image of size (H, W)."""
        size_xy = jnp.asarray([image_size[1], image_size[0]], jnp.float32)
        coords = coords.astype(jnp.float32) / size_xy
        return self._pe_encoding(coords)


class PromptEncoder(nnx.Module):
    """Sparse (points, box corners) and dense (mask) prompt embeddings for the mask decoder."""

    def __init__(
        self,
        embed_dim: int,
        image_embedding_size: tuple[int, int],
        input_image_size: tuple[int, int],
        mask_in_chans: int,
        *,
        dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.embed_dim = embed_dim
        self.image_embedding_size = tuple(image_embedding_size)
        self.input_image_size = tuple(input_image_size)
        self.pe_layer = PositionEmbeddingRandom(embed_dim // 2, rngs=rngs)
        # Labels 0/1: negative/positive point; 2/3: top-left/bottom-right box corner.
        self.num_point_embeddings = 4
        self.point_embeddings = nnx.List(
            [nnx.Embed(1, embed_dim, rngs=rngs) for _ in range(self.num_point_embeddings)]
        )
        self.not_a_point_embed = nnx.Embed(1, embed_dim, rngs=rngs)
        self.mask_input_size = (4 * image_embedding_size[0], 4 * image_embedding_size[1])
        c = mask_in_chans
        conv = dict(padding="VALID", dtype=dtype, rngs=rngs)
        self.mask_downscaling = nnx.List(
            [
                nnx.Conv(1, c // 4, kernel_size=(2, 2), strides=(2, 2), **conv),
                LayerNorm2d(c // 4),
                GELU(),
                nnx.Conv(c // 4, c, kernel_size=(2, 2), strides=(2, 2), **conv),
                LayerNorm2d(c),
                GELU(),
                nnx.Conv(c, embed_dim, kernel_size=(1, 1), **conv),
            ]
        )
        self.no_mask_embed = nnx.Embed(1, embed_dim, rngs=rngs)

    def get_dense_pe(self) -> Float[Array, "1 h w d"]:
        """The PE of the image-embedding grid, the decoder's `image_pe`."""
        return self.pe_layer(self.image_embedding_size)[None]

    def _embed_points(
        self, points: Float[Array, "b n 2"], labels: Int[Array, "b n"], pad: bool
    ) -> Float[Array, "b n d"]:
        points = points.astype(jnp.float32) + 0.5  # pixel centre
        if pad:
            # A padding point (label -1) stands in for the missing box, as in the reference.
            b = points.shape[0]
            points = jnp.concatenate([points, jnp.zeros((b, 1, 2), points.dtype)], axis=1)
            labels = jnp.concatenate([labels, jnp.full((b, 1), -1, labels.dtype)], axis=1)
        pe = self.pe_layer.forward_with_coords(points, self.input_image_size)
        labels = labels[..., None]
        pe = jnp.where(labels == -1, self.not_a_point_embed.embedding[...], pe)
        for i, emb in enumerate(self.point_embeddings):
            pe = jnp.where(labels == i, pe + emb.embedding[...], pe)
        return pe

    def _embed_boxes(self, boxes: Float[Array, "b 4"]) -> Float[Array, "b 2 d"]:
        corners = einops.rearrange(boxes.astype(jnp.float32) + 0.5, "b (p xy) -> b p xy", xy=2)
        pe = self.pe_layer.forward_with_coords(corners, self.input_image_size)
        corner_embed = jnp.concatenate(
            [self.point_embeddings[2].embedding[...], self.point_embeddings[3].embedding[...]]
        )
        return pe + corner_embed

    def _embed_masks(self, masks: Float[Array, "b H W 1"]) -> Float[Array, "b h w d"]:
        x = masks
        for layer in self.mask_downscaling:
            x = layer(x)
        return x

    def __call__(
        self,
        points: tuple[Float[Array, "b n 2"], Int[Array, "b n"]] | None,
        boxes: Float[Array, "b 4"] | None,
        masks: Float[Array, "b H W 1"] | None,
    ) -> tuple[Float[Array, "b p d"], Float[Array, "b h w d"]]:
        """Embed the given prompts (any may be None).

        Args:
            points: (coords float32[b, n, 2] as (x, y) pixels of `input_image_size`,
                labels int32[b, n]: 1 positive, 0 negative, 2/3 box corners, -1 padding).
                Without boxes a padding point is appended (n' = n + 1).
            boxes: float32[b, 4] as (x0, y0, x1, y1) pixels; adds 2 tokens.
            masks: float32[b, 4h, 4w, 1] mask logits at `mask_input_size`.

        Returns:
            sparse float32[b, n', d] (n' = 0 with neither points nor boxes) and dense
            float32[b, h, w, d] (the `no_mask_embed` everywhere when `masks` is None). The batch
            is that of the first given prompt, 1 if none is given.
        """
        if points is not None:
            bs = points[0].shape[0]
        elif boxes is not None:
            bs = boxes.shape[0]
        elif masks is not None:
            bs = masks.shape[0]
        else:
            bs = 1
        sparse = [jnp.zeros((bs, 0, self.embed_dim), jnp.float32)]
        if points is not None:
            coords, labels = points
            sparse.append(self._embed_points(coords, labels, pad=boxes is None))
        if boxes is not None:
            sparse.append(self._embed_boxes(boxes))
        sparse = jnp.concatenate(sparse, axis=1)
        if masks is not None:
            dense = self._embed_masks(masks)
        else:
            h, w = self.image_embedding_size
            dense = jnp.broadcast_to(
                self.no_mask_embed.embedding[...][0], (bs, h, w, self.embed_dim)
            )
        return sparse, dense
