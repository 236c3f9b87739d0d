"""Frozen configs for SAM 2 / SAM 2.1 and the named presets (the four bundled `sam2` yamls).

Field names and defaults follow the `sam2` package 1.1.0 constructors (`Hiera`, `FpnNeck`,
`MemoryAttention`, `MemoryEncoder`, `SAM2Base`) so a yaml maps onto them one to one. The presets
equal `sam2/configs/sam2.1/sam2.1_hiera_{t,s,b+,l}.yaml` and `sam2/configs/sam2/sam2_hiera_*.yaml`
together with the overrides `build_sam2_video_predictor` applies (stability-based multimask
fallback, binarised point-prompt masks for the memory encoder).
"""

import dataclasses

import jax.numpy as jnp


@dataclasses.dataclass(frozen=True, kw_only=True)
class HieraConfig:
    """`sam2.modeling.backbones.hieradet.Hiera` (the image trunk)."""

    embed_dim: int = 96
    num_heads: int = 1
    stages: tuple[int, ...] = (1, 2, 7, 2)
    global_att_blocks: tuple[int, ...] = (5, 7, 9)
    window_pos_embed_bkg_spatial_size: tuple[int, int] = (7, 7)
    window_spec: tuple[int, ...] = (8, 4, 14, 7)
    q_pool: int = 3
    q_stride: tuple[int, int] = (2, 2)
    dim_mul: float = 2.0
    head_mul: float = 2.0
    mlp_ratio: float = 4.0
    drop_path_rate: float = 0.0

    @property
    def channel_list(self) -> tuple[int, ...]:
        """Output channels of each stage, lowest resolution first (the neck's order)."""
        dims = [int(self.embed_dim * self.dim_mul**i) for i in range(len(self.stages))]
        return tuple(reversed(dims))


@dataclasses.dataclass(frozen=True, kw_only=True)
class NeckConfig:
    """`FpnNeck` + `ImageEncoder(scalp=1)`; positions: `PositionEmbeddingSine(d_model)`."""

    d_model: int = 256
    backbone_channel_list: tuple[int, ...] = (768, 384, 192, 96)
    fpn_top_down_levels: tuple[int, ...] = (2, 3)
    fpn_interp_model: str = "nearest"
    scalp: int = 1


@dataclasses.dataclass(frozen=True, kw_only=True)
class MemoryAttentionConfig:
    """`MemoryAttention` with `MemoryAttentionLayer`s of two `RoPEAttention`s (SAM 2.1 yaml)."""

    d_model: int = 256
    mem_dim: int = 64  # kv_in_dim of the cross-attention
    num_layers: int = 4
    num_heads: int = 1
    dim_feedforward: int = 2048
    dropout: float = 0.1
    rope_theta: float = 10000.0
    pos_enc_at_input: bool = True
    pos_enc_at_attn: bool = False
    pos_enc_at_cross_attn_keys: bool = True
    pos_enc_at_cross_attn_queries: bool = False


@dataclasses.dataclass(frozen=True, kw_only=True)
class MemoryEncoderConfig:
    """`MemoryEncoder` (mask downsampler k3 s2 p1 to stride 16, 2 CXBlocks, 64-d output)."""

    in_dim: int = 256
    out_dim: int = 64
    downsampler_kernel_size: int = 3
    downsampler_stride: int = 2
    downsampler_padding: int = 1
    downsampler_total_stride: int = 16
    fuser_num_layers: int = 2
    fuser_kernel_size: int = 7
    fuser_padding: int = 3
    layer_scale_init_value: float = 1e-6


@dataclasses.dataclass(frozen=True, kw_only=True)
class MaskDecoderConfig:
    """`MaskDecoder` + `TwoWayTransformer(depth=2, mlp_dim=2048, num_heads=8)`, as in `SAM2Base`."""

    transformer_depth: int = 2
    transformer_mlp_dim: int = 2048
    transformer_num_heads: int = 8
    attention_downsample_rate: int = 2
    num_multimask_outputs: int = 3
    iou_head_depth: int = 3
    iou_head_hidden_dim: int = 256
    mask_in_chans: int = 16
    use_high_res_features: bool = True
    iou_prediction_use_sigmoid: bool = True
    pred_obj_scores: bool = True
    pred_obj_scores_mlp: bool = True
    use_multimask_token_for_obj_ptr: bool = True
    # `build_sam2(..., apply_postprocessing=True)` turns these on for inference.
    dynamic_multimask_via_stability: bool = True
    dynamic_multimask_stability_delta: float = 0.05
    dynamic_multimask_stability_thresh: float = 0.98


@dataclasses.dataclass(frozen=True, kw_only=True)
class Sam2Config:
    """Whole SAM 2 model (`SAM2Base` arguments) plus its sub-configs."""

    name: str = "sam2.1_hiera_t"
    trunk: HieraConfig = HieraConfig()
    neck: NeckConfig = NeckConfig()
    memory_attention: MemoryAttentionConfig = MemoryAttentionConfig()
    memory_encoder: MemoryEncoderConfig = MemoryEncoderConfig()
    mask_decoder: MaskDecoderConfig = MaskDecoderConfig()
    image_size: int = 1024
    backbone_stride: int = 16
    num_maskmem: int = 7
    sigmoid_scale_for_mem_enc: float = 20.0
    sigmoid_bias_for_mem_enc: float = -10.0
    binarize_mask_from_pts_for_mem_enc: bool = True
    use_mask_input_as_output_without_sam: bool = True
    max_cond_frames_in_attn: int = -1  # -1: all conditioning frames (VIRST sets 3)
    directly_add_no_mem_embed: bool = True
    no_obj_embed_spatial: bool = True
    multimask_output_in_sam: bool = True
    multimask_min_pt_num: int = 0
    multimask_max_pt_num: int = 1
    multimask_output_for_tracking: bool = True
    use_obj_ptrs_in_encoder: bool = True
    max_obj_ptrs_in_encoder: int = 16
    add_tpos_enc_to_obj_ptrs: bool = True
    proj_tpos_enc_in_obj_ptrs: bool = True
    use_signed_tpos_enc_to_obj_ptrs: bool = True
    only_obj_ptrs_in_the_past_for_eval: bool = True
    fixed_no_obj_ptr: bool = True
    soft_no_obj_ptr: bool = False
    use_mlp_for_obj_ptr_proj: bool = True
    # The video predictor stores memory features in bfloat16 (`_run_single_frame_inference`).
    memory_storage_dtype: str = "bfloat16"
    # DEVIATION(sam2): `fill_hole_area=8` needs the sam2 CUDA extension; the package skips it
    # without one (CPU), and so do we. Not implemented.
    fill_hole_area: int = 0

    @property
    def hidden_dim(self) -> int:
        return self.neck.d_model

    @property
    def mem_dim(self) -> int:
        return self.memory_encoder.out_dim

    @property
    def embedding_size(self) -> int:
        """Side of the stride-16 feature map (64 at 1024)."""
        return self.image_size // self.backbone_stride

    @property
    def storage_dtype(self):
        return jnp.dtype(self.memory_storage_dtype)

    def with_image_size(self, image_size: int | None) -> "Sam2Config":
        """A copy at another input size (must be a multiple of 32); None keeps the preset's."""
        if image_size is None:
            return self
        if image_size <= 0 or image_size % 32:
            raise ValueError(f"image_size must be a positive multiple of 32, got {image_size}")
        return dataclasses.replace(self, image_size=image_size)


def _trunk(size: str) -> HieraConfig:
    if size == "t":
        return HieraConfig()
    if size == "s":
        return HieraConfig(stages=(1, 2, 11, 2), global_att_blocks=(7, 10, 13))
    if size == "b+":
        return HieraConfig(
            embed_dim=112,
            num_heads=2,
            stages=(2, 3, 16, 3),
            global_att_blocks=(12, 16, 20),
            window_pos_embed_bkg_spatial_size=(14, 14),
        )
    if size == "l":
        return HieraConfig(
            embed_dim=144,
            num_heads=2,
            stages=(2, 6, 36, 4),
            global_att_blocks=(23, 33, 43),
            window_spec=(8, 4, 16, 8),
        )
    raise ValueError(size)


def _preset(version: str, size: str) -> Sam2Config:
    trunk = _trunk(size)
    name = f"sam2.1_hiera_{size}" if version == "2.1" else f"sam2_hiera_{size}"
    cfg = Sam2Config(
        name=name, trunk=trunk, neck=NeckConfig(backbone_channel_list=trunk.channel_list)
    )
    if version == "2.0":
        # SAM 2.0 yamls: no spatial no-object embedding, unprojected unsigned pointer tpos.
        cfg = dataclasses.replace(
            cfg,
            no_obj_embed_spatial=False,
            add_tpos_enc_to_obj_ptrs=False,
            proj_tpos_enc_in_obj_ptrs=False,
            use_signed_tpos_enc_to_obj_ptrs=False,
        )
    return cfg


PRESETS: dict[str, Sam2Config] = {
    _preset(v, s).name: _preset(v, s) for v in ("2.1", "2.0") for s in ("t", "s", "b+", "l")
}
# Long names as in the checkpoint files (sam2.1_hiera_tiny.pt, ...).
ALIASES = {
    f"{p}_hiera_{long}": f"{p}_hiera_{short}"
    for p in ("sam2.1", "sam2")
    for short, long in (("t", "tiny"), ("s", "small"), ("b+", "base_plus"), ("l", "large"))
}


def from_name(name: str, *, image_size: int | None = None, **overrides) -> Sam2Config:
    """The preset `name` (e.g. "sam2.1_hiera_t", "sam2_hiera_large", or a yaml file name).

    Raises:
        ValueError: unknown name (the message lists the known ones).
    """
    key = name.rsplit("/", 1)[-1].removesuffix(".yaml")
    key = ALIASES.get(key, key)
    if key not in PRESETS:
        known = ", ".join(sorted(PRESETS))
        raise ValueError(f"unknown SAM2 model config {name!r}; known: {known}")
    return dataclasses.replace(PRESETS[key], **overrides).with_image_size(image_size)
