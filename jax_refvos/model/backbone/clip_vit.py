"""CLIP ViT vision tower (OpenAI CLIP ViT-L/14 @ 224 as used by LLaVA, LISA and GLUS) in Flax NNX.

Port of `transformers/models/clip/modeling_clip.py::CLIPVisionModel` (transformers 4.x layout:
`CLIPVisionModel.vision_model` is a `CLIPVisionTransformer`). Attribute names equal the PyTorch
state-dict keys (`vision_model.embeddings.patch_embedding.weight`,
`vision_model.encoder.layers.3.self_attn.q_proj.weight`, ...), so
`weights.torch_names.load_torch_state` maps weights by path; the Conv2d patch embedding
(OIHW -> HWIO) is handled there. Batch-first, channels-last: pixels are float[b, H, W, 3].

Pre-norm transformer: patch conv (no bias) + CLS + learned positions -> `pre_layrnorm` ->
layers (LN -> MHA -> +, LN -> MLP -> +) -> `post_layernorm` on the CLS token only (pooler).
`hidden_states` follows HF `output_hidden_states`: entry 0 is the embedding output after
`pre_layrnorm`, entry i the output of layer i; LLaVA/GLUS use entry -2 (no final norm).
"""

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import einops
import flax
import jax
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, Float

from jax_refvos import sharding
from jax_refvos.errors import InputError
from jax_refvos.model.common_layers import layer_norm as _layer_norm
from jax_refvos.model.common_layers import linear as _linear
from jax_refvos.model.sam2.attention import attend
from jax_refvos.model.sam2.layers import gelu


def quick_gelu(x: jax.Array) -> jax.Array:
    """OpenAI CLIP's activation: x * sigmoid(1.702 x) (HF `QuickGELUActivation`)."""
    return x * jax.nn.sigmoid(1.702 * x)


ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {"quick_gelu": quick_gelu, "gelu": gelu}


class ClipConfigError(InputError):
    """A CLIP config.json that does not describe a vision tower we can build."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class ClipVisionConfig:
    """CLIP vision-tower settings; the defaults are OpenAI CLIP ViT-L/14 at 224 px."""

    hidden_size: int = 1024
    intermediate_size: int = 4096
    num_hidden_layers: int = 24
    num_attention_heads: int = 16
    image_size: int = 224
    patch_size: int = 14
    num_channels: int = 3
    layer_norm_eps: float = 1e-5
    hidden_act: str = "quick_gelu"

    def __post_init__(self):
        if self.hidden_act not in ACTIVATIONS:
            raise ValueError(f"hidden_act {self.hidden_act!r} not in {sorted(ACTIVATIONS)}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not divisible by "
                f"num_attention_heads {self.num_attention_heads}"
            )
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of {self.patch_size}")

    @property
    def grid_size(self) -> int:
        """Patches per side."""
        return self.image_size // self.patch_size

    @property
    def num_positions(self) -> int:
        """Patch tokens plus the CLS token."""
        return self.grid_size**2 + 1


# transformers' CLIPVisionConfig defaults (ViT-B/32), used for keys a config.json leaves out.
_HF_DEFAULTS: dict[str, Any] = dict(
    hidden_size=768,
    intermediate_size=3072,
    num_hidden_layers=12,
    num_attention_heads=12,
    image_size=224,
    patch_size=32,
    num_channels=3,
    layer_norm_eps=1e-5,
    hidden_act="quick_gelu",
)


def vit_large_patch14_224() -> ClipVisionConfig:
    """`openai/clip-vit-large-patch14`: 24 layers, width 1024, 16 heads, 16 x 16 patches."""
    return ClipVisionConfig()


def from_hf(config: Mapping[str, Any], *, source: str = "config") -> ClipVisionConfig:
    """`ClipVisionConfig` from an HF CLIPVisionConfig dict or a CLIPConfig with `vision_config`.

    Keys the dict omits take transformers' defaults, as `CLIPVisionConfig(**d)` would.

    Raises:
        ClipConfigError: not a CLIP config, unsupported activation or inconsistent sizes (the
            message names `source`).
    """
    if "vision_config" in config:
        config = config["vision_config"] or {}
    model_type = config.get("model_type", "clip_vision_model")
    if model_type != "clip_vision_model":
        # A LLaVA or other config would silently give its LLM width as hidden_size.
        raise ClipConfigError(f"{source}: model_type {model_type!r} is not a CLIP config")
    values = {k: config.get(k, v) for k, v in _HF_DEFAULTS.items()}
    if values["hidden_act"] not in ACTIVATIONS:
        raise ClipConfigError(
            f"{source}: hidden_act {values['hidden_act']!r} is not supported "
            f"(use one of {sorted(ACTIVATIONS)})"
        )
    try:
        return ClipVisionConfig(**values)
    except (TypeError, ValueError) as e:
        raise ClipConfigError(f"{source}: {e}") from e


class ClipVisionEmbeddings(nnx.Module):
    """Patch conv (stride = kernel = patch, no bias), CLS token, learned positions.

    Port of `modeling_clip.py::CLIPVisionEmbeddings` without `interpolate_pos_encoding`: the
    input must be `image_size` square.
    """

    def __init__(
        self, cfg: ClipVisionConfig, *, dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs
    ):
        d, p = cfg.hidden_size, cfg.patch_size
        init = sharding.annotated(nnx.initializers.normal(d**-0.5), ("embed",))
        self.class_embedding = nnx.Param(init(rngs.params(), (d,), param_dtype))
        self.patch_embedding = nnx.Conv(
            cfg.num_channels,
            d,
            kernel_size=(p, p),
            strides=(p, p),
            padding="VALID",
            use_bias=False,
            kernel_init=sharding.annotated(
                nnx.initializers.lecun_normal(), (None, None, None, "embed")
            ),
            dtype=dtype,
            param_dtype=param_dtype,
            rngs=rngs,
        )
        self.position_embedding = nnx.Embed(
            cfg.num_positions,
            d,
            embedding_init=sharding.annotated(nnx.initializers.normal(0.02), (None, "embed")),
            dtype=dtype,
            param_dtype=param_dtype,
            rngs=rngs,
        )
        self.image_size = cfg.image_size
        self.dtype = dtype

    def __call__(self, pixel_values: Float[Array, "b H W c"]) -> Float[Array, "b s d"]:
        b, height, width = pixel_values.shape[:3]
        if (height, width) != (self.image_size, self.image_size):
            raise ValueError(
                f"input image size {height}x{width} does not match the model's "
                f"{self.image_size}x{self.image_size}"
            )
        patches = self.patch_embedding(pixel_values.astype(self.dtype))
        patches = einops.rearrange(patches, "b h w d -> b (h w) d")
        cls = jnp.broadcast_to(
            self.class_embedding[...].astype(self.dtype), (b, 1, patches.shape[-1])
        )
        x = jnp.concatenate([cls, patches], axis=1)
        return x + self.position_embedding.embedding[...].astype(self.dtype)


class ClipAttention(nnx.Module):
    """Multi-head self-attention with biased q/k/v/out projections, scale head_dim^-0.5.

    Port of `modeling_clip.py::CLIPAttention` (no mask, no dropout: the vision tower uses none).
    """

    def __init__(
        self, cfg: ClipVisionConfig, *, dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs
    ):
        d = cfg.hidden_size
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.k_proj = _linear(d, d, ("embed", "heads"), **kw)
        self.v_proj = _linear(d, d, ("embed", "heads"), **kw)
        self.q_proj = _linear(d, d, ("embed", "heads"), **kw)
        self.out_proj = _linear(d, d, ("heads", "embed"), **kw)
        self.num_heads = cfg.num_attention_heads

    def __call__(self, x: Float[Array, "b s d"]) -> Float[Array, "b s d"]:
        heads = lambda y: einops.rearrange(y, "b s (n k) -> b n s k", n=self.num_heads)
        out = attend(heads(self.q_proj(x)), heads(self.k_proj(x)), heads(self.v_proj(x)))
        return self.out_proj(einops.rearrange(out, "b n s k -> b s (n k)"))


class ClipMLP(nnx.Module):
    """fc1 -> activation -> fc2 (port of `modeling_clip.py::CLIPMLP`)."""

    def __init__(
        self, cfg: ClipVisionConfig, *, dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs
    ):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.fc1 = _linear(cfg.hidden_size, cfg.intermediate_size, ("embed", "mlp"), **kw)
        self.fc2 = _linear(cfg.intermediate_size, cfg.hidden_size, ("mlp", "embed"), **kw)
        self.activation_fn = ACTIVATIONS[cfg.hidden_act]

    def __call__(self, x: Float[Array, "b s d"]) -> Float[Array, "b s d"]:
        return self.fc2(self.activation_fn(self.fc1(x)))


class ClipEncoderLayer(nnx.Module):
    """Pre-norm block: x + attn(LN1(x)), then x + mlp(LN2(x)) (`CLIPEncoderLayer`)."""

    def __init__(
        self, cfg: ClipVisionConfig, *, dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs
    ):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.self_attn = ClipAttention(cfg, **kw)
        self.layer_norm1 = _layer_norm(cfg.hidden_size, cfg.layer_norm_eps, **kw)
        self.mlp = ClipMLP(cfg, **kw)
        self.layer_norm2 = _layer_norm(cfg.hidden_size, cfg.layer_norm_eps, **kw)

    def __call__(self, x: Float[Array, "b s d"]) -> Float[Array, "b s d"]:
        x = x + self.self_attn(self.layer_norm1(x))
        x = x + self.mlp(self.layer_norm2(x))
        return sharding.shard(x, "batch", "tokens", "embed")


class ClipEncoder(nnx.Module):
    """The stack of `ClipEncoderLayer`s (`CLIPEncoder`)."""

    def __init__(
        self, cfg: ClipVisionConfig, *, dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs
    ):
        self.layers = nnx.List(
            [
                ClipEncoderLayer(cfg, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
                for _ in range(cfg.num_hidden_layers)
            ]
        )


@flax.struct.dataclass
class ClipVisionOutput:
    """HF `BaseModelOutputWithPooling` with `output_hidden_states=True`.

    last_hidden_state: float[b, 1 + s, d], output of the last layer (no final norm).
    pooler_output: float[b, d], `post_layernorm` of the CLS token of `last_hidden_state`.
    hidden_states: 1 + num_layers arrays float[b, 1 + s, d]: embeddings after `pre_layrnorm`,
        then the output of each layer.
    """

    last_hidden_state: jax.Array
    pooler_output: jax.Array
    hidden_states: tuple[jax.Array, ...]


class ClipVisionTransformer(nnx.Module):
    """Embeddings, `pre_layrnorm`, encoder, `post_layernorm` (HF 4.x `CLIPVisionTransformer`)."""

    def __init__(
        self, cfg: ClipVisionConfig, *, dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs
    ):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.embeddings = ClipVisionEmbeddings(cfg, **kw)
        # "layrnorm" (sic) is the HF attribute name.
        self.pre_layrnorm = _layer_norm(cfg.hidden_size, cfg.layer_norm_eps, **kw)
        self.encoder = ClipEncoder(cfg, **kw)
        self.post_layernorm = _layer_norm(cfg.hidden_size, cfg.layer_norm_eps, **kw)

    def hidden_states(
        self, pixel_values: Float[Array, "b H W c"], num_layers: int | None = None
    ) -> list[Float[Array, "b s d"]]:
        """[embeddings after `pre_layrnorm`, output of layer 1, ..., of layer `num_layers`]."""
        x = self.pre_layrnorm(self.embeddings(pixel_values))
        x = sharding.shard(x, "batch", "tokens", "embed")
        layers = list(self.encoder.layers)
        out = [x]
        for layer in layers[: len(layers) if num_layers is None else num_layers]:
            x = layer(x)
            out.append(x)
        return out

    def __call__(self, pixel_values: Float[Array, "b H W c"]) -> ClipVisionOutput:
        states = self.hidden_states(pixel_values)
        last = states[-1]
        return ClipVisionOutput(
            last_hidden_state=last,
            pooler_output=self.post_layernorm(last[:, 0]),
            hidden_states=tuple(states),
        )


class ClipVisionModel(nnx.Module):
    """HF `CLIPVisionModel`: the vision transformer under `vision_model` (state-dict prefix).

    Example:
        model = ClipVisionModel(vit_large_patch14_224(), rngs=nnx.Rngs(0))
        out = model(pixels)                        # pixels: float32[b, 224, 224, 3]
        feats = model.hidden_state(pixels, -2)     # == out.hidden_states[-2], 23 layers run
    """

    def __init__(
        self, cfg: ClipVisionConfig, *, dtype=jnp.float32, param_dtype=jnp.float32, rngs: nnx.Rngs
    ):
        self.config = cfg
        self.vision_model = ClipVisionTransformer(
            cfg, dtype=dtype, param_dtype=param_dtype, rngs=rngs
        )

    def __call__(self, pixel_values: Float[Array, "b H W c"]) -> ClipVisionOutput:
        """All outputs, as HF `CLIPVisionModel(pixel_values, output_hidden_states=True)`."""
        return self.vision_model(pixel_values)

    def hidden_state(
        self, pixel_values: Float[Array, "b H W c"], index: int
    ) -> Float[Array, "b s d"]:
        """`hidden_states[index]` (Python indexing over 1 + num_layers entries).

        Runs only the layers that entry needs: LLaVA's `mm_vision_select_layer = -2` skips the
        last layer and `post_layernorm`.
        """
        total = self.config.num_hidden_layers + 1
        if not -total <= index < total:
            raise IndexError(f"hidden state {index} out of range for {total} hidden states")
        return self.vision_model.hidden_states(pixel_values, index % total)[-1]
