"""VIRST model presets: `7b` (the paper's shapes) and `tiny` (trains on a laptop CPU).

- `virst_7b`: UMT-L/16 at 448 px (23 blocks), ToMe16 -> Qwen2-7B, SAM2.1-L at 1024 px with
  VIRST's builder overrides, fusion widths as released (reference/virst.md §2, §3, §5). Its
  weights come from `refvos import-weights --kind virst` (or VideoChat-Flash + SAM2.1-L).
- `virst_tiny`: every component kept, every size cut: a 2-block UMT (embed 64), a 2-layer Qwen2
  over the synthetic tokenizer's vocabulary, and a SAM2.1 with the shared fixture's tiny Hiera
  (embed 16, stages 1-1-2-1); the ST-Fusion grid follows the SAM2 size (image_size / 128) unless
  `fusion_grid` is given. The function's defaults (UMT 128 px, SAM2 256 px, LLM width 64) are
  not what `configs/virst.py:variant=tiny` trains: it passes UMT 80 px (5 x 5 patches, so a
  4-frame clip has 100 tokens, ToMe'd to 64), SAM2 128 px (stride-16 map 8 x 8, a 1 x 1 fusion
  grid) and LLM width 64 (its `model` section); a training workdir records the sizes it used.

# DEVIATION(VIRST): the fusion modules hard-code a 64 x 64 stride-16 map (an 8 x 8 grid, so
# image size 1024); the tiny preset uses image_size / 128 as the grid instead.
"""

import dataclasses

from jax_refvos.methods.virst import model as virst
from jax_refvos.methods.virst.fusion_common import InitialSegFusionConfig, SegPrompterConfig
from jax_refvos.methods.virst.sam2_config import virst_sam2_config
from jax_refvos.model.backbone.lm_config import qwen2_7b, tiny_qwen2
from jax_refvos.model.backbone.tome import Tome16Config
from jax_refvos.model.backbone.umt import UmtConfig, umt_large
from jax_refvos.model.sam2.config import HieraConfig, NeckConfig

QWEN2_7B_VOCAB_VIRST = 151647  # resized to len(tokenizer) after adding [SEG]
_FUSION_DOWNSAMPLE = 128  # SAM2 stride 16 x three stride-2 convs in the fusion modules


def _config(
    umt, lm, sam2, *, seg_token_id: int, fusion_grid: int | None = None, **overrides
) -> virst.VirstConfig:
    """The fusion modules and projector follow the towers' widths and the SAM2 size.

    `fusion_grid` None: VIRST's three stride-2 convs (grid = image_size / 128); else the grid
    side, reached with log2(stride-16 side / grid) stride-2 convs.
    """
    d = sam2.hidden_dim
    if fusion_grid is None:
        grid, steps = sam2.image_size // _FUSION_DOWNSAMPLE, 3
        if grid * _FUSION_DOWNSAMPLE != sam2.image_size:
            raise ValueError(
                f"image_size {sam2.image_size} must be a multiple of {_FUSION_DOWNSAMPLE}"
            )
    else:
        side = sam2.embedding_size
        grid, steps = fusion_grid, max(0, (side // fusion_grid).bit_length() - 1)
        if fusion_grid < 1 or grid * 2**steps != side:
            raise ValueError(f"fusion_grid {fusion_grid}: {side} / grid must be a power of two")
    return virst.VirstConfig(
        umt=umt,
        tome=Tome16Config(
            vision_dim=umt.embed_dim, llm_dim=lm.hidden_size, metric_heads=umt.num_heads
        ),
        lm=lm,
        sam2=sam2,
        isf=InitialSegFusionConfig(
            hidden_dim=lm.hidden_size, vision_dim=d, token_dim=d, grid_hw=grid, down_steps=steps
        ),
        segprompter=SegPrompterConfig(
            in_dim=lm.hidden_size,
            vision_dim=d,
            token_dim=d,
            ffn_dim=4 * d,
            grid_hw=grid,
            down_steps=steps,
        ),
        seg_token_id=seg_token_id,
        **overrides,
    )


def virst_7b(
    *, vocab_size: int = QWEN2_7B_VOCAB_VIRST, seg_token_id: int = virst.SEG_TOKEN_ID, **overrides
) -> virst.VirstConfig:
    """The released VIRST: UMT-L 448 px, Qwen2-7B, SAM2.1-L 1024 px."""
    lm = qwen2_7b(vocab_size=vocab_size)
    return _config(umt_large(), lm, virst_sam2_config(), seg_token_id=seg_token_id, **overrides)


def virst_tiny(
    *,
    vocab_size: int,
    seg_token_id: int,
    image_size: int = 256,
    vlm_size: int = 128,
    llm_width: int = 64,
    sam_width: int = 256,
    fusion_grid: int | None = None,
    **overrides,
) -> virst.VirstConfig:
    """A CPU-trainable VIRST with every component (see the module docstring).

    `vocab_size` / `seg_token_id` come from the tokenizer the data pipeline uses. `sam_width`
    is SAM2's d_model (neck, mask decoder, memory attention, memory encoder input; SAM2 and
    VIRST fix it at 256), which the ST-Fusion modules follow; memories are a quarter of it.
    `fusion_grid`: the ST-Fusion grid side (None: image_size / 128, VIRST's three stride-2
    convs; 8: VIRST's 8 x 8 grid at any size, e.g. no downsampling at 128 px).
    """
    umt = UmtConfig(img_size=vlm_size, embed_dim=64, num_heads=4, depth=2)
    lm = tiny_qwen2(
        vocab_size=vocab_size,
        hidden_size=llm_width,
        intermediate_size=2 * llm_width + 8,
        max_position_embeddings=1024,
    )
    trunk = HieraConfig(
        embed_dim=16,
        num_heads=2,
        stages=(1, 1, 2, 1),
        global_att_blocks=(3,),
        window_spec=(8, 4, 16, 8),
    )
    base = virst_sam2_config()
    sam2 = dataclasses.replace(
        base,
        name="sam2.1_hiera_tiny_virst",
        trunk=trunk,
        neck=NeckConfig(d_model=sam_width, backbone_channel_list=trunk.channel_list),
        memory_attention=dataclasses.replace(
            base.memory_attention,
            d_model=sam_width,
            mem_dim=sam_width // 4,
            num_layers=2,
            dim_feedforward=sam_width,
        ),
        memory_encoder=dataclasses.replace(
            base.memory_encoder, in_dim=sam_width, out_dim=sam_width // 4
        ),
        mask_decoder=dataclasses.replace(
            base.mask_decoder,
            transformer_mlp_dim=8 * sam_width,
            iou_head_hidden_dim=sam_width,
        ),
        image_size=image_size,
        # DEVIATION(VIRST §9.2): VIRST trains mask token 0 and evaluates the best of tokens 1-3,
        # fine for a pretrained SAM2; trained from scratch, tokens 1-3 would stay untrained, so
        # the tiny preset decodes token 0 at evaluation too.
        multimask_output_in_sam=False,
    )
    return _config(umt, lm, sam2, seg_token_id=seg_token_id, fusion_grid=fusion_grid, **overrides)
