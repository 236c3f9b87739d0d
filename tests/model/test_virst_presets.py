"""VIRST presets: the paper's shapes (abstractly, no allocation) and the tiny CPU model."""

import jax
import pytest
from flax import nnx

from jax_refvos.model import virst, virst_presets


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
