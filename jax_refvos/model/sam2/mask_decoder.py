"""SAM 2's mask decoder: output tokens + prompt tokens -> mask logits, IoU, object score.

Port of `sam2/modeling/sam/mask_decoder.py::MaskDecoder` (sam2 1.1.0), with the
`TwoWayTransformer` that `SAM2Base._build_sam_heads` builds for it. Batch-first, channels-last:
image maps are [b, h, w, d]; masks are [b, q, 4h, 4w] (q mask outputs). Attribute names equal
the PyTorch ones so `weights.torch_names.load_torch_state` maps weights by path.

Nothing here assumes point prompts: `sparse_prompt_embeddings` may be any [b, p, d] tokens
(point/box embeddings from `PromptEncoder`, or learned VIRST/GLUS prompt tokens).
"""

import math

import einops
import flax.struct
import jax
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, Float

from jax_refvos.model.sam2.config import MaskDecoderConfig
from jax_refvos.model.sam2.layers import MLP, LayerNorm2d
from jax_refvos.model.sam2.prompt_encoder import GELU
from jax_refvos.model.sam2.two_way_transformer import TwoWayTransformer


@flax.struct.dataclass
class MaskDecoderOutput:
    """What `MaskDecoder.__call__` returns (q = 3 with multimask output, else 1).

    Attributes:
        masks: mask logits, float32[b, q, 4h, 4w].
        iou_pred: predicted IoU per mask, float32[b, q].
        sam_tokens_out: mask-token outputs for the object pointer, float32[b, q', d]
            (q' = 3 with multimask output and `use_multimask_token_for_obj_ptr`, else 1).
        object_score_logits: object-presence logit, float32[b, 1].
    """

    masks: Float[Array, "b q H W"]
    iou_pred: Float[Array, "b q"]
    sam_tokens_out: Float[Array, "b q d"]
    object_score_logits: Float[Array, "b 1"]


class ConvTranspose2x2(nnx.Module):
    """`nn.ConvTranspose2d(in, out, kernel_size=2, stride=2)` on NHWC maps.

    With kernel = stride = 2 the patches do not overlap: input pixel (i, j) writes the 2x2
    output patch at (2i + p, 2j + q) as `x[i, j] @ weight[:, :, p, q]`. `weight` keeps the torch
    layout [in, out, 2, 2], so it loads without a transform.
    """

    def __init__(self, in_channels: int, out_channels: int, *, dtype=jnp.float32, rngs: nnx.Rngs):
        # torch's default init: U(±1/√fan_in), fan_in = weight.size(1) * 2 * 2 for this layout.
        bound = 1.0 / math.sqrt(out_channels * 4)
        uniform = jax.random.uniform
        self.weight = nnx.Param(
            uniform(rngs.params(), (in_channels, out_channels, 2, 2), jnp.float32, -bound, bound)
        )
        self.bias = nnx.Param(uniform(rngs.params(), (out_channels,), jnp.float32, -bound, bound))
        self.dtype = dtype

    def __call__(self, x: Float[Array, "b h w d"]) -> Float[Array, "b H W e"]:
        weight = self.weight[...].astype(self.dtype)
        y = jnp.einsum("bhwd,depq->bhpwqe", x.astype(self.dtype), weight)
        y = einops.rearrange(y, "b h p w q e -> b (h p) (w q) e")
        return y + self.bias[...].astype(self.dtype)


def stability_scores(mask_logits: Float[Array, "b q h w"], delta: float) -> Float[Array, "b q"]:
    """IoU of the masks thresholded at +delta and at -delta (1 where both are empty)."""
    area_i = jnp.sum(mask_logits > delta, axis=(-2, -1)).astype(jnp.float32)
    area_u = jnp.sum(mask_logits > -delta, axis=(-2, -1)).astype(jnp.float32)
    return jnp.where(area_u > 0, area_i / jnp.maximum(area_u, 1.0), 1.0)


def dynamic_multimask_via_stability(
    all_mask_logits: Float[Array, "b q h w"],
    all_iou_scores: Float[Array, "b q"],
    delta: float,
    thresh: float,
) -> tuple[Float[Array, "b 1 h w"], Float[Array, "b 1"]]:
    """The single-mask output (token 0), or the best multimask output where it is unstable.

    "Best" is the highest predicted IoU among tokens 1..q-1 (first one on ties, like
    `torch.argmax`); "unstable" is a stability score of mask 0 below `thresh`.
    """
    multi_logits, multi_iou = all_mask_logits[:, 1:], all_iou_scores[:, 1:]
    best = jnp.argmax(multi_iou, axis=-1)[:, None]  # [b, 1]
    best_logits = jnp.take_along_axis(multi_logits, best[:, :, None, None], axis=1)
    best_iou = jnp.take_along_axis(multi_iou, best, axis=1)
    single_logits, single_iou = all_mask_logits[:, :1], all_iou_scores[:, :1]
    is_stable = stability_scores(single_logits, delta) >= thresh  # [b, 1]
    mask_out = jnp.where(is_stable[:, :, None, None], single_logits, best_logits)
    iou_out = jnp.where(is_stable, single_iou, best_iou)
    return mask_out, iou_out


class MaskDecoder(nnx.Module):
    """Two-way transformer over [obj-score, IoU, mask tokens, prompts] and the image, then a
    hypernetwork dot product with the upscaled (stride 4) image features.

    `conv_s0` / `conv_s1` live here (their weights are under `sam_mask_decoder.` in the
    checkpoint) but, as in the reference, are applied by the image-feature preparation
    (`SAM2Base.forward_image`): `__call__` receives already projected high-res features.
    """

    def __init__(
        self,
        transformer_dim: int,
        cfg: MaskDecoderConfig,
        *,
        dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        d = transformer_dim
        self.transformer_dim = d
        self.transformer = TwoWayTransformer(
            cfg.transformer_depth,
            d,
            cfg.transformer_num_heads,
            cfg.transformer_mlp_dim,
            cfg.attention_downsample_rate,
            dtype=dtype,
            rngs=rngs,
        )
        self.num_multimask_outputs = cfg.num_multimask_outputs
        self.iou_token = nnx.Embed(1, d, rngs=rngs)
        self.num_mask_tokens = cfg.num_multimask_outputs + 1
        self.mask_tokens = nnx.Embed(self.num_mask_tokens, d, rngs=rngs)
        self.pred_obj_scores = cfg.pred_obj_scores
        if self.pred_obj_scores:
            self.obj_score_token = nnx.Embed(1, d, rngs=rngs)
        self.use_multimask_token_for_obj_ptr = cfg.use_multimask_token_for_obj_ptr
        self.output_upscaling = nnx.List(
            [
                ConvTranspose2x2(d, d // 4, dtype=dtype, rngs=rngs),
                LayerNorm2d(d // 4),
                GELU(),
                ConvTranspose2x2(d // 4, d // 8, dtype=dtype, rngs=rngs),
                GELU(),
            ]
        )
        self.use_high_res_features = cfg.use_high_res_features
        if self.use_high_res_features:
            self.conv_s0 = nnx.Conv(d, d // 8, kernel_size=(1, 1), dtype=dtype, rngs=rngs)
            self.conv_s1 = nnx.Conv(d, d // 4, kernel_size=(1, 1), dtype=dtype, rngs=rngs)
        self.output_hypernetworks_mlps = nnx.List(
            [MLP(d, d, d // 8, 3, dtype=dtype, rngs=rngs) for _ in range(self.num_mask_tokens)]
        )
        self.iou_prediction_head = MLP(
            d,
            cfg.iou_head_hidden_dim,
            self.num_mask_tokens,
            cfg.iou_head_depth,
            sigmoid_output=cfg.iou_prediction_use_sigmoid,
            dtype=dtype,
            rngs=rngs,
        )
        if self.pred_obj_scores:
            if cfg.pred_obj_scores_mlp:
                self.pred_obj_score_head = MLP(d, d, 1, 3, dtype=dtype, rngs=rngs)
            else:
                self.pred_obj_score_head = nnx.Linear(d, 1, dtype=dtype, rngs=rngs)
        self.dynamic_multimask_via_stability = cfg.dynamic_multimask_via_stability
        self.dynamic_multimask_stability_delta = cfg.dynamic_multimask_stability_delta
        self.dynamic_multimask_stability_thresh = cfg.dynamic_multimask_stability_thresh

    def _upscale(
        self,
        src: Float[Array, "b h w d"],
        high_res_features: tuple[Array, Array] | None,
    ) -> Float[Array, "b H W c"]:
        dc1, ln1, act1, dc2, act2 = self.output_upscaling
        if not self.use_high_res_features:
            return act2(dc2(act1(ln1(dc1(src)))))
        if high_res_features is None:
            raise ValueError("this decoder uses high-res features; pass high_res_features")
        feat_s0, feat_s1 = high_res_features
        x = act1(ln1(dc1(src) + feat_s1))
        return act2(dc2(x) + feat_s0)

    def predict_masks(
        self,
        image_embeddings: Float[Array, "b h w d"],
        image_pe: Float[Array, "1 h w d"],
        sparse_prompt_embeddings: Float[Array, "b p d"],
        dense_prompt_embeddings: Float[Array, "b h w d"],
        *,
        repeat_image: bool = False,
        high_res_features: tuple[Array, Array] | None = None,
        sparse_valid: Array | None = None,
    ) -> tuple[Array, Array, Array, Array]:
        """All outputs before selection: masks [b, q, 4h, 4w], iou [b, q], mask tokens
        [b, q, d] and object-score logits [b, 1], with q = num_mask_tokens. `sparse_valid`
        (bool[b, p], optional): prompt tokens that are there (others are masked out)."""
        b = sparse_prompt_embeddings.shape[0]
        embeds = [self.iou_token.embedding[...], self.mask_tokens.embedding[...]]
        if self.pred_obj_scores:
            embeds.insert(0, self.obj_score_token.embedding[...])
        s = int(self.pred_obj_scores)  # index of the IoU token
        output_tokens = jnp.broadcast_to(
            jnp.concatenate(embeds), (b, s + 1 + self.num_mask_tokens, self.transformer_dim)
        )
        tokens = jnp.concatenate(
            [output_tokens.astype(sparse_prompt_embeddings.dtype), sparse_prompt_embeddings],
            axis=1,
        )
        # `repeat_image`: one image for all b prompt sets (torch repeat_interleave by b).
        src = jnp.repeat(image_embeddings, b, axis=0) if repeat_image else image_embeddings
        if src.shape[0] != b:
            raise ValueError(f"image batch {src.shape[0]} != prompt batch {b}")
        src = src + dense_prompt_embeddings
        if image_pe.shape[0] != 1:
            raise ValueError(f"image_pe must have batch 1 (get_dense_pe), got {image_pe.shape}")

        token_valid = None
        if sparse_valid is not None:
            fixed = jnp.ones((b, output_tokens.shape[1]), bool)
            token_valid = jnp.concatenate([fixed, sparse_valid.astype(bool)], axis=1)
        hs, keys = self.transformer(src, image_pe, tokens, token_valid)
        iou_token_out = hs[:, s]
        mask_tokens_out = hs[:, s + 1 : s + 1 + self.num_mask_tokens]

        src = einops.rearrange(keys, "b (h w) d -> b h w d", h=src.shape[1])
        upscaled = self._upscale(src, high_res_features)
        hyper_in = jnp.stack(
            [mlp(mask_tokens_out[:, i]) for i, mlp in enumerate(self.output_hypernetworks_mlps)],
            axis=1,
        )
        masks = jnp.einsum("bqc,bhwc->bqhw", hyper_in, upscaled)

        iou_pred = self.iou_prediction_head(iou_token_out)
        if self.pred_obj_scores:
            object_score_logits = self.pred_obj_score_head(hs[:, 0])
        else:
            # Object assumed present: sigmoid(10) ~ 1, as in the reference.
            object_score_logits = jnp.full((b, 1), 10.0, iou_pred.dtype)
        return masks, iou_pred, mask_tokens_out, object_score_logits

    def __call__(
        self,
        image_embeddings: Float[Array, "b h w d"],
        image_pe: Float[Array, "1 h w d"],
        sparse_prompt_embeddings: Float[Array, "b p d"],
        dense_prompt_embeddings: Float[Array, "b h w d"],
        *,
        multimask_output: bool,
        repeat_image: bool = False,
        high_res_features: tuple[Float[Array, "b H W c"], Float[Array, "b h2 w2 e"]] | None = None,
        training: bool = False,
    ) -> MaskDecoderOutput:
        """Predict masks for each prompt set.

        Args:
            image_embeddings: stride-16 features, float32[b, h, w, d] ([1, h, w, d] with
                `repeat_image`).
            image_pe: `PromptEncoder.get_dense_pe()`, float32[1, h, w, d].
            sparse_prompt_embeddings: prompt tokens, float32[b, p, d] (p may be 0).
            dense_prompt_embeddings: float32[b, h, w, d] (mask prompt or no-mask embedding).
            multimask_output: static; return the 3 multimask outputs instead of one mask.
            repeat_image: static; repeat the image batch b times (torch repeat_interleave).
            high_res_features: (feat_s0 float32[b, 4h, 4w, d/8], feat_s1 float32[b, 2h, 2w,
                d/4]) after `conv_s0` / `conv_s1`; required when `use_high_res_features`.
            training: static; the reference's `self.training`. The stability fallback for
                single-mask output applies only when False.

        Returns:
            `MaskDecoderOutput` (see there for shapes).
        """
        masks, iou_pred, mask_tokens_out, object_score_logits = self.predict_masks(
            image_embeddings,
            image_pe,
            sparse_prompt_embeddings,
            dense_prompt_embeddings,
            repeat_image=repeat_image,
            high_res_features=high_res_features,
        )
        if multimask_output:
            masks, iou_pred = masks[:, 1:], iou_pred[:, 1:]
        elif self.dynamic_multimask_via_stability and not training:
            masks, iou_pred = dynamic_multimask_via_stability(
                masks,
                iou_pred,
                self.dynamic_multimask_stability_delta,
                self.dynamic_multimask_stability_thresh,
            )
        else:
            masks, iou_pred = masks[:, :1], iou_pred[:, :1]
        if multimask_output and self.use_multimask_token_for_obj_ptr:
            sam_tokens_out = mask_tokens_out[:, 1:]
        else:
            # The reference always uses the single-mask token otherwise (even after a stability
            # fallback): tracking is trained on it.
            sam_tokens_out = mask_tokens_out[:, :1]
        f32 = jnp.float32
        return MaskDecoderOutput(
            masks=masks.astype(f32),
            iou_pred=iou_pred.astype(f32),
            sam_tokens_out=sam_tokens_out.astype(f32),
            object_score_logits=object_score_logits.astype(f32),
        )
