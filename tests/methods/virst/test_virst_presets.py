"""VIRST presets: the paper's shapes (abstractly, no allocation) and the tiny CPU model."""

import jax
import pytest
from flax import nnx

from jax_refvos.methods.virst import model as virst
from jax_refvos.methods.virst import presets as virst_presets


def _count(cfg) -> int:
    model = nnx.eval_shape(lambda: virst.Virst(cfg, rngs=nnx.Rngs(0)))
    return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


def test_7b_has_the_paper_shapes():
    cfg = virst_presets.virst_7b()
    assert (cfg.umt.embed_dim, cfg.umt.depth, cfg.umt.img_size) == (1024, 23, 448)
    assert (cfg.lm.hidden_size, cfg.lm.num_hidden_layers, cfg.lm.vocab_size) == (3584, 28, 151647)
    assert cfg.sam2.trunk.stages == (2, 6, 36, 4) and cfg.sam2.image_size == 1024
    assert cfg.isf.grid_hw == cfg.segprompter.grid_hw == 8 and cfg.segprompter.in_dim == 3584
    assert cfg.sam2.max_cond_frames_in_attn == 3 and cfg.sam2.num_maskmem == 7


@pytest.mark.slow  # abstract construction of 8 B parameters (~1 min)
def test_7b_parameter_count():
    n = _count(virst_presets.virst_7b())
    # UMT-L (23 blocks) ~0.29 B + Qwen2-7B with untied 151647-row head ~7.6 B + SAM2.1-L ~0.22 B
    assert 7.9e9 < n < 8.4e9, n


def test_tiny_sizes_and_checks():
    cfg = virst_presets.virst_tiny(vocab_size=694, seg_token_id=693)
    assert cfg.sam2.image_size == 256 and cfg.isf.grid_hw == 2 and cfg.umt.img_size == 128
    assert cfg.tome.llm_dim == cfg.lm.hidden_size == 64
    assert _count(cfg) < 20e6
    with pytest.raises(ValueError, match="multiple of 128"):
        virst_presets.virst_tiny(vocab_size=694, seg_token_id=693, image_size=192)


def test_tiny_sam_width_sets_every_sam2_and_fusion_width():
    cfg = virst_presets.virst_tiny(vocab_size=694, seg_token_id=693, sam_width=64)
    s = cfg.sam2
    assert s.hidden_dim == s.memory_attention.d_model == s.memory_encoder.in_dim == 64
    assert s.mem_dim == s.memory_attention.mem_dim == 16
    assert cfg.isf.vision_dim == cfg.isf.token_dim == 64
    assert cfg.segprompter.vision_dim == cfg.segprompter.token_dim == 64
    assert cfg.segprompter.ffn_dim == 256
    assert _count(cfg) < _count(virst_presets.virst_tiny(vocab_size=694, seg_token_id=693)) / 2
    # the default keeps SAM2.1's widths
    base = virst_presets.virst_tiny(vocab_size=694, seg_token_id=693).sam2
    assert base.hidden_dim == 256 and base.mem_dim == 64
    assert base.mask_decoder.transformer_mlp_dim == 2048


def test_tiny_fusion_grid_keeps_virst_8x8_grid_at_small_sizes():
    for size, steps in ((128, 0), (256, 1), (1024, 3)):
        cfg = virst_presets.virst_tiny(
            vocab_size=694, seg_token_id=693, image_size=size, fusion_grid=8, sam_width=64
        )
        assert cfg.isf.grid_hw == cfg.segprompter.grid_hw == 8
        assert cfg.isf.down_steps == cfg.segprompter.down_steps == steps
    with pytest.raises(ValueError, match="power of two"):
        virst_presets.virst_tiny(vocab_size=694, seg_token_id=693, image_size=128, fusion_grid=3)
    cfg = virst_presets.virst_tiny(
        vocab_size=694, seg_token_id=693, image_size=128, fusion_grid=8, sam_width=64
    )
    model = virst.Virst(cfg, rngs=nnx.Rngs(0))
    feats = jax.random.normal(jax.random.key(0), (1, 3, 8, 8, 64))
    mem = model.seg_prompter.memory(feats)  # one stride-1 conv: the 8 x 8 map is the grid
    assert mem.shape == (1, 3, 64, 64)
    assert model.initial_seg_fusion_module.vision_tokens(feats).shape == (1, 3, 64, 64)
