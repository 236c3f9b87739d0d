"""Unit tests (no torch) of the SAM2 prompt encoder, two-way transformer and mask decoder."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jax_refvos.model.sam2.config import MaskDecoderConfig
from jax_refvos.model.sam2.mask_decoder import (
    ConvTranspose2x2,
    MaskDecoder,
    dynamic_multimask_via_stability,
    stability_scores,
)
from jax_refvos.model.sam2.prompt_encoder import PromptEncoder
from jax_refvos.weights.torch_names import export_torch_state

# Small, distinct dims: d=32 (8 heads of 2 after downsampling), b=3, grid 5x7.
D, B, H, W = 32, 3, 5, 7
CFG = MaskDecoderConfig(transformer_mlp_dim=48, iou_head_hidden_dim=24)


# Jitted construction and calls: eager op-by-op dispatch is many times slower on CPU.
@pytest.fixture(scope="module")
def decoder():
    return nnx.jit(lambda: MaskDecoder(D, CFG, rngs=nnx.Rngs(0)))()


@pytest.fixture(scope="module")
def prompt_encoder():
    return nnx.jit(lambda: PromptEncoder(D, (H, W), (16 * H, 16 * W), 16, rngs=nnx.Rngs(1)))()


@nnx.jit(static_argnames=("multimask_output", "repeat_image", "training"))
def _decode(model, x, **static):
    return model(**x, **static)


def _inputs(b=B, p=10, seed=0):
    k = iter(jax.random.split(jax.random.key(seed), 6))
    n = lambda *s: jax.random.normal(next(k), s)  # noqa: E731
    return dict(
        image_embeddings=n(b, H, W, D),
        image_pe=n(1, H, W, D),
        sparse_prompt_embeddings=n(b, p, D),
        dense_prompt_embeddings=n(b, H, W, D),
        high_res_features=(n(b, 4 * H, 4 * W, D // 8), n(b, 2 * H, 2 * W, D // 4)),
    )


# 10 learned VIRST prompt tokens, or no prompt token at all.
@pytest.mark.parametrize(("p", "multimask"), [(10, True), (10, False), (0, True)])
def test_decoder_shapes(decoder, multimask, p):
    out = _decode(decoder, _inputs(p=p), multimask_output=multimask)
    q = 3 if multimask else 1
    assert out.masks.shape == (B, q, 4 * H, 4 * W)
    assert out.iou_pred.shape == (B, q)
    assert out.sam_tokens_out.shape == (B, q, D)  # use_multimask_token_for_obj_ptr=True
    assert out.object_score_logits.shape == (B, 1)
    assert np.isfinite(np.asarray(out.masks)).all()
    assert np.asarray(out.masks).std() > 0


def test_decoder_as_pure_jitted_function(decoder):
    """The split/merge form a train step uses: params in, outputs out, under jax.jit."""
    graphdef, state = nnx.split(decoder)

    @jax.jit
    def apply(state, x):
        return nnx.merge(graphdef, state)(**x, multimask_output=True)

    x = _inputs()
    got = apply(state, x)
    want = _decode(decoder, x, multimask_output=True)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)


def test_repeat_image_equals_tiled_image(decoder):
    x = _inputs()
    tiled = _decode(decoder, x, multimask_output=True)
    one = dict(x, image_embeddings=x["image_embeddings"][:1])
    # All prompt sets on image 0 <=> the image tiled over the batch.
    tiled_x = dict(x, image_embeddings=jnp.repeat(x["image_embeddings"][:1], B, axis=0))
    want = _decode(decoder, tiled_x, multimask_output=True)
    got = _decode(decoder, one, multimask_output=True, repeat_image=True)
    np.testing.assert_allclose(got.masks, want.masks, atol=1e-5, rtol=1e-5)
    assert not np.allclose(tiled.masks, want.masks)


def test_training_skips_stability_fallback(decoder):
    """training=True (or the flag off) returns mask token 0 as is; eval may pick another."""
    x = _inputs()
    multi = _decode(decoder, x, multimask_output=True)  # masks 1..3
    train = _decode(decoder, x, multimask_output=False, training=True)
    evald = _decode(decoder, x, multimask_output=False)
    # Random weights give unstable masks (|logits| small), so eval falls back to the best of
    # masks 1..3 by predicted IoU.
    best = np.argmax(np.asarray(multi.iou_pred), axis=1)
    for i in range(B):
        np.testing.assert_allclose(evald.masks[i, 0], multi.masks[i, best[i]], atol=1e-6)
        np.testing.assert_allclose(evald.iou_pred[i, 0], multi.iou_pred[i, best[i]], atol=1e-6)
    assert not np.allclose(train.masks, evald.masks)
    # The object-pointer token is token 0 in single-mask mode whatever the fallback did.
    np.testing.assert_allclose(train.sam_tokens_out, evald.sam_tokens_out)


def test_stability_scores_hand_values():
    logits = jnp.asarray(
        [
            [[0.1, 0.0], [-0.1, 1.0]],  # > +0.05: 2; > -0.05: 3
            [[-1.0, -2.0], [-3.0, -0.06]],  # nothing above -0.05: defined as 1
            [[0.06, 5.0], [0.07, 1.0]],  # all confidently on
        ]
    )[None]
    np.testing.assert_allclose(stability_scores(logits, 0.05), [[2 / 3, 1.0, 1.0]], rtol=1e-6)


def test_dynamic_multimask_fallback_picks_best_multimask():
    h = w = 4
    stable = jnp.full((h, w), 3.0).at[0].set(-3.0)  # no logit near 0: stability 1
    unstable = jnp.full((h, w), 0.01).at[0].set(0.2)  # most logits within ±delta: 4/16
    multi = jnp.stack([jnp.full((h, w), v) for v in (-1.0, 2.0, -2.0)])  # masks 1..3
    all_masks = jnp.stack(
        [jnp.concatenate([stable[None], multi]), jnp.concatenate([unstable[None], multi])]
    )
    ious = jnp.asarray([[0.1, 0.2, 0.9, 0.3], [0.1, 0.2, 0.3, 0.95]])
    masks, iou = jax.jit(dynamic_multimask_via_stability, static_argnums=(2, 3))(
        all_masks, ious, 0.05, 0.98
    )
    assert masks.shape == (2, 1, h, w) and iou.shape == (2, 1)
    np.testing.assert_array_equal(masks[0, 0], stable)  # stable: keep token 0
    np.testing.assert_array_equal(masks[1, 0], multi[2])  # unstable: best IoU is token 3
    np.testing.assert_allclose(iou, [[0.1], [0.95]])


def test_conv_transpose_2x2_writes_patches():
    conv = ConvTranspose2x2(3, 2, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(1), (1, 2, 3, 3))
    y = conv(x)
    assert y.shape == (1, 4, 6, 2)
    wgt, bias = np.asarray(conv.weight[...]), np.asarray(conv.bias[...])
    for i, j, p, q in [(0, 0, 0, 0), (1, 2, 1, 0), (0, 1, 1, 1), (1, 0, 0, 1)]:
        want = np.asarray(x[0, i, j]) @ wgt[:, :, p, q] + bias
        np.testing.assert_allclose(y[0, 2 * i + p, 2 * j + q], want, atol=1e-6)


def test_decoder_without_high_res_features():
    cfg = dataclasses.replace(
        CFG, use_high_res_features=False, pred_obj_scores=False, transformer_depth=1
    )
    dec = nnx.jit(lambda: MaskDecoder(D, cfg, rngs=nnx.Rngs(2)))()
    x = _inputs()
    x["high_res_features"] = None
    out = _decode(dec, x, multimask_output=True)
    assert out.masks.shape == (B, 3, 4 * H, 4 * W)
    np.testing.assert_array_equal(out.object_score_logits, np.full((B, 1), 10.0))


def test_decoder_requires_high_res_features_when_configured(decoder):
    x = dict(_inputs(), high_res_features=None)
    with pytest.raises(ValueError, match="high_res_features"):
        _decode(decoder, x, multimask_output=True)


def test_torch_key_names(decoder, prompt_encoder):
    keys = set(export_torch_state(decoder))
    for k in [
        "iou_token.weight",
        "mask_tokens.weight",
        "obj_score_token.weight",
        "output_upscaling.0.weight",
        "output_upscaling.1.bias",
        "output_upscaling.3.bias",
        "conv_s0.weight",
        "output_hypernetworks_mlps.3.layers.2.weight",
        "pred_obj_score_head.layers.2.bias",
        "transformer.layers.1.mlp.layers.1.weight",
        "transformer.layers.0.cross_attn_image_to_token.out_proj.bias",
        "transformer.norm_final_attn.weight",
    ]:
        assert k in keys, k
    assert export_torch_state(decoder)["output_upscaling.0.weight"].shape == (D, D // 4, 2, 2)
    pe_keys = set(export_torch_state(prompt_encoder))
    assert {
        "pe_layer.positional_encoding_gaussian_matrix",
        "point_embeddings.3.weight",
        "not_a_point_embed.weight",
        "mask_downscaling.0.weight",
        "mask_downscaling.4.bias",
        "mask_downscaling.6.weight",
        "no_mask_embed.weight",
    } <= pe_keys


def test_prompt_encoder_shapes_and_labels(prompt_encoder):
    pe = prompt_encoder
    coords = jax.random.uniform(jax.random.key(0), (B, 4, 2), maxval=80.0)
    coords = coords.at[2, 1].set(coords[1, 1])
    labels = jnp.asarray([[1, 0, -1, 2], [3, 1, 1, -1], [0, 0, 0, 0]], jnp.int32)
    boxes = jnp.asarray([[1.0, 2.0, 30.0, 40.0]] * B)
    sparse, dense = pe((coords, labels), None, None)
    assert sparse.shape == (B, 5, D)  # a padding point is appended without boxes
    assert dense.shape == (B, H, W, D)
    not_a_point = np.asarray(pe.not_a_point_embed.embedding[...][0])
    np.testing.assert_array_equal(sparse[0, 2], not_a_point)  # label -1: no PE at all
    np.testing.assert_array_equal(sparse[:, 4], np.broadcast_to(not_a_point, (B, D)))
    np.testing.assert_array_equal(
        dense, jnp.broadcast_to(pe.no_mask_embed.embedding[...][0], dense.shape)
    )
    # Label 1 vs 0 at the same coordinates differs by point_embeddings[1] - point_embeddings[0].
    emb = [np.asarray(e.embedding[...][0]) for e in pe.point_embeddings]
    np.testing.assert_allclose(sparse[1, 1] - sparse[2, 1], emb[1] - emb[0], atol=1e-5)

    sparse, _ = pe((coords, labels), boxes, None)
    assert sparse.shape == (B, 6, D)  # no padding point, 2 box corners
    sparse, dense = pe(None, boxes, jnp.zeros((B, 4 * H, 4 * W, 1)))
    assert sparse.shape == (B, 2, D) and dense.shape == (B, H, W, D)
    sparse, dense = pe(None, None, None)
    assert sparse.shape == (1, 0, D) and dense.shape == (1, H, W, D)
    assert pe.mask_input_size == (4 * H, 4 * W)
    assert pe.get_dense_pe().shape == (1, H, W, D)
