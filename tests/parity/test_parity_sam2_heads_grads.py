"""Gradients of SAM 2's prompt encoder + mask decoder + pointer heads against torch autograd.

The forward parity tests (`test_parity_sam2_prompt_mask_decoder.py`, `..._video.py`) check what
the heads compute; training also needs what they differentiate to. Same random weights
(`sam2.1_hiera_t` at 256 px, eval mode, float32), the same backbone features and clicks into
`SAM2Base._forward_sam_heads` and our `Sam2Model.forward_sam_heads` (three masks, the best one
kept), a fixed random linear function of every output (best low-res mask, IoUs, object pointer,
object score), then the gradient of every parameter torch reaches, brought into our layout by
the same `load_torch_state` that loads the weights (a layout change maps gradients the way it
maps weights), and the gradient of the input features.

Tolerance: max |ours - ref| <= 1e-4 x max |ref| per tensor, plus 1e-6 x the largest gradient
(for gradients that are zero in exact arithmetic).
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sam2")

import jax.numpy as jnp  # noqa: E402
import sam2_reference  # noqa: E402
from flax import nnx  # noqa: E402

from jax_refvos.weights.sam2_torch import abstract_sam2  # noqa: E402
from jax_refvos.weights.torch_names import load_torch_state  # noqa: E402

pytestmark = [
    pytest.mark.parity,
    pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning"),
]

SIZE, B, REL, ATOL = 256, 2, 1e-4, 1e-6
# Folded into our image path (FPN laterals + conv_s0/s1): gradients do not map one to one, and
# the heads do not reach them anyway.
SKIP = ("image_encoder.", "sam_mask_decoder.conv_s0.", "sam_mask_decoder.conv_s1.")


def test_head_gradients_match_torch():
    ref = sam2_reference.build_reference("sam2.1_hiera_t", image_size=SIZE, seed=0, video=False)
    # Random weights score "no object" (logits about -0.08), and then the masks are the constant
    # NO_OBJ_SCORE with no gradient: shift the score head's last bias so that the object shows.
    head = [n for n, _ in ref.named_parameters() if "pred_obj_score_head" in n and "bias" in n]
    with torch.no_grad():
        ref.get_parameter(sorted(head)[-1]).add_(1.0)
    weights = sam2_reference.state_dict_numpy(ref)
    ours = abstract_sam2("sam2.1_hiera_t", image_size=SIZE)
    load_torch_state(ours, weights)

    rng = np.random.default_rng(0)
    h = SIZE // 16
    pix = rng.normal(size=(B, h, h, 256)).astype(np.float32)
    s0 = rng.normal(size=(B, 4 * h, 4 * h, 32)).astype(np.float32)
    s1 = rng.normal(size=(B, 2 * h, 2 * h, 64)).astype(np.float32)
    coords = rng.uniform(0, SIZE, (B, 2, 2)).astype(np.float32)
    labels = np.array([[1, 0], [1, 1]], np.int32)
    r_mask = rng.normal(size=(B, 1, 4 * h, 4 * h)).astype(np.float32)
    r_iou = rng.normal(size=(B, 3)).astype(np.float32)
    r_ptr = rng.normal(size=(B, 256)).astype(np.float32)
    r_obj = rng.normal(size=(B, 1)).astype(np.float32)

    # torch
    t = {k: torch.tensor(v) for k, v in dict(pix=pix, s0=s0, s1=s1).items()}
    for v in t.values():
        v.requires_grad_(True)
    nchw = {k: v.permute(0, 3, 1, 2) for k, v in t.items()}
    out = ref._forward_sam_heads(
        nchw["pix"],
        point_inputs={"point_coords": torch.tensor(coords), "point_labels": torch.tensor(labels)},
        high_res_features=[nchw["s0"], nchw["s1"]],
        multimask_output=True,
    )
    _, _, ious, low, _, ptr, obj = out
    assert (obj > 0).all(), "every row must show its object, or the masks carry no gradient"
    loss = (
        (low * torch.tensor(r_mask)).sum()
        + (ious * torch.tensor(r_iou)).sum()
        + (ptr * torch.tensor(r_ptr)).sum()
        + (obj * torch.tensor(r_obj)).sum()
    )
    loss.backward()
    grads = {n: p.grad.numpy() for n, p in ref.named_parameters() if p.grad is not None}
    reached = [n for n in grads if not n.startswith(SKIP)]
    assert any(n.startswith("sam_mask_decoder.transformer.") for n in reached)
    assert any(n.startswith("sam_prompt_encoder.") for n in reached)

    # ours
    def f(model, pix, s0, s1):
        o = model.forward_sam_heads(
            pix, (s0, s1), point_coords=coords, point_labels=labels, multimask_output=True
        )
        return (
            jnp.sum(o.low_res_masks * r_mask)
            + jnp.sum(o.ious * r_iou)
            + jnp.sum(o.obj_ptr * r_ptr)
            + jnp.sum(o.object_score_logits * r_obj)
        )

    value, (g_model, g_pix, g_s0, g_s1) = nnx.value_and_grad(f, argnums=(0, 1, 2, 3))(
        ours, jnp.asarray(pix), jnp.asarray(s0), jnp.asarray(s1)
    )
    np.testing.assert_allclose(float(value), loss.item(), rtol=1e-4)

    # torch's gradients in our layout: load them as if they were weights
    as_weights = {k: grads.get(k, np.zeros_like(v)) for k, v in weights.items()}
    want_model = abstract_sam2("sam2.1_hiera_t", image_size=SIZE)
    load_torch_state(want_model, as_weights)
    want = dict(nnx.to_flat_state(nnx.state(want_model, nnx.Param)))
    got = dict(nnx.to_flat_state(g_model))
    pairs = {
        ".".join(str(p) for p in path): (np.asarray(got[path][...]), np.asarray(var[...]))
        for path, var in want.items()
    }
    pairs = {k: v for k, v in pairs.items() if not k.startswith(SKIP) and np.any(v[1])}
    # Gradients that are zero in exact arithmetic (the keys' bias under softmax) come out as
    # float noise on both sides: an absolute floor relative to the largest gradient.
    floor = ATOL * max(np.abs(w).max() for _, w in pairs.values())
    compared = 0
    for name, (g, w) in pairs.items():
        err, scale = np.abs(g - w).max(), np.abs(w).max()
        assert err <= REL * scale + floor, f"{name}: max |Δ| {err:.3g} > {REL} × {scale:.3g}"
        compared += 1
    assert compared >= len(reached) // 2, (compared, len(reached))
    for name, g, w in (("pix", g_pix, t["pix"]), ("s0", g_s0, t["s0"]), ("s1", g_s1, t["s1"])):
        w = w.grad.numpy()
        err, scale = np.abs(np.asarray(g) - w).max(), np.abs(w).max()
        assert scale > 0 and err <= REL * scale, (
            f"d/d{name}: max |Δ| {err:.3g} > {REL} × {scale:.3g}"
        )
