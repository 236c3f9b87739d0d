"""UMT vision tower + ToMe16 projector against the official VIRST code's activations.

The fixture (`shared/fixtures/virst_tiny_dev`, see its README) ran the official PyTorch code in
float32 on a tiny random-weight model: UMT width 64, 4 heads, 2 blocks, 448 px, 12 frames = 3
clips of 4; ToMe 3136 -> 64 tokens per clip; MLP 64 -> 32 -> 32. Tolerances are relative,
max|Δ| / max|ref|, all float32 (measured: tower 6.1e-7, ToMe 3.3e-7, projector 4.3e-7,
position tables 2.4e-7 absolute).
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from shared_paths import VIRST_FIXTURE

from jax_refvos.errors import InputError
from jax_refvos.model.backbone import tome, umt
from jax_refvos.weights import videochat_flash
from jax_refvos.weights.torch_names import WeightMismatchError

FIXTURE = VIRST_FIXTURE
needs_fixture = pytest.mark.skipif(not FIXTURE.exists(), reason="shared VIRST fixture not present")

REL_TOL = 1e-5
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)


def rel_err(got, want) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.abs(got - want).max() / np.abs(want).max())


@pytest.fixture(scope="module")
def acts():
    return np.load(FIXTURE / "activations.npz")


@pytest.fixture(scope="module")
def state():
    from safetensors import safe_open

    with safe_open(str(FIXTURE / "virst_tiny.safetensors"), "numpy") as f:
        # float16 values are exact; load_torch_state casts them to float32.
        return {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is no dict)


@pytest.fixture(scope="module")
def umt_cfg():
    return umt.UmtConfig.from_json(json.loads((FIXTURE / "config_umt_tiny.json").read_text()))


@pytest.fixture(scope="module")
def models(state, umt_cfg):
    return videochat_flash.load_vision_tower_and_projector(state, umt_cfg, source="fixture")


@pytest.fixture(scope="module")
def images_clip(acts):
    """The VLM frames float32[12, 448, 448, 3], rebuilt with the fixture's recipe (bf16 values).

    PIL bicubic 448 on uint8, (x * (1/255) in f64) -> f32, ImageNet normalise in f32, bf16
    (VIRST's collate_fn). Checked against the fixture's per-frame sums and crop.
    """
    from PIL import Image

    frames = []
    for rgb in acts["in_frames_rgb"]:
        x = np.asarray(Image.fromarray(rgb).resize((448, 448), Image.Resampling.BICUBIC))
        x = (x.astype(np.float64) * (1 / 255)).astype(np.float32)
        x = (x - IMAGENET_MEAN) / IMAGENET_STD
        frames.append(x.astype(jnp.bfloat16).astype(np.float32))
    frames = np.stack(frames)
    np.testing.assert_array_equal(
        frames[0, 192:256, 192:256].transpose(2, 0, 1),
        acts["in_images_clip_f0_crop_fp16"].astype(np.float32),
    )
    sums = frames.astype(np.float64).sum((1, 2, 3))
    np.testing.assert_allclose(sums, acts["in_images_clip_sum_per_frame"], rtol=0, atol=1e-6)
    return frames


def jitted(module, method="__call__", **kwargs):
    """`module.method(x, **kwargs)` as a jitted function of x (eager runs are slow on CPU)."""
    graphdef, params = nnx.split(module)
    run = jax.jit(lambda p, x: getattr(nnx.merge(graphdef, p), method)(x, **kwargs))
    return lambda x: np.asarray(run(params, jnp.asarray(x)))


@pytest.fixture(scope="module")
def tower_out(models, images_clip):
    return jitted(models[0])(images_clip[None])


def test_config_presets_and_json():
    large = umt.umt_large()
    assert (large.depth, large.embed_dim, large.num_heads, large.grid) == (23, 1024, 16, 28)
    assert umt.UmtConfig.from_json({"encoder_depth": 24, "mm_vision_select_layer": -2}) == large
    if FIXTURE.exists():
        d = json.loads((FIXTURE / "config_umt_tiny.json").read_text())
        assert umt.UmtConfig.from_json(d) == umt.umt_tiny()
    with pytest.raises(InputError, match="unknown keys"):
        umt.UmtConfig.from_json({"embed_dims": 64})
    with pytest.raises(InputError, match="blocks_run 3"):
        umt.UmtConfig.from_json({"encoder_depth": 3, "blocks_run": 3})


def test_merge_schedule():
    assert tome.merge_schedule(3136, 64) == (1568, 784, 392, 196, 98, 34)
    assert tome.merge_schedule(784, 64) == (392, 196, 98, 34)
    assert tome.merge_schedule(100, 64) == (36,)
    with pytest.raises(ValueError):
        tome.merge_schedule(64, 64)


def test_tome_merge_hand_example():
    """Order [kept A by descending score] ++ [B in order]; size-weighted average into dst."""
    a = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])  # A = tokens 0, 2, 4
    b = np.array([[1.0, 0.01], [0.5, 1.0], [-1.0, -1.0]])  # B = tokens 1, 3, 5
    x = np.stack([a, b], 1).reshape(1, 6, 2).astype(np.float32)
    # Best matches: A0 -> B0 (0.99995), A1 -> B1 (0.894), A2 -> B2 (0.707).
    size = np.array([3, 1, 1, 1, 1, 1], np.float32).reshape(1, 6, 1)
    out, new_size, m = tome.tome_merge(jnp.asarray(x), jnp.asarray(size), 1, heads=1)
    np.testing.assert_array_equal(m.src_idx, [[0]])
    np.testing.assert_array_equal(m.dst_idx, [[0]])
    np.testing.assert_array_equal(m.unm_idx, [[1, 2]])
    want = np.stack([a[1], a[2], (3 * a[0] + b[0]) / 4, b[1], b[2]])
    np.testing.assert_allclose(out[0], want, rtol=0, atol=1e-7)
    np.testing.assert_array_equal(new_size[0, :, 0], [1, 1, 4, 1, 1])
    # Metric = mean over the heads groups: with heads=2 the metric is 1-d (sign only).
    _, _, m2 = tome.tome_merge(jnp.asarray(x), None, 2, heads=2)
    np.testing.assert_array_equal(np.sort(m2.src_idx[0]), [0, 1])


@needs_fixture
def test_position_tables_match_shipped(acts):
    """Our sinusoid + torch-bicubic tables vs the official ones (atol 1e-6; measured 2.4e-7)."""
    video = umt.sinusoid_pos_table(4, 28, 64)
    image = umt.sinusoid_pos_table(1, 28, 64)
    np.testing.assert_allclose(video, acts["umt_pos_embed_video"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(image, acts["umt_pos_embed_image"], rtol=0, atol=1e-6)


def check_tome_indices(matches, acts):
    """Every step's indices equal the reference's.

    Step 5 (34 of 49 A tokens merged) must match exactly, order included. In steps 0-4 every A
    token is merged, so the reference's `src_idx` order is a sort among exact and 1-ulp ties
    (manifest `min_sorted_gap` 0 .. 6e-8) that does not affect the output; there the A -> B
    assignment must match exactly and the reference's order must be descending under our scores
    to within 1e-6.
    """
    assert len(matches) == 6
    for s, m in enumerate(matches):
        ref = {n: acts[f"eval_tome_step{s}_{n}_idx"] for n in ("unm", "src", "dst")}
        src, dst, unm = (np.asarray(v) for v in (m.src_idx, m.dst_idx, m.unm_idx))
        np.testing.assert_array_equal(unm, ref["unm"], err_msg=f"step {s} unm_idx")
        if s == 5:
            np.testing.assert_array_equal(src, ref["src"], err_msg="step 5 src_idx")
            np.testing.assert_array_equal(dst, ref["dst"], err_msg="step 5 dst_idx")
            continue
        ours_map = np.take_along_axis(dst, np.argsort(src, -1), -1)
        ref_map = np.take_along_axis(ref["dst"], np.argsort(ref["src"], -1), -1)
        np.testing.assert_array_equal(ours_map, ref_map, err_msg=f"step {s} A -> B assignment")
        ref_order_scores = np.take_along_axis(np.asarray(m.node_max), ref["src"], -1)
        assert np.diff(ref_order_scores, axis=-1).max() <= 1e-6, f"step {s} order"


@needs_fixture
def test_tome_on_reference_tokens(models, acts):
    """ToMe and the projector fed with the official `umt_out` (errors do not compound)."""
    _, projector = models
    x = jnp.asarray(acts["eval_umt_out"])
    merged, matches = jax.jit(lambda x: tome.merge_to(x, 64, heads=4))(x)
    check_tome_indices(matches, acts)
    assert rel_err(merged, acts["eval_tome_out"]) < REL_TOL
    np.testing.assert_allclose(jitted(projector, "merge")(x), merged, rtol=0, atol=0)
    assert rel_err(jitted(projector)(x), acts["eval_proj_out"]) < REL_TOL


@needs_fixture
def test_umt_tower_matches_reference(tower_out, acts):
    """All 3 clips of the 12 frames (about 1 s on CPU)."""
    assert tower_out.shape == (3, 3136, 64)
    assert rel_err(tower_out, acts["eval_umt_out"]) < REL_TOL


@needs_fixture
def test_end_to_end_frames_to_visual_tokens(models, tower_out, acts):
    """Frames -> our tower -> ToMe (same indices) -> projector vs the spliced visual tokens."""
    _, projector = models
    _, matches = jax.jit(lambda x: tome.merge_to(x, 64, heads=4))(tower_out)
    check_tome_indices(matches, acts)
    assert rel_err(jitted(projector)(tower_out), acts["eval_proj_out"]) < REL_TOL


@needs_fixture
def test_image_path_shapes(models, images_clip):
    """t = 1 uses the image table and keeps 64 tokens per image (784 -> 64 in 4 steps)."""
    tower, projector = models
    out = jitted(tower)(images_clip[:2, None])
    assert out.shape == (2, 784, 64)
    tokens = jitted(projector, video=False)(out)
    assert tokens.shape == (2, 64, 32)
    assert np.isfinite(np.asarray(tokens)).all()


@needs_fixture
def test_converter_errors(state, umt_cfg):
    bad = {k: v for k, v in state.items() if not k.endswith("blocks.1.attn.v_bias")}
    with pytest.raises(WeightMismatchError, match="blocks.1.attn.v_bias"):
        videochat_flash.load_vision_tower(bad, umt_cfg)
    twice = dict(state)
    for k, v in state.items():
        if "mm_projector." in k:
            twice["base_model." + k] = v
    with pytest.raises(WeightMismatchError, match="found 2"):
        videochat_flash.load_projector(twice, tome.tome16_tiny())
    with pytest.raises(WeightMismatchError, match="model expects"):
        videochat_flash.load_vision_tower(state, umt.UmtConfig(embed_dim=128, num_heads=4, depth=2))
