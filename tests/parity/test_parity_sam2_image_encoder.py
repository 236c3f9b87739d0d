"""Parity of the SAM2 image encoder (Hiera + FPN neck) with `sam2` 1.1.0 (PyTorch, CPU, f32)."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sam2")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import sam2_reference  # noqa: E402
from flax import nnx  # noqa: E402

from jax_refvos.model.sam2 import config  # noqa: E402
from jax_refvos.model.sam2.image_encoder import ImageEncoder  # noqa: E402
from jax_refvos.weights.torch_names import load_torch_state  # noqa: E402

# Float32 on CPU. 12-24 pre-norm blocks of f32 matmuls and softmaxes accumulate rounding: the
# deepest outputs (stride 16, |x| up to ~8) differ from torch by up to 1.5e-5 absolute, at most
# 2e-6 of each output's largest magnitude; the sine encodings agree to 2.4e-7. The tolerance is
# therefore relative to that magnitude: 5e-6 of it (about 4e-5 absolute at the stride-16 level).
# A wrong LayerNorm eps (1e-5 instead of 1e-6) already gives 1.3e-5 of it and fails.
REL_TO_PEAK = 5e-6


def _ours(model_cfg: str, image_size: int, reference) -> ImageEncoder:
    cfg = config.from_name(model_cfg, image_size=image_size)
    # Abstract construction + load is much faster than a real random init on CPU.
    ours = nnx.eval_shape(lambda: ImageEncoder(cfg.trunk, cfg.neck, rngs=nnx.Rngs(0)))
    load_torch_state(ours, sam2_reference.state_dict_numpy(reference, "image_encoder."))
    return ours


def _check(name: str, got, want_nchw) -> None:
    want = sam2_reference.nchw_to_nhwc(sam2_reference.to_numpy(want_nchw))
    got = np.asarray(got)
    assert got.shape == want.shape, name
    assert np.std(want) > 0.1, f"{name}: reference output is trivial"
    peak = np.abs(want).max()
    np.testing.assert_allclose(got, want, rtol=0, atol=REL_TO_PEAK * peak, err_msg=name)


@pytest.mark.parity
@pytest.mark.parametrize(
    "model_cfg, image_size",
    [
        # 7x7 background pos-embed -> 64x64; stage 3 (16x16) and 4 (8x8) are padded to windows.
        ("sam2.1_hiera_t", 256),
        # 7x7 -> 80x80 (another bicubic matrix); stage 3 is 20x20 in windows of 14.
        ("sam2.1_hiera_t", 320),
        # b+: 2 heads, 14x14 background embedding -> 32x32, 2-block first stage.
        pytest.param("sam2.1_hiera_b+", 128, marks=pytest.mark.slow),
    ],
)
def test_image_encoder_matches_reference(model_cfg, image_size):
    reference = sam2_reference.build_reference(model_cfg, image_size=image_size, video=False)
    ours = _ours(model_cfg, image_size, reference)
    trunk_params = sum(p.numel() for p in reference.image_encoder.trunk.parameters())
    assert trunk_params == sum(v.size for v in jax.tree.leaves(nnx.state(ours.trunk, nnx.Param)))
    images = np.random.default_rng(0).standard_normal((2, image_size, image_size, 3))
    images = images.astype(np.float32)

    with torch.no_grad():
        want = reference.image_encoder(sam2_reference.nhwc_to_nchw(images))
    got = nnx.jit(lambda m, x: m(x))(ours, jnp.asarray(images))
    jax.block_until_ready(got)

    assert len(got.backbone_fpn) == len(want["backbone_fpn"]) == 3
    for level, (g, w) in enumerate(zip(got.backbone_fpn, want["backbone_fpn"], strict=True)):
        _check(f"backbone_fpn[{level}]", g, w)
    for level, (g, w) in enumerate(zip(got.vision_pos_enc, want["vision_pos_enc"], strict=True)):
        _check(f"vision_pos_enc[{level}]", g, w)
    _check("vision_features", got.vision_features, want["vision_features"])
