"""SAM's two-way transformer: prompt tokens and image tokens attend to each other.

Port of `sam2/modeling/sam/transformer.py::{TwoWayTransformer, TwoWayAttentionBlock}`
(sam2 1.1.0). Batch-first: the image is [b, h, w, d] (torch: [b, d, h, w]) and is flattened
row-major to [b, s = h*w, d], the order torch's `flatten(2)` gives. Attribute names equal the
PyTorch ones so weights map by path.
"""

import einops
import jax
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, Bool, Float

from jax_refvos.model.sam2.attention import Attention
from jax_refvos.model.sam2.layers import MLP


class TwoWayAttentionBlock(nnx.Module):
    """Token self-attn, token->image cross-attn, token MLP, image->token cross-attn (post-norm).

    The first block skips the positional encoding in its self-attention and has no residual
    there (`skip_first_layer_pe`), as in the reference.
    """

    def __init__(
        self,
        embedding_dim: int,
        num_heads: int,
        mlp_dim: int = 2048,
        attention_downsample_rate: int = 2,
        skip_first_layer_pe: bool = False,
        *,
        dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        d = embedding_dim
        down = dict(downsample_rate=attention_downsample_rate, dtype=dtype, rngs=rngs)
        norm = dict(epsilon=1e-5, dtype=dtype, rngs=rngs)  # torch nn.LayerNorm default eps
        self.self_attn = Attention(d, num_heads, dtype=dtype, rngs=rngs)
        self.norm1 = nnx.LayerNorm(d, **norm)
        self.cross_attn_token_to_image = Attention(d, num_heads, **down)
        self.norm2 = nnx.LayerNorm(d, **norm)
        # sam2_utils.MLP(d, mlp_dim, d, num_layers=2, activation=nn.ReLU).
        self.mlp = MLP(d, mlp_dim, d, 2, activation=jax.nn.relu, dtype=dtype, rngs=rngs)
        self.norm3 = nnx.LayerNorm(d, **norm)
        self.norm4 = nnx.LayerNorm(d, **norm)
        self.cross_attn_image_to_token = Attention(d, num_heads, **down)
        self.skip_first_layer_pe = skip_first_layer_pe

    def __call__(
        self,
        queries: Float[Array, "b q d"],
        keys: Float[Array, "b s d"],
        query_pe: Float[Array, "b q d"],
        key_pe: Float[Array, "#b s d"],
        query_valid: Bool[Array, "b q"] | None = None,
    ) -> tuple[Float[Array, "b q d"], Float[Array, "b s d"]]:
        """One block; returns the updated (queries, keys). Invalid queries (absent prompt
        points) are masked out wherever they would be attended to."""
        if self.skip_first_layer_pe:
            queries = self.self_attn(q=queries, k=queries, v=queries, kv_valid=query_valid)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q=q, k=q, v=queries, kv_valid=query_valid)
        queries = self.norm1(queries)

        q, k = queries + query_pe, keys + key_pe
        queries = self.norm2(queries + self.cross_attn_token_to_image(q=q, k=k, v=keys))

        queries = self.norm3(queries + self.mlp(queries))

        q, k = queries + query_pe, keys + key_pe
        keys = self.norm4(
            keys + self.cross_attn_image_to_token(q=k, k=q, v=queries, kv_valid=query_valid)
        )
        return queries, keys


class TwoWayTransformer(nnx.Module):
    """`depth` two-way blocks, then a final token->image attention and LayerNorm."""

    def __init__(
        self,
        depth: int,
        embedding_dim: int,
        num_heads: int,
        mlp_dim: int,
        attention_downsample_rate: int = 2,
        *,
        dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.depth = depth
        self.embedding_dim = embedding_dim
        self.num_heads = num_heads
        self.mlp_dim = mlp_dim
        self.layers = nnx.List(
            [
                TwoWayAttentionBlock(
                    embedding_dim,
                    num_heads,
                    mlp_dim,
                    attention_downsample_rate,
                    skip_first_layer_pe=(i == 0),
                    dtype=dtype,
                    rngs=rngs,
                )
                for i in range(depth)
            ]
        )
        self.final_attn_token_to_image = Attention(
            embedding_dim,
            num_heads,
            downsample_rate=attention_downsample_rate,
            dtype=dtype,
            rngs=rngs,
        )
        self.norm_final_attn = nnx.LayerNorm(embedding_dim, epsilon=1e-5, dtype=dtype, rngs=rngs)

    def __call__(
        self,
        image_embedding: Float[Array, "b h w d"],
        image_pe: Float[Array, "#b h w d"],
        point_embedding: Float[Array, "b q d"],
        token_valid: Bool[Array, "b q"] | None = None,
    ) -> tuple[Float[Array, "b q d"], Float[Array, "b s d"]]:
        """Run the transformer.

        Args:
            image_embedding: the image tokens as a map, float32[b, h, w, d].
            image_pe: their positional encoding, float32[b or 1, h, w, d].
            point_embedding: the prompt/output tokens, float32[b, q, d]; also their PE.
            token_valid: optional; False marks a token that is not there (static-shape
                padding): no token or image position attends to it, which equals leaving it
                out (attention is order-free over keys).

        Returns:
            (queries float32[b, q, d], keys float32[b, h*w, d]), keys in row-major order.
        """
        keys = einops.rearrange(image_embedding, "b h w d -> b (h w) d")
        key_pe = einops.rearrange(image_pe, "b h w d -> b (h w) d")
        queries = point_embedding
        for layer in self.layers:
            queries, keys = layer(
                queries, keys, query_pe=point_embedding, key_pe=key_pe, query_valid=token_valid
            )
        q, k = queries + point_embedding, keys + key_pe
        queries = self.norm_final_attn(queries + self.final_attn_token_to_image(q=q, k=k, v=keys))
        return queries, keys
