"""SAM 2 / 2.1 in Flax NNX: image features, SAM heads, memory conditioning and encoding.

Port of `sam2/modeling/sam2_base.py::SAM2Base` (sam2 1.1.0) in eval mode. The frame loop and the
memory dicts live elsewhere (`memory_bank.py`, `propagation.py`); this module holds the parameters
and the per-frame math. Attribute names equal the torch ones, so the official state dict loads by
path (`weights/sam2_torch.py`). Maps are NHWC; masks are [b, m, h, w] (m = candidate masks).
"""

import einops
import flax.struct
import jax
import jax.numpy as jnp
from flax import nnx
from jaxtyping import Array, Bool, Float, Int

from jax_refvos.model.sam2 import memory_bank as mb
from jax_refvos.model.sam2.config import Sam2Config
from jax_refvos.model.sam2.image_encoder import ImageEncoder, fold_1x1
from jax_refvos.model.sam2.layers import MLP
from jax_refvos.model.sam2.mask_decoder import MaskDecoder
from jax_refvos.model.sam2.memory_attention import MemoryAttention
from jax_refvos.model.sam2.memory_encoder import MemoryEncoder
from jax_refvos.model.sam2.position import sine_pe_1d, sine_pe_2d
from jax_refvos.model.sam2.prompt_encoder import PromptEncoder
from jax_refvos.model.sam2.resize import resize_bilinear

NO_OBJ_SCORE = -1024.0
# A point label for "no point here" (training's static click arrays; see `_sam_heads_per_row`).
ABSENT_POINT = -2


@flax.struct.dataclass
class ImageFeatures:
    """`forward_image` + `_prepare_backbone_features`, channels-last."""

    high_res: tuple[Float[Array, "b H4 W4 c0"], Float[Array, "b H8 W8 c1"]]  # after conv_s0/s1
    pix: Float[Array, "b h w d"]  # stride-16 features
    pos: Float[Array, "b h w d"]  # their sine encoding

    def expand(self, index: Int[Array, "o"]) -> "ImageFeatures":
        """Features of video `index[i]` for object i (objects share their video's features)."""
        return jax.tree.map(lambda x: x[index], self)


@flax.struct.dataclass
class SamOutput:
    """`_forward_sam_heads` outputs (the best mask already selected)."""

    low_res_masks: Float[Array, "b 1 H4 W4"]
    high_res_masks: Float[Array, "b 1 H W"]
    ious: Float[Array, "b m"]
    obj_ptr: Float[Array, "b d"]
    object_score_logits: Float[Array, "b 1"]
    # Training with a per-row multimask choice (`forward_sam_heads(multimask_output=<array>)`):
    # the masks the loss chooses among (`low_res_multimasks`), object-gated; single-mask rows
    # hold mask 0 in slot 0 and `candidate_valid` [True, False, False].
    candidate_masks: Float[Array, "b 3 H4 W4"] | None = None
    candidate_ious: Float[Array, "b 3"] | None = None
    candidate_valid: Bool[Array, "b 3"] | None = None


def _trunc_normal(key, shape, std=0.02):
    return jax.random.truncated_normal(key, -2.0, 2.0, shape, jnp.float32) * std


class Sam2Model(nnx.Module):
    """The SAM2 network. See `propagation.py` for whole-video tracking with it."""

    def __init__(self, cfg: Sam2Config, *, dtype=jnp.float32, rngs: nnx.Rngs):
        if not cfg.directly_add_no_mem_embed:
            raise NotImplementedError("only directly_add_no_mem_embed=True configs are ported")
        self.cfg = cfg
        d, e, h = cfg.hidden_dim, cfg.mem_dim, cfg.embedding_size
        self.image_encoder = ImageEncoder(cfg.trunk, cfg.neck, dtype=dtype, rngs=rngs)
        self.memory_attention = MemoryAttention(cfg.memory_attention, dtype=dtype, rngs=rngs)
        self.memory_encoder = MemoryEncoder(cfg.memory_encoder, dtype=dtype, rngs=rngs)
        self.sam_prompt_encoder = PromptEncoder(
            d,
            (h, h),
            (cfg.image_size, cfg.image_size),
            cfg.mask_decoder.mask_in_chans,
            dtype=dtype,
            rngs=rngs,
        )
        self.sam_mask_decoder = MaskDecoder(d, cfg.mask_decoder, dtype=dtype, rngs=rngs)
        if cfg.use_obj_ptrs_in_encoder:
            self.mask_downsample = nnx.Conv(
                1, 1, (4, 4), strides=4, padding="VALID", dtype=dtype, rngs=rngs
            )
            if cfg.use_mlp_for_obj_ptr_proj:
                self.obj_ptr_proj = MLP(d, d, d, 3, dtype=dtype, rngs=rngs)
            else:
                self.obj_ptr_proj = nnx.Linear(d, d, dtype=dtype, rngs=rngs)
        if cfg.proj_tpos_enc_in_obj_ptrs:
            self.obj_ptr_tpos_proj = nnx.Linear(d, e, dtype=dtype, rngs=rngs)
        key = rngs.params()
        k1, k2, k3, k4, k5 = jax.random.split(key, 5)
        self.maskmem_tpos_enc = nnx.Param(_trunc_normal(k1, (cfg.num_maskmem, 1, 1, e)))
        self.no_mem_embed = nnx.Param(_trunc_normal(k2, (1, 1, d)))
        self.no_mem_pos_enc = nnx.Param(_trunc_normal(k3, (1, 1, d)))
        if cfg.mask_decoder.pred_obj_scores and cfg.use_obj_ptrs_in_encoder:
            self.no_obj_ptr = nnx.Param(_trunc_normal(k4, (1, d)))
        if cfg.no_obj_embed_spatial:
            self.no_obj_embed_spatial = nnx.Param(_trunc_normal(k5, (1, e)))

    # ----------------------------------------------------------------- image features
    def forward_image(self, images: Float[Array, "b H W 3"]) -> ImageFeatures:
        """ImageNet-normalised frames at `image_size` -> the three feature levels SAM2 uses."""
        trunk, out = self.image_encoder.encode(images)
        fpn = list(out.backbone_fpn[-3:])
        if self.cfg.mask_decoder.use_high_res_features:
            neck = self.image_encoder.neck
            first = len(out.backbone_fpn) - 3
            for j, conv in enumerate(
                (self.sam_mask_decoder.conv_s0, self.sam_mask_decoder.conv_s1)
            ):
                level = first + j
                if level in neck.fpn_top_down_levels:
                    fpn[j] = conv(fpn[j])
                else:  # a lateral-only level: fold its 1x1 conv into conv_s0 / conv_s1
                    lateral = neck.convs[len(neck.convs) - 1 - level].conv
                    fpn[j] = fold_1x1(lateral, conv, trunk[level])
        return ImageFeatures(high_res=(fpn[0], fpn[1]), pix=fpn[2], pos=out.vision_pos_enc[-1])

    # ----------------------------------------------------------------- SAM heads
    def use_multimask(self, is_init_cond_frame: bool, num_points: int) -> bool:
        """`SAM2Base._use_multimask` (static: frame kind and point count are known)."""
        c = self.cfg
        return (
            c.multimask_output_in_sam
            and (is_init_cond_frame or c.multimask_output_for_tracking)
            and c.multimask_min_pt_num <= num_points <= c.multimask_max_pt_num
        )

    def forward_sam_heads(
        self,
        pix: Float[Array, "b h w d"],
        high_res: tuple,
        *,
        point_coords: Float[Array, "b n 2"] | None = None,
        point_labels: Int[Array, "b n"] | None = None,
        mask_inputs: Float[Array, "b 1 Hm Wm"] | None = None,
        sparse_embeddings: Float[Array, "b n d"] | None = None,
        multimask_output: bool | Bool[Array, "b"],
        training: bool = False,
    ) -> SamOutput:
        """`_forward_sam_heads`: prompt encoder + mask decoder + best-mask and pointer logic.

        `sparse_embeddings`, when given, replaces the prompt encoder's sparse output (VIRST/GLUS
        feed learned prompt tokens this way; the dense no-mask embedding is kept). `training`:
        the reference's `self.training` (turns the decoder's stability fallback off).
        `multimask_output` may be a bool per row (SAM 2 training, where one click gives three
        masks and a box one): then the output also holds the candidates for the loss.
        """
        if not isinstance(multimask_output, bool):
            return self._sam_heads_per_row(
                pix,
                high_res,
                point_coords=point_coords,
                point_labels=point_labels,
                mask_inputs=mask_inputs,
                multimask=multimask_output,
            )
        b = pix.shape[0]
        sparse, dense = self._prompt_embeddings(b, point_coords, point_labels, mask_inputs)
        if sparse_embeddings is not None:
            sparse = sparse_embeddings.astype(sparse.dtype)
        dec = self.sam_mask_decoder(
            pix,
            self.sam_prompt_encoder.get_dense_pe(),
            sparse,
            dense,
            multimask_output=multimask_output,
            repeat_image=False,
            high_res_features=high_res,
            training=training,
        )
        obj_score = dec.object_score_logits.astype(jnp.float32)
        masks = dec.masks.astype(jnp.float32)
        appearing = obj_score > 0
        if self.cfg.mask_decoder.pred_obj_scores:
            masks = jnp.where(appearing[:, :, None, None], masks, NO_OBJ_SCORE)
        tokens = dec.sam_tokens_out
        if multimask_output:
            best = jnp.argmax(dec.iou_pred, axis=-1)
            low = jnp.take_along_axis(masks, best[:, None, None, None], axis=1)
            token = tokens[:, 0]
            if tokens.shape[1] > 1:
                token = jnp.take_along_axis(tokens, best[:, None, None], axis=1)[:, 0]
        else:
            low, token = masks, tokens[:, 0]
        size = (self.cfg.image_size, self.cfg.image_size)
        obj_ptr = self._object_pointer(token, appearing, obj_score)
        return SamOutput(
            low_res_masks=low,
            high_res_masks=resize_bilinear(low, size),
            ious=dec.iou_pred.astype(jnp.float32),
            obj_ptr=obj_ptr,
            object_score_logits=obj_score,
        )

    def _prompt_embeddings(self, b, point_coords, point_labels, mask_inputs):
        if point_coords is None:
            point_coords = jnp.zeros((b, 1, 2), jnp.float32)
            point_labels = -jnp.ones((b, 1), jnp.int32)
        mask_prompt = None
        if mask_inputs is not None:
            size = self.sam_prompt_encoder.mask_input_size
            mask_prompt = resize_bilinear(mask_inputs.astype(jnp.float32), size, antialias=True)
            mask_prompt = einops.rearrange(mask_prompt, "b 1 h w -> b h w 1")
        return self.sam_prompt_encoder(
            points=(point_coords, point_labels), boxes=None, masks=mask_prompt
        )

    def _sam_heads_per_row(
        self, pix, high_res, *, point_coords, point_labels, mask_inputs, multimask
    ) -> SamOutput:
        """`forward_sam_heads` in training mode with `multimask_output` chosen per row.

        Points labelled `ABSENT_POINT` are not there (static-shape room for clicks to come):
        masked out of the decoder's attention, which equals leaving them out.
        """
        b = pix.shape[0]
        sparse_valid = None
        if point_labels is not None:
            present = point_labels != ABSENT_POINT
            point_labels = jnp.where(present, point_labels, -1)
            pad = jnp.ones((b, 1), bool)  # the prompt encoder's own padding point
            sparse_valid = jnp.concatenate([present, pad], axis=1)
        sparse, dense = self._prompt_embeddings(b, point_coords, point_labels, mask_inputs)
        dec = self.sam_mask_decoder.predict_masks(
            pix,
            self.sam_prompt_encoder.get_dense_pe(),
            sparse,
            dense,
            repeat_image=False,
            high_res_features=high_res,
            sparse_valid=sparse_valid,
        )
        masks, iou_pred, tokens, obj_score = (x.astype(jnp.float32) for x in dec)
        appearing = obj_score > 0
        if self.cfg.mask_decoder.pred_obj_scores:
            masks = jnp.where(appearing[:, :, None, None], masks, NO_OBJ_SCORE)
        multi = multimask[:, None]
        single_slot = jnp.arange(3)[None] == 0
        cand = jnp.where(multi[:, :, None, None], masks[:, 1:], masks[:, :1])
        cand_iou = jnp.where(multi, iou_pred[:, 1:], iou_pred[:, :1])
        cand_valid = multi | single_slot
        best = jnp.where(multimask, jnp.argmax(iou_pred[:, 1:], axis=-1), 0)  # [b]
        low = jnp.take_along_axis(cand, best[:, None, None, None], axis=1)
        token_index = jnp.where(
            multimask & self.cfg.mask_decoder.use_multimask_token_for_obj_ptr, best + 1, 0
        )
        token = jnp.take_along_axis(tokens, token_index[:, None, None], axis=1)[:, 0]
        size = (self.cfg.image_size, self.cfg.image_size)
        return SamOutput(
            low_res_masks=low,
            high_res_masks=resize_bilinear(low, size),
            ious=cand_iou,
            obj_ptr=self._object_pointer(token, appearing, obj_score),
            object_score_logits=obj_score,
            candidate_masks=cand,
            candidate_ious=cand_iou,
            candidate_valid=cand_valid,
        )

    def _object_pointer(self, token, appearing, obj_score) -> Float[Array, "b d"]:
        c = self.cfg
        obj_ptr = self.obj_ptr_proj(token).astype(jnp.float32)
        lam = jax.nn.sigmoid(obj_score) if c.soft_no_obj_ptr else appearing.astype(jnp.float32)
        return self._blend_no_obj_ptr(obj_ptr, lam)

    def _blend_no_obj_ptr(self, obj_ptr, lam: Float[Array, "b 1"]) -> Float[Array, "b d"]:
        """Object pointer where the object appears (lam = 1), `no_obj_ptr` where it does not."""
        c = self.cfg
        if not c.mask_decoder.pred_obj_scores:
            return obj_ptr
        if c.fixed_no_obj_ptr:
            obj_ptr = lam * obj_ptr
        return obj_ptr + (1 - lam) * self.no_obj_ptr[...]

    def use_mask_as_output(
        self, feats: ImageFeatures, mask_inputs: Float[Array, "b 1 H W"]
    ) -> SamOutput:
        """`_use_mask_as_output`: a binary mask prompt at image_size becomes the output as is."""
        out_scale, out_bias = 20.0, -10.0
        mask = mask_inputs.astype(jnp.float32)
        high = mask * out_scale + out_bias
        low = resize_bilinear(high, (high.shape[-2] // 4, high.shape[-1] // 4), antialias=True)
        appearing = jnp.any(mask.reshape(mask.shape[0], -1) > 0, axis=1)[:, None]
        lam = appearing.astype(jnp.float32)
        if self.cfg.use_obj_ptrs_in_encoder:
            small = self.mask_downsample(einops.rearrange(mask, "b 1 h w -> b h w 1"))
            obj_ptr = self.forward_sam_heads(
                feats.pix,
                feats.high_res,
                mask_inputs=einops.rearrange(small, "b h w 1 -> b 1 h w"),
                multimask_output=False,
            ).obj_ptr
            obj_ptr = self._blend_no_obj_ptr(obj_ptr, lam)
        else:
            obj_ptr = jnp.zeros((mask.shape[0], self.cfg.hidden_dim), jnp.float32)
        return SamOutput(
            low_res_masks=low,
            high_res_masks=high,
            ious=jnp.ones((mask.shape[0], 1), jnp.float32),
            obj_ptr=obj_ptr,
            object_score_logits=out_scale * lam + out_bias,
        )

    # ----------------------------------------------------------------- memory
    def pix_without_memory(self, feats: ImageFeatures) -> Float[Array, "b h w d"]:
        """An initial conditioning frame sees no memory: features + `no_mem_embed`."""
        return feats.pix + self.no_mem_embed[...].reshape(1, 1, 1, -1).astype(feats.pix.dtype)

    def pix_with_memory(
        self,
        feats: ImageFeatures,
        memory: mb.GatheredMemory,
        num_frames: Int[Array, ""],
        *,
        bucketed: bool = True,
    ) -> Float[Array, "b h w d"]:
        """`_prepare_memory_conditioned_features` for a tracked frame, given its memory.

        `bucketed`: attend over the smallest power-of-two bucket of slots that holds the valid
        ones (`lax.switch`, see below). Pass False under `vmap` (where a batched switch would
        run every branch) or when all slots are usually full: one branch over every slot.
        """
        c = self.cfg
        b, h, w, d = feats.pix.shape
        e = c.mem_dim
        s = h * w
        slot_pos = jnp.asarray(sine_pe_2d(h, w, e)).reshape(1, 1, s, e)
        tpos_table = self.maskmem_tpos_enc[...].reshape(c.num_maskmem, e)

        ptr, ptr_valid = memory.ptr, memory.ptr_valid
        if c.add_tpos_enc_to_obj_ptrs:
            max_ptrs = jnp.minimum(num_frames, c.max_obj_ptrs_in_encoder)
            t_diff_max = jnp.maximum(max_ptrs - 1, 1).astype(jnp.float32)
            tpos_dim = d if c.proj_tpos_enc_in_obj_ptrs else e
            ptr_pos = sine_pe_1d(memory.ptr_dist.astype(jnp.float32) / t_diff_max, tpos_dim)
            if c.proj_tpos_enc_in_obj_ptrs:
                ptr_pos = self.obj_ptr_tpos_proj(ptr_pos).astype(jnp.float32)
        else:
            ptr_pos = jnp.zeros(ptr.shape[:2] + (e,), jnp.float32)
        if e < d:
            k = d // e
            ptr = einops.rearrange(ptr, "b q (k e) -> b (q k) e", k=k)
            ptr_pos = einops.repeat(ptr_pos, "b q e -> b (q k) e", k=k)
            ptr_valid = einops.repeat(ptr_valid, "b q -> b (q k)", k=k)
        curr = einops.rearrange(feats.pix, "b h w d -> b (h w) d")
        curr_pos = einops.rearrange(feats.pos, "b h w d -> b (h w) d")

        # DEVIATION(sam2): the reference attends to the memories that exist; our bank has a fixed
        # number of slots. Valid slots are moved to the front and attention runs over the
        # smallest bucket of slots that holds them (one compiled branch per bucket), so early
        # frames and short videos do not pay for empty slots. Same result: empty slots are
        # masked out of the attention either way.
        order = jnp.argsort(~memory.feats_valid, axis=1, stable=True)
        feats_m = jnp.take_along_axis(memory.feats, order[:, :, None, None], 1)
        tpos_m = jnp.take_along_axis(memory.feats_tpos, order, 1)
        valid_m = jnp.take_along_axis(memory.feats_valid, order, 1)
        needed = jnp.max(valid_m.sum(1))
        buckets = slot_buckets(valid_m.shape[1]) if bucketed else (valid_m.shape[1],)

        def attend_to(n_slots: int):
            def run(_):
                tpos = tpos_table[mb.clip_index(tpos_m[:, :n_slots], c.num_maskmem)]
                mem = einops.rearrange(feats_m[:, :n_slots].astype(jnp.float32),
                                       "b m s e -> b (m s) e")  # fmt: skip
                mem_pos = einops.rearrange(slot_pos + tpos[:, :, None, :], "b m s e -> b (m s) e")
                mem_valid = einops.repeat(valid_m[:, :n_slots], "b m -> b (m s)", s=s)
                return self.memory_attention(
                    curr,
                    curr_pos,
                    jnp.concatenate([mem, ptr.astype(mem.dtype)], 1),
                    jnp.concatenate([mem_pos, ptr_pos], 1),
                    num_obj_ptr_tokens=ptr.shape[1],
                    memory_valid=jnp.concatenate([mem_valid, ptr_valid], 1),
                )

            return run

        branch = jnp.searchsorted(jnp.asarray(buckets), needed)
        out = jax.lax.switch(branch, [attend_to(n) for n in buckets], None)
        return einops.rearrange(out, "b (h w) d -> b h w d", h=h, w=w)

    def encode_memory(
        self,
        feats: ImageFeatures,
        high_res_masks: Float[Array, "b 1 H W"],
        object_score_logits: Float[Array, "b 1"],
        *,
        is_mask_from_pts: bool,
    ) -> Float[Array, "b s e"]:
        """`_encode_new_memory` -> memory tokens [b, h*w, mem_dim] (positions are constant)."""
        c = self.cfg
        if c.binarize_mask_from_pts_for_mem_enc and is_mask_from_pts:
            mask = (high_res_masks > 0).astype(jnp.float32)
        else:
            mask = jax.nn.sigmoid(high_res_masks.astype(jnp.float32))
        mask = mask * c.sigmoid_scale_for_mem_enc + c.sigmoid_bias_for_mem_enc
        out, _ = self.memory_encoder(
            feats.pix, einops.rearrange(mask, "b 1 h w -> b h w 1"), skip_mask_sigmoid=True
        )
        out = out.astype(jnp.float32)
        if c.no_obj_embed_spatial:
            absent = (object_score_logits <= 0).astype(jnp.float32)  # [b, 1]
            out = out + absent[:, :, None, None] * self.no_obj_embed_spatial[...][:, None, None]
        return einops.rearrange(out, "b h w e -> b (h w) e")

    def memory_dims(self) -> dict:
        """Capacities of the memory bank this model needs (see `MemoryBank.empty`)."""
        c, h = self.cfg, self.cfg.embedding_size
        return dict(
            r=c.num_maskmem - 1,
            p=c.max_obj_ptrs_in_encoder - 1,
            s=h * h,
            e=c.mem_dim,
            d=c.hidden_dim,
            dtype=c.storage_dtype,
        )


def slot_buckets(num_slots: int) -> tuple[int, ...]:
    """Memory sizes (in slots) compiled as separate attention branches: 1, 2, 4, ..., all."""
    sizes = {num_slots}
    size = 1
    while size < num_slots:
        sizes.add(size)
        size *= 2
    return tuple(sorted(sizes))
