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
`model.initial_seg_fusion_module.` and `model.seg_prompter.` (`weights.torch_names`).

This file holds `InitialSegFusion`; `SegPrompter` is in `seg_prompter.py` and the shared configs
and layers in `fusion_common.py`, all importable from here.
"""

import einops
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, Bool, Float

from jax_refvos import sharding
from jax_refvos.methods.virst.fusion_common import (  # noqa: F401 (re-exported)
    FusionInputError,
    InitialSegFusionConfig,
    SegPrompterConfig,
    TorchMultiheadAttention,
    _downsample,
    _spatial_down,
)
from jax_refvos.model.common_layers import layer_norm as _layer_norm
from jax_refvos.model.common_layers import linear as _linear


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
        self.spatial_down = _spatial_down(cfg.vision_dim, cfg.token_dim, cfg.down_steps, **kw)
        self.spatial_norm = _layer_norm(cfg.token_dim, cfg.norm_eps, **kw)
        self.vision_proj = _linear(cfg.token_dim, cfg.hidden_dim, (None, "embed"), **kw)
        self.norm_q = _layer_norm(cfg.hidden_dim, cfg.norm_eps, **kw)
        self.norm_kv = _layer_norm(cfg.hidden_dim, cfg.norm_eps, **kw)
        self.cross_attn = TorchMultiheadAttention(cfg.hidden_dim, cfg.num_heads, **kw)
        self.gate = nnx.Param(jnp.asarray(cfg.gate_init, param_dtype))

    def vision_tokens(self, vision_feats: Float[Array, "b t H W c"]) -> Float[Array, "b t s d"]:
        """`spatial_norm(spatial_down(features))`: 64 tokens per frame, (y, x) order."""
        return self.spatial_norm(
            _downsample(self.spatial_down, vision_feats, self.cfg.grid_hw, self.cfg.down_steps)
        )

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


from jax_refvos.methods.virst.seg_prompter import SegPrompter, SegPrompterOutput  # noqa: E402,F401
