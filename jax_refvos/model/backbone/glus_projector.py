"""GLUS visual tokens: CLIP features -> 1-D average pooling -> `mm_projector` (LLM width).

Per frame (GLUS `model/llava/model/llava_arch.py::encode_images`, LISA-7B-v1 weights):
1. CLIP ViT-L/14 @ 224, `hidden_states[-2]` (penultimate layer, no final norm), CLS dropped:
   256 x 1024 patch tokens in raster order over the 16 x 16 grid (LLaVA `CLIPVisionTower`).
2. `AvgPool1d(kernel=4, stride=4)` along that flattened order: token m is the mean of tokens
   4m..4m+3, a 1 x 4 horizontal strip (not a 2 x 2 block) -> 64 x 1024.
3. `mm_projector` = Linear(1024 -> 4096) with bias -> 64 LLM embeddings per frame.

Attribute names follow the LISA checkpoint with its `model.` prefix removed:
`vision_tower.vision_tower.vision_model.*` and `mm_projector.{weight,bias}`.
"""

from collections.abc import Sequence

import einops
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, Float

from jax_refvos import sharding
from jax_refvos.model.backbone.clip_vit import ClipVisionConfig, ClipVisionModel

GLUS_POOL = 4
GLUS_SELECT_LAYER = -2


def select_features(
    hidden_states: Sequence[Float[Array, "b s d"]], layer: int = GLUS_SELECT_LAYER
) -> Float[Array, "b s d"]:
    """`hidden_states[layer]` without the CLS token (LLaVA `feature_select`, "patch" mode)."""
    return hidden_states[layer][:, 1:]


def avg_pool_tokens(x: Float[Array, "b s d"], kernel: int = GLUS_POOL) -> Float[Array, "b m d"]:
    """`torch.nn.AvgPool1d(kernel, stride=kernel)` over the token axis (averaged in float32).

    Token m of the result is the mean of tokens kernel*m .. kernel*m + kernel - 1; a tail of
    fewer than `kernel` tokens is dropped, as torch does (ceil_mode=False).
    """
    s = x.shape[1] // kernel * kernel
    pooled = einops.reduce(x[:, :s].astype(jnp.float32), "b (m k) d -> b m d", "mean", k=kernel)
    return pooled.astype(x.dtype)


def make_mm_projector(
    in_dim: int, out_dim: int, *, dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs
) -> nnx.Linear:
    """LLaVA's linear `mm_projector`; its output is the LLM's embedding width."""
    return nnx.Linear(
        in_dim,
        out_dim,
        kernel_init=sharding.annotated(nnx.initializers.lecun_normal(), (None, "embed")),
        bias_init=sharding.annotated(nnx.initializers.zeros_init(), ("embed",)),
        dtype=dtype,
        param_dtype=param_dtype,
        rngs=rngs,
    )


def _pool_and_project(
    features: Float[Array, "b s c"], mm_projector: nnx.Linear, pool: int
) -> Float[Array, "b m d"]:
    tokens = mm_projector(avg_pool_tokens(features, pool))
    return sharding.shard(tokens, "batch", "tokens", "embed")


class GlusProjector(nnx.Module):
    """Pools CLIP patch features 1 x `pool` and projects them to the LLM width.

    `mm_projector` is the LISA key `model.mm_projector.*` (load with the `model.` prefix
    removed).
    """

    def __init__(
        self,
        in_dim: int = 1024,
        out_dim: int = 4096,
        *,
        pool: int = GLUS_POOL,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.mm_projector = make_mm_projector(
            in_dim, out_dim, dtype=dtype, param_dtype=param_dtype, rngs=rngs
        )
        self.pool = pool

    def __call__(self, features: Float[Array, "b s c"]) -> Float[Array, "b m d"]:
        """float[b, 256, 1024] patch features -> float[b, 64, 4096] LLM embeddings."""
        return _pool_and_project(features, self.mm_projector, self.pool)


class ClipVisionTower(nnx.Module):
    """LLaVA `CLIPVisionTower`: the HF model under `vision_tower`, plus feature selection.

    Returns `hidden_states[select_layer]` without CLS; only the layers it needs are run.
    """

    def __init__(
        self,
        cfg: ClipVisionConfig,
        *,
        select_layer: int = GLUS_SELECT_LAYER,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        self.vision_tower = ClipVisionModel(cfg, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.select_layer = select_layer

    def __call__(self, pixel_values: Float[Array, "b H W c"]) -> Float[Array, "b s c"]:
        return self.vision_tower.hidden_state(pixel_values, self.select_layer)[:, 1:]


class ClipLlavaVision(nnx.Module):
    """GLUS frames -> LLM visual tokens: CLIP tower, 1 x 4 average pooling, `mm_projector`.

    Frames are CLIP-preprocessed (`clip_preprocess.preprocess`): float[b, 224, 224, 3] ->
    float[b, 64, out_dim]. The tower is frozen in GLUS (run under no-grad there); here freezing
    is the optimizer's parameter filter (R8), which also skips its backward pass.
    """

    def __init__(
        self,
        cfg: ClipVisionConfig,
        out_dim: int = 4096,
        *,
        pool: int = GLUS_POOL,
        select_layer: int = GLUS_SELECT_LAYER,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.vision_tower = ClipVisionTower(cfg, select_layer=select_layer, **kw)
        self.mm_projector = make_mm_projector(cfg.hidden_size, out_dim, **kw)
        self.pool = pool

    def __call__(self, frames: Float[Array, "b H W c"]) -> Float[Array, "b m d"]:
        return _pool_and_project(self.vision_tower(frames), self.mm_projector, self.pool)
