"""Parity of PromptEncoder, TwoWayTransformer and MaskDecoder with the sam2 1.1.0 reference.

The reference is `build_sam2("sam2.1_hiera_t", image_size=256)` with random weights (+ noise on
every tensor), so the decoder has dynamic multimask-via-stability on, as `build_sam2` sets it.
All comparisons are float32 on CPU with atol = rtol = 1e-5.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sam2")

import jax.numpy as jnp  # noqa: E402
import sam2_reference as ref_lib  # noqa: E402
from flax import nnx  # noqa: E402

from jax_refvos.model.sam2.config import from_name  # noqa: E402
from jax_refvos.model.sam2.mask_decoder import MaskDecoder, stability_scores  # noqa: E402
from jax_refvos.model.sam2.prompt_encoder import PromptEncoder  # noqa: E402
from jax_refvos.weights.torch_names import load_torch_state  # noqa: E402

pytestmark = pytest.mark.parity

TOL = dict(atol=1e-5, rtol=1e-5)
B, H, D = 2, 16, 256  # image 256 -> stride-16 grid 16x16


@pytest.fixture(scope="module")
def models():
    ref = ref_lib.build_reference("sam2.1_hiera_t", image_size=256, video=False)
    cfg = from_name("sam2.1_hiera_t", image_size=256)
    # Abstract init (no random-init dispatches); load_torch_state fills every variable.
    pe = nnx.eval_shape(
        lambda: PromptEncoder(
            D, (H, H), (256, 256), cfg.mask_decoder.mask_in_chans, rngs=nnx.Rngs(0)
        )
    )
    md = nnx.eval_shape(lambda: MaskDecoder(D, cfg.mask_decoder, rngs=nnx.Rngs(1)))
    load_torch_state(pe, ref_lib.state_dict_numpy(ref, "sam_prompt_encoder."))
    load_torch_state(md, ref_lib.state_dict_numpy(ref, "sam_mask_decoder."))
    assert ref.sam_mask_decoder.dynamic_multimask_via_stability
    assert not ref.sam_mask_decoder.training
    return ref, pe, md


def _close(got, want):
    want = want if isinstance(want, np.ndarray) else ref_lib.to_numpy(want)
    assert np.asarray(got).shape == want.shape
    assert np.std(want) > 1e-3, "degenerate reference output"
    np.testing.assert_allclose(np.asarray(got), want, **TOL)


def _decoder_inputs(seed: int, num_tokens: int = 10):
    rng = np.random.default_rng(seed)
    f = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    return dict(
        img=f(B, H, H, D),
        dense=f(B, H, H, D),
        sparse=f(B, num_tokens, D),
        s0=f(B, 4 * H, 4 * H, D // 8),
        s1=f(B, 2 * H, 2 * H, D // 4),
    )


@nnx.jit(static_argnames="multimask")
def _decode(md, pe, img, sparse, dense, s0, s1, multimask):
    return md(
        img,
        pe.get_dense_pe(),
        sparse,
        dense,
        multimask_output=multimask,
        high_res_features=(s0, s1),
    )


def _run_pair(ref, pe, md, x, multimask: bool, sparse=None):
    """(ours, reference) decoder outputs for the inputs `x` (NHWC numpy)."""
    sparse = x["sparse"] if sparse is None else sparse
    t = ref_lib.nhwc_to_nchw
    with torch.no_grad():
        want = ref.sam_mask_decoder(
            t(x["img"]),
            ref.sam_prompt_encoder.get_dense_pe(),
            torch.from_numpy(np.array(sparse)),
            t(x["dense"]),
            multimask,
            False,
            [t(x["s0"]), t(x["s1"])],
        )

    got = _decode(md, pe, x["img"], sparse, x["dense"], x["s0"], x["s1"], multimask)
    return got, want


def test_prompt_encoder_matches_reference(models):
    ref, pe, _ = models
    rng = np.random.default_rng(0)
    coords = rng.uniform(0, 256, (B, 6, 2)).astype(np.float32)
    labels = np.array([[1, 0, -1, 2, 3, 1], [-1, 0, 1, 1, 3, 2]], np.int32)
    boxes = np.sort(rng.uniform(0, 256, (B, 2, 2)), axis=1).reshape(B, 4).astype(np.float32)
    masks = rng.standard_normal((B, 4 * H, 4 * H, 1)).astype(np.float32)
    t_pts = (torch.from_numpy(coords), torch.from_numpy(labels))
    cases = {
        "points (padded)": ((coords, labels), None, None, t_pts, None, None),
        "points+boxes": ((coords, labels), boxes, None, t_pts, torch.from_numpy(boxes), None),
        "boxes+masks": (None, boxes, masks, None, torch.from_numpy(boxes), masks),
        "none": (None, None, None, None, None, None),
    }
    for name, (pts, bxs, msk, t_pts_, t_bxs, t_msk) in cases.items():
        with torch.no_grad():
            t_msk = None if t_msk is None else ref_lib.nhwc_to_nchw(t_msk)
            want_sparse, want_dense = ref.sam_prompt_encoder(t_pts_, t_bxs, t_msk)
        sparse, dense = pe(pts, bxs, msk)
        assert sparse.shape == tuple(want_sparse.shape), name
        if want_sparse.shape[1]:
            _close(sparse, want_sparse)
        _close(dense, ref_lib.nchw_to_nhwc(ref_lib.to_numpy(want_dense)))
    with torch.no_grad():
        want_pe = ref_lib.nchw_to_nhwc(ref_lib.to_numpy(ref.sam_prompt_encoder.get_dense_pe()))
    _close(pe.get_dense_pe(), want_pe)
    assert pe.mask_input_size == tuple(ref.sam_prompt_encoder.mask_input_size)


def test_two_way_transformer_matches_reference(models):
    ref, pe, md = models
    x = _decoder_inputs(1, num_tokens=7)
    with torch.no_grad():
        want_q, want_k = ref.sam_mask_decoder.transformer(
            ref_lib.nhwc_to_nchw(x["img"]),
            ref.sam_prompt_encoder.get_dense_pe(),
            torch.from_numpy(x["sparse"]),
        )
    got_q, got_k = nnx.jit(lambda m, a, p, s: m(a, p, s))(
        md.transformer, x["img"], pe.get_dense_pe(), x["sparse"]
    )
    _close(got_q, want_q)
    _close(got_k, want_k)


@pytest.mark.parametrize("multimask", [True, False])
def test_mask_decoder_matches_reference(models, multimask):
    ref, pe, md = models
    x = _decoder_inputs(2)  # 10 learned-style sparse tokens, as VIRST passes
    got, want = _run_pair(ref, pe, md, x, multimask)
    names = ("masks", "iou_pred", "sam_tokens_out", "object_score_logits")
    for name, w in zip(names, want, strict=True):
        _close(getattr(got, name), w)
    assert got.masks.shape == (B, 3 if multimask else 1, 4 * H, 4 * H)
    assert got.sam_tokens_out.shape == (B, 3 if multimask else 1, D)


def test_mask_decoder_point_prompts_match_reference(models):
    """Point embeddings from our PromptEncoder (2 points + padding) followed by 7 free tokens;
    10 tokens in all, so the jitted decoder of the test above is reused."""
    ref, pe, md = models
    x = _decoder_inputs(3)
    coords = np.random.default_rng(3).uniform(0, 256, (B, 2, 2)).astype(np.float32)
    labels = np.array([[1, 0], [1, 1]], np.int32)
    points, _ = pe((coords, labels), None, None)
    sparse = np.concatenate([np.asarray(points), x["sparse"][:, 3:]], axis=1)
    got, want = _run_pair(ref, pe, md, x, multimask=True, sparse=sparse)
    _close(got.masks, want[0])
    _close(got.iou_pred, want[1])


def test_stability_fallback_matches_reference(models):
    """Mixed batch: sample 0 keeps the single mask, sample 1 falls back to a multimask one."""
    ref, pe, md = models
    x = _decoder_inputs(2)
    t = ref_lib.nhwc_to_nchw
    dec = ref.sam_mask_decoder
    with torch.no_grad():
        all_masks, all_iou, _, _ = dec.predict_masks(
            t(x["img"]),
            ref.sam_prompt_encoder.get_dense_pe(),
            torch.from_numpy(x["sparse"]),
            t(x["dense"]),
            False,
            [t(x["s0"]), t(x["s1"])],
        )
    scores = ref_lib.to_numpy(dec._get_stability_scores(all_masks[:, :1]))[:, 0]
    np.testing.assert_allclose(stability_scores(jnp.asarray(all_masks[:, :1]), 0.05)[:, 0], scores)
    assert abs(scores[0] - scores[1]) > 1e-3, scores
    # A threshold between the two samples' scores; stable = the sample with the higher score.
    thresh = float(scores.mean())
    old = dec.dynamic_multimask_stability_thresh, md.dynamic_multimask_stability_thresh
    dec.dynamic_multimask_stability_thresh = md.dynamic_multimask_stability_thresh = thresh
    try:
        got, want = _run_pair(ref, pe, md, x, multimask=False)
    finally:
        dec.dynamic_multimask_stability_thresh, md.dynamic_multimask_stability_thresh = old
    _close(got.masks, want[0])
    _close(got.iou_pred, want[1])
    stable = int(np.argmax(scores))
    best = 1 + int(np.argmax(ref_lib.to_numpy(all_iou)[1 - stable, 1:]))
    np.testing.assert_allclose(got.masks[stable, 0], ref_lib.to_numpy(all_masks[stable, 0]), **TOL)
    np.testing.assert_allclose(
        got.masks[1 - stable, 0], ref_lib.to_numpy(all_masks[1 - stable, best]), **TOL
    )
    # With the default threshold (0.98) both random-weight masks are unstable: all fall back.
    assert (scores < 0.98).all()
