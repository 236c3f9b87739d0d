"""Unit tests of the SAM2 image encoder (Hiera trunk + FPN neck): shapes, jit, names, helpers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jax_refvos.model.sam2 import config
from jax_refvos.model.sam2.config import HieraConfig, NeckConfig
from jax_refvos.model.sam2.hiera import (
    Hiera,
    bicubic_matrix,
    max_pool,
    window_partition,
    window_unpartition,
)
from jax_refvos.model.sam2.image_encoder import ImageEncoder, ImageEncoderOutput
from jax_refvos.model.sam2.position import sine_pe_2d
from jax_refvos.weights.torch_names import torch_key_map

# Trunk parameter counts of the torch `Hiera` built with each sam2.1 yaml's trunk arguments
# (sum of p.numel(), sam2 1.1.0, measured once; tests/parity checks the tiny one against torch).
TORCH_TRUNK_PARAMS = {
    "sam2.1_hiera_t": 26_849_472,
    "sam2.1_hiera_s": 33_947_328,
    "sam2.1_hiera_b+": 68_675_712,
    "sam2.1_hiera_l": 212_149_296,
}

# A miniature trunk: 64x64 images -> 16, 8, 4, 2 maps; windows 4, 2 and 3 (4x4 map padded to 6).
MICRO_TRUNK = HieraConfig(
    embed_dim=8,
    stages=(1, 1, 2, 1),
    global_att_blocks=(3,),
    window_pos_embed_bkg_spatial_size=(3, 3),
    window_spec=(4, 2, 3, 2),
)
MICRO_NECK = NeckConfig(d_model=16, backbone_channel_list=MICRO_TRUNK.channel_list)


def _abstract(cfg: config.Sam2Config) -> ImageEncoder:
    return nnx.eval_shape(lambda: ImageEncoder(cfg.trunk, cfg.neck, rngs=nnx.Rngs(0)))


def _materialize(abstract: nnx.Module, seed: int = 0) -> nnx.Module:
    """Fill an abstract module with N(0, 0.02^2) numpy values (a real init is slow on CPU)."""
    graphdef, state = nnx.split(abstract)
    rng = np.random.default_rng(seed)
    state = jax.tree.map(lambda s: (0.02 * rng.standard_normal(s.shape)).astype(s.dtype), state)
    return nnx.merge(graphdef, state)


@nnx.jit
def _encode(model: ImageEncoder, images: jax.Array) -> ImageEncoderOutput:
    return model(images)


def test_tiny_at_256_shapes_and_jit():
    cfg = config.from_name("sam2.1_hiera_t", image_size=256)
    model = _materialize(_abstract(cfg))
    images = jax.random.normal(jax.random.key(0), (2, 256, 256, 3))
    out = _encode(model, images)

    want = [(2, 64, 64, 256), (2, 32, 32, 256), (2, 16, 16, 256)]  # strides 4, 8, 16
    assert [f.shape for f in out.backbone_fpn] == want
    assert [p.shape for p in out.vision_pos_enc] == want
    assert out.vision_features.shape == (2, 16, 16, 256)
    np.testing.assert_array_equal(out.vision_features, out.backbone_fpn[-1])
    for f in out.backbone_fpn:
        assert np.isfinite(f).all() and np.std(f) > 0
    for p in out.vision_pos_enc:
        np.testing.assert_array_equal(p[1], sine_pe_2d(p.shape[1], p.shape[2], 256))

    stages = nnx.eval_shape(lambda m, x: m(x), model.trunk, images)
    assert [s.shape for s in stages] == [
        (2, 64, 64, 96),
        (2, 32, 32, 192),
        (2, 16, 16, 384),
        (2, 8, 8, 768),
    ]


def test_micro_encoder_odd_windows_in_bfloat16():
    model = _materialize(
        nnx.eval_shape(
            lambda: ImageEncoder(MICRO_TRUNK, MICRO_NECK, dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
        )
    )
    out = _encode(model, jax.random.normal(jax.random.key(1), (1, 64, 64, 3)))
    assert [f.shape for f in out.backbone_fpn] == [(1, 16, 16, 16), (1, 8, 8, 16), (1, 4, 4, 16)]
    # Every level (also the top-down fused ones) and encoding is in the compute dtype.
    assert {f.dtype for f in out.backbone_fpn + out.vision_pos_enc} == {jnp.dtype(jnp.bfloat16)}
    assert all(np.isfinite(np.asarray(f, np.float32)).all() for f in out.backbone_fpn)
    # The trunk sees the input: different images give different features.
    other = _encode(model, jnp.zeros((1, 64, 64, 3)))
    assert not np.allclose(out.vision_features, other.vision_features)


@pytest.mark.parametrize("name", sorted(TORCH_TRUNK_PARAMS))
def test_presets_build_abstractly_with_torch_param_counts(name):
    cfg = config.from_name(name)
    model = _abstract(cfg)
    count = sum(v.size for v in jax.tree.leaves(nnx.state(model.trunk, nnx.Param)))
    assert count == TORCH_TRUNK_PARAMS[name]
    assert model.trunk.channel_list == cfg.trunk.channel_list == cfg.neck.backbone_channel_list


def test_torch_names():
    cfg = config.from_name("sam2.1_hiera_t")
    keys = torch_key_map(_abstract(cfg))
    for key in [
        "trunk.patch_embed.proj.weight",
        "trunk.pos_embed",
        "trunk.pos_embed_window",
        "trunk.blocks.0.attn.qkv.weight",
        "trunk.blocks.1.proj.bias",  # the dim-changing block of stage 2
        "trunk.blocks.11.mlp.layers.1.weight",
        "trunk.blocks.11.norm2.weight",
        "neck.convs.0.conv.weight",
        "neck.convs.3.conv.bias",
    ]:
        assert key in keys, key
    assert "trunk.blocks.0.proj.weight" not in keys  # no projection without a dim change
    # pos_embed is kept NHWC; the loader converts torch's [1, C, h, w].
    assert keys["trunk.pos_embed"][0].shape == (1, 7, 7, 96)
    torch_layout = np.zeros((1, 96, 7, 7), np.float32)
    assert keys["trunk.pos_embed"][1](torch_layout).shape == (1, 7, 7, 96)


def test_feature_size_must_fit_the_window_embedding():
    model = _materialize(nnx.eval_shape(lambda: Hiera(MICRO_TRUNK, rngs=nnx.Rngs(0))))
    with pytest.raises(ValueError, match="multiple of the window"):
        model(jnp.zeros((1, 40, 40, 3)))  # 10x10 patches, window embedding 4x4


def test_bicubic_matrix():
    # Row 0 of torch F.interpolate(mode="bicubic") from 7 to 64, read off a one-hot input.
    np.testing.assert_allclose(bicubic_matrix(7, 64)[0, :2], [1.1027598, -0.10275984], atol=2e-7)
    for n, m in [(7, 64), (14, 64), (7, 80), (14, 8), (3, 3), (1, 5)]:
        mat = bicubic_matrix(n, m)
        assert mat.shape == (m, n)
        np.testing.assert_allclose(mat.sum(1), 1.0, atol=1e-6)
        np.testing.assert_allclose(mat, mat[::-1, ::-1], atol=1e-6)  # mirror symmetric
    np.testing.assert_array_equal(bicubic_matrix(5, 5), np.eye(5))


def test_window_partition_round_trip_with_padding():
    x = jax.random.normal(jax.random.key(2), (2, 16, 10, 3))
    windows, padded = window_partition(x, 7)
    assert padded == (21, 14) and windows.shape == (2 * 3 * 2, 7, 7, 3)
    # First window of the second image is its top-left corner; padding is zero.
    np.testing.assert_array_equal(windows[6], x[1, :7, :7])
    np.testing.assert_array_equal(windows[5, 2:], 0.0)
    np.testing.assert_array_equal(window_unpartition(windows, 7, padded, (16, 10)), x)


def test_max_pool_floors_odd_sizes():
    x = jnp.arange(2 * 5 * 5 * 1, dtype=jnp.float32).reshape(2, 5, 5, 1)
    y = max_pool(x, (2, 2))
    assert y.shape == (2, 2, 2, 1)
    np.testing.assert_array_equal(y[0, :, :, 0], [[6, 8], [16, 18]])
