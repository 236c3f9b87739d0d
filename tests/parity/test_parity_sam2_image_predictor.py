"""`Sam2ImagePredictor` against `sam2.sam2_image_predictor.SAM2ImagePredictor` (sam2 1.1.0).

Same random weights (SAM2Base at image_size 256, CPU, float32) and the same uint8 image, which is
not square and smaller than the model input, so the antialiased bilinear resize (torchvision
`Resize` on a float tensor vs `jax.image.resize`, measured equal to 1.4e-6 after normalisation),
the prompt normalisation by the image's own width/height and the final upsampling to the image
size are all exercised. Compared: mask logits at image size (`return_logits=True`), IoU
predictions and the clamped low-res logits, for a click (3 masks), a box (1 mask), clicks + box,
and a click with the previous low-res logits as `mask_input`.

Tolerance: max |ours - ref| <= REL x max |ref| per output, REL = 5e-6 as for the image encoder
(measured: <= 1.7e-6 for logits at both resolutions, IoUs equal to 1e-7).
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sam2")

import sam2_reference  # noqa: E402

from jax_refvos.model.sam2.image_predictor import Sam2ImagePredictor  # noqa: E402
from jax_refvos.weights.sam2_torch import abstract_sam2  # noqa: E402
from jax_refvos.weights.torch_names import load_torch_state  # noqa: E402

pytestmark = [
    pytest.mark.parity,
    pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning"),
]

IMAGE_SIZE = 256
H, W = 120, 160
REL = 5e-6


@pytest.fixture(scope="module")
def predictors():
    ref_model = sam2_reference.build_reference(
        "sam2.1_hiera_t", image_size=IMAGE_SIZE, seed=0, video=False
    )
    # Imported after build_reference, which works around torchvision's CPU import problem.
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    ref = SAM2ImagePredictor(ref_model)
    # The reference hard-codes the backbone feature sizes of a 1024 input (256, 128, 64).
    ref._bb_feat_sizes = [(IMAGE_SIZE // s,) * 2 for s in (4, 8, 16)]
    ours = abstract_sam2("sam2.1_hiera_t", image_size=IMAGE_SIZE)
    load_torch_state(ours, sam2_reference.state_dict_numpy(ref_model))
    ours = Sam2ImagePredictor(ours)

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:H, :W]
    image = np.stack([xx * 1.5, yy * 2, (xx + yy) * 0.8], -1)
    image[30:80, 50:110] = rng.integers(0, 255, (50, 60, 3))  # a textured "object"
    image = image.clip(0, 255).astype(np.uint8)
    with torch.inference_mode():
        ref.set_image(image)
    ours.set_image(image)
    return ref, ours


def assert_close(name, got, want):
    got, want = np.asarray(got), np.asarray(want, np.float32)
    assert got.shape == want.shape, (name, got.shape, want.shape)
    scale = np.abs(want).max()
    err = np.abs(got - want).max()
    assert err <= REL * scale, f"{name}: max |Δ| {err:.3g} > {REL} × {scale:.3g}"


def compare(ref, ours, **prompt):
    with torch.inference_mode():
        want = ref.predict(**prompt, return_logits=True)
    got = ours.predict(**prompt, return_logits=True)
    masks, iou, low = want
    # Non-trivial: each mask has object and background pixels, the IoUs differ from each other.
    assert all((m > 0).any() and (m <= 0).any() for m in masks)
    for name, g, w in zip(("masks", "iou", "low_res"), got, want, strict=True):
        assert_close(name, g, w)
    return got, want


CLICK = {"point_coords": np.array([[80.0, 55.0]]), "point_labels": np.array([1])}
BOX = np.array([50.0, 30.0, 110.0, 80.0])


def test_click_multimask(predictors):
    ref, ours = predictors
    (masks, iou, low), _ = compare(ref, ours, **CLICK, multimask_output=True)
    assert masks.shape == (3, H, W) and iou.shape == (3,) and low.shape == (3, 64, 64)
    assert np.ptp(iou) > 0


def test_box_single_mask(predictors):
    ref, ours = predictors
    (masks, iou, low), _ = compare(ref, ours, box=BOX, multimask_output=False)
    assert masks.shape == (1, H, W) and iou.shape == (1,) and low.shape == (1, 64, 64)


def test_clicks_and_box_together(predictors):
    """The box corners go before the clicks (labels 2, 3), a negative click included."""
    ref, ours = predictors
    points = {"point_coords": np.array([[80.0, 55.0], [20, 100]]), "point_labels": [1, 0]}
    compare(ref, ours, **points, box=BOX, multimask_output=False)


def test_click_with_previous_low_res_logits(predictors):
    """The usual refinement loop: the best previous mask's logits as `mask_input`."""
    ref, ours = predictors
    with torch.inference_mode():
        _, iou, low = ref.predict(**CLICK, multimask_output=True, return_logits=True)
    mask_input = low[np.argmax(iou)][None]
    extra = {"point_coords": np.array([[80.0, 55.0], [60, 40]]), "point_labels": [1, 1]}
    (masks, _, _), (want, _, _) = compare(
        ref, ours, **extra, mask_input=mask_input, multimask_output=False
    )
    # The mask prompt matters: without it the output differs by far more than the tolerance.
    with torch.inference_mode():
        plain, _, _ = ref.predict(**extra, multimask_output=False, return_logits=True)
    assert np.abs(plain - want).max() > 100 * REL * np.abs(want).max()
    # Boolean masks are the logits thresholded at 0.
    binary, _, _ = ours.predict(
        **extra, mask_input=mask_input, multimask_output=False, return_logits=False
    )
    np.testing.assert_array_equal(binary, masks > 0)


def test_mask_input_alone(predictors):
    """No clicks or box: the prompt encoder gets only the dense mask prompt."""
    ref, ours = predictors
    mask_input = np.random.default_rng(1).standard_normal((1, 64, 64)).astype(np.float32) * 3
    compare(ref, ours, mask_input=mask_input, multimask_output=False)


def test_predict_before_set_image_raises(predictors):
    _, ours = predictors
    with pytest.raises(RuntimeError, match="set_image"):
        Sam2ImagePredictor(ours.model).predict(**CLICK)
