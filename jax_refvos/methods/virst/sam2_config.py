"""The `Sam2Config` VIRST builds: a SAM2 hydra yaml + `build_sam2_virst` + VIRST's model args.

Port of `model/sam2/sam2_virst.py::build_sam2_virst` and `VirstForCausalLM.
_initialize_keyframe_config` (AIDASLab/VIRST @ 954276f) as far as they choose the SAM2 config:

- the yaml's trunk / neck / memory-attention / memory-encoder sizes and `SAM2Base` flags;
- `apply_postprocessing=True`: the stability-based multimask fallback (delta 0.05, thresh 0.98);
  it only acts on single-mask output in eval mode, VIRST decodes with multimask at eval;
- `num_maskmem = max_uncond_frames_in_mem` (7) and `max_cond_frames_in_attn` (3) set afterwards;
- unlike `build_sam2_video_predictor`, VIRST does not turn on
  `binarize_mask_from_pts_for_mem_enc` (it stays False, the `SAM2Base` default) nor
  `fill_hole_area`.

`sam2_config_from_yaml` reads the yaml (the official `sam2.1_hiera_l_virst.yaml` or the tiny
fixture's `sam2.1_hiera_tiny_virst_fixture.yaml`); `virst_sam2_config()` is the released model's
(SAM2.1 Hiera-L) without a file.
"""

import dataclasses
from pathlib import Path

from jax_refvos.errors import InputError
from jax_refvos.model.sam2.config import (
    HieraConfig,
    MaskDecoderConfig,
    MemoryAttentionConfig,
    MemoryEncoderConfig,
    NeckConfig,
    Sam2Config,
    from_name,
)

# VIRST's `ModelArguments` defaults used by the released scripts.
MAX_COND_FRAMES_IN_ATTN = 3
MAX_UNCOND_FRAMES_IN_MEM = 7

# SAM2Base flags that map one to one onto `Sam2Config` fields.
_FLAGS = (
    "num_maskmem",
    "image_size",
    "sigmoid_scale_for_mem_enc",
    "sigmoid_bias_for_mem_enc",
    "binarize_mask_from_pts_for_mem_enc",
    "use_mask_input_as_output_without_sam",
    "max_cond_frames_in_attn",
    "directly_add_no_mem_embed",
    "no_obj_embed_spatial",
    "multimask_output_in_sam",
    "multimask_min_pt_num",
    "multimask_max_pt_num",
    "multimask_output_for_tracking",
    "use_obj_ptrs_in_encoder",
    "max_obj_ptrs_in_encoder",
    "add_tpos_enc_to_obj_ptrs",
    "proj_tpos_enc_in_obj_ptrs",
    "use_signed_tpos_enc_to_obj_ptrs",
    "only_obj_ptrs_in_the_past_for_eval",
    "fixed_no_obj_ptr",
    "soft_no_obj_ptr",
    "use_mlp_for_obj_ptr_proj",
)
# SAM2Base flags that go to the mask decoder.
_DECODER_FLAGS = (
    "iou_prediction_use_sigmoid",
    "pred_obj_scores",
    "pred_obj_scores_mlp",
    "use_multimask_token_for_obj_ptr",
)
# What `build_sam2_virst(apply_postprocessing=True)` adds to `sam_mask_decoder_extra_args`.
_POSTPROCESSING = dict(
    dynamic_multimask_via_stability=True,
    dynamic_multimask_stability_delta=0.05,
    dynamic_multimask_stability_thresh=0.98,
)


def _virst_overrides(
    cfg: Sam2Config, max_cond_frames_in_attn: int, max_uncond_frames_in_mem: int
) -> Sam2Config:
    return dataclasses.replace(
        cfg,
        num_maskmem=max_uncond_frames_in_mem,
        max_cond_frames_in_attn=max_cond_frames_in_attn,
        mask_decoder=dataclasses.replace(cfg.mask_decoder, **_POSTPROCESSING),
        fill_hole_area=0,
    )


def virst_sam2_config(
    *,
    max_cond_frames_in_attn: int = MAX_COND_FRAMES_IN_ATTN,
    max_uncond_frames_in_mem: int = MAX_UNCOND_FRAMES_IN_MEM,
) -> Sam2Config:
    """The released VIRST's SAM2: `sam2.1_hiera_l_virst.yaml` (= stock SAM2.1-L) + VIRST's args."""
    cfg = dataclasses.replace(
        from_name("sam2.1_hiera_l"),
        name="sam2.1_hiera_l_virst",
        binarize_mask_from_pts_for_mem_enc=False,
    )
    return _virst_overrides(cfg, max_cond_frames_in_attn, max_uncond_frames_in_mem)


def _get(d: dict, path: str, source: str):
    node = d
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            raise InputError(f"{source}: missing `{path}` in the SAM2 yaml")
        node = node[part]
    return node


def sam2_config_from_yaml(
    path: str | Path,
    *,
    max_cond_frames_in_attn: int = MAX_COND_FRAMES_IN_ATTN,
    max_uncond_frames_in_mem: int = MAX_UNCOND_FRAMES_IN_MEM,
) -> Sam2Config:
    """`Sam2Config` of a SAM2(.1) hydra yaml as VIRST builds it (see the module docstring).

    Only the fields our port has are read; a field with another value than the port supports
    (e.g. a different attention class) is not detected. Raises `InputError` if the file lacks a
    required key.
    """
    import yaml  # a dependency of transformers; only needed here

    source = str(path)
    doc = yaml.safe_load(Path(path).read_text())
    m = _get(doc, "model", source)
    trunk = _get(m, "image_encoder.trunk", source)
    neck = _get(m, "image_encoder.neck", source)
    mattn = _get(m, "memory_attention", source)
    layer = _get(mattn, "layer", source)
    cross = _get(layer, "cross_attention", source)
    menc = _get(m, "memory_encoder", source)
    hiera_defaults = HieraConfig()
    hiera = HieraConfig(
        embed_dim=int(trunk.get("embed_dim", hiera_defaults.embed_dim)),
        num_heads=int(trunk.get("num_heads", hiera_defaults.num_heads)),
        stages=tuple(trunk.get("stages", hiera_defaults.stages)),
        global_att_blocks=tuple(trunk.get("global_att_blocks", hiera_defaults.global_att_blocks)),
        window_pos_embed_bkg_spatial_size=tuple(
            trunk.get(
                "window_pos_embed_bkg_spatial_size",
                hiera_defaults.window_pos_embed_bkg_spatial_size,
            )
        ),
        window_spec=tuple(trunk.get("window_spec", hiera_defaults.window_spec)),
    )
    channels = tuple(_get(neck, "backbone_channel_list", source))
    if channels != hiera.channel_list:
        raise InputError(
            f"{source}: FPN backbone_channel_list {list(channels)} does not match the trunk's "
            f"stage widths {list(hiera.channel_list)}"
        )
    neck_cfg = NeckConfig(
        d_model=int(_get(neck, "d_model", source)),
        backbone_channel_list=channels,
        fpn_top_down_levels=tuple(neck.get("fpn_top_down_levels", (2, 3))),
        fpn_interp_model=neck.get("fpn_interp_model", "nearest"),
        scalp=int(_get(m, "image_encoder", source).get("scalp", 1)),
    )
    mattn_cfg = MemoryAttentionConfig(
        d_model=int(_get(mattn, "d_model", source)),
        mem_dim=int(cross.get("kv_in_dim", 64)),
        num_layers=int(_get(mattn, "num_layers", source)),
        num_heads=int(cross.get("num_heads", 1)),
        dim_feedforward=int(_get(layer, "dim_feedforward", source)),
        dropout=float(layer.get("dropout", 0.1)),
        rope_theta=float(cross.get("rope_theta", 10000.0)),
        pos_enc_at_input=bool(mattn.get("pos_enc_at_input", True)),
        pos_enc_at_attn=bool(layer.get("pos_enc_at_attn", False)),
        pos_enc_at_cross_attn_keys=bool(layer.get("pos_enc_at_cross_attn_keys", True)),
        pos_enc_at_cross_attn_queries=bool(layer.get("pos_enc_at_cross_attn_queries", False)),
    )
    fuser = _get(menc, "fuser", source)
    menc_cfg = MemoryEncoderConfig(
        out_dim=int(_get(menc, "out_dim", source)),
        fuser_num_layers=int(fuser.get("num_layers", 2)),
        fuser_kernel_size=int(fuser.get("layer", {}).get("kernel_size", 7)),
        fuser_padding=int(fuser.get("layer", {}).get("padding", 3)),
        layer_scale_init_value=float(fuser.get("layer", {}).get("layer_scale_init_value", 1e-6)),
    )
    # SAM2Base defaults for flags a yaml may leave out (e.g. binarize_mask_from_pts_for_mem_enc).
    base = dict(
        num_maskmem=7,
        image_size=512,
        sigmoid_scale_for_mem_enc=1.0,
        sigmoid_bias_for_mem_enc=0.0,
        binarize_mask_from_pts_for_mem_enc=False,
        use_mask_input_as_output_without_sam=False,
        max_cond_frames_in_attn=-1,
        directly_add_no_mem_embed=False,
        no_obj_embed_spatial=False,
        multimask_output_in_sam=False,
        multimask_min_pt_num=1,
        multimask_max_pt_num=1,
        multimask_output_for_tracking=False,
        use_obj_ptrs_in_encoder=False,
        max_obj_ptrs_in_encoder=16,
        add_tpos_enc_to_obj_ptrs=True,
        proj_tpos_enc_in_obj_ptrs=False,
        use_signed_tpos_enc_to_obj_ptrs=False,
        only_obj_ptrs_in_the_past_for_eval=False,
        fixed_no_obj_ptr=False,
        soft_no_obj_ptr=False,
        use_mlp_for_obj_ptr_proj=False,
    )
    flags = {k: type(getattr(Sam2Config(), k))(m.get(k, base[k])) for k in _FLAGS}
    dec_base = dict(
        iou_prediction_use_sigmoid=False,
        pred_obj_scores=False,
        pred_obj_scores_mlp=False,
        use_multimask_token_for_obj_ptr=False,
    )
    dec_flags = {k: bool(m.get(k, dec_base[k])) for k in _DECODER_FLAGS}
    use_high_res = bool(m.get("use_high_res_features_in_sam", False))
    cfg = Sam2Config(
        name=Path(path).name.removesuffix(".yaml"),
        trunk=hiera,
        neck=neck_cfg,
        memory_attention=mattn_cfg,
        memory_encoder=menc_cfg,
        mask_decoder=MaskDecoderConfig(use_high_res_features=use_high_res, **dec_flags),
        **flags,
    )
    return _virst_overrides(cfg, max_cond_frames_in_attn, max_uncond_frames_in_mem)
