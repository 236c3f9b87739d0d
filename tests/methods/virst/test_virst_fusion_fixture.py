"""VIRST Initial ST-Fusion and SegPrompter against the official code's activations.

The fixture (`shared/fixtures/virst_tiny_dev`, see its README) ran the official PyTorch code in
float32 on a tiny random-weight model with fp16-exact weights: LLM width 32, token_dim 256,
8 heads, 2 decoder layers, 12 STF frames at 1024 px. The SAM2 features the fusion modules read are
stored in full only for frame 0, so the end-to-end tests recompute them with our SAM2 image
encoder from the fixture's JPEGs (`images_sam` recipe: PIL bilinear to 1024, /255, ImageNet
normalisation, bfloat16 rounding), checked first against the stored frame 0 and channel means.

Errors are relative, max|Δ| / max|ref|, float32; the bound is REL_TOL = 1e-5 everywhere
(measured: fusion outputs 2e-7..6e-7, conv-stack tokens 2e-6, SAM2 features 6e-7 (frame 0) and
2e-6 (channel means), frame scores 1.2e-6).
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from shared_paths import VIRST_FIXTURE

from jax_refvos.methods.virst import fusion
from jax_refvos.model.sam2.config import HieraConfig, NeckConfig
from jax_refvos.model.sam2.image_encoder import ImageEncoder
from jax_refvos.weights.torch_names import export_torch_state, load_torch_state

FIXTURE = VIRST_FIXTURE
pytestmark = pytest.mark.skipif(not FIXTURE.exists(), reason="shared VIRST fixture not present")

REL_TOL = 1e-5
ISF_PREFIX = "model.initial_seg_fusion_module."
SEGP_PREFIX = "model.seg_prompter."
SAM_PREFIX = "model.seg_model.image_encoder."
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
# The fixture's SAM2 trunk (sam2.1_hiera_tiny_virst_fixture.yaml): only the image encoder is used.
FIXTURE_TRUNK = HieraConfig(
    embed_dim=16,
    num_heads=2,
    stages=(1, 1, 2, 1),
    global_att_blocks=(3,),
    window_spec=(8, 4, 16, 8),
)


# Jitted entry points: one compile each instead of op-by-op dispatch (and proof they trace).
_decode = nnx.jit(lambda m, *args, **kw: m.decode(*args, **kw))
_fuse = nnx.jit(lambda m, *args, **kw: m.fuse(*args, **kw))
_call = nnx.jit(lambda m, *args: m(*args))


def rel_err(got, want) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.abs(got - want).max() / np.abs(want).max())


def _sub(state: dict, prefix: str) -> dict:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


@pytest.fixture(scope="module")
def acts():
    return np.load(FIXTURE / "activations.npz")


@pytest.fixture(scope="module")
def state():
    from safetensors import safe_open

    prefixes = (ISF_PREFIX, SEGP_PREFIX, SAM_PREFIX)
    with safe_open(str(FIXTURE / "virst_tiny.safetensors"), "numpy") as f:
        # float16 values are exact; load_torch_state casts them to float32.
        return {k: f.get_tensor(k) for k in f.keys() if k.startswith(prefixes)}  # noqa: SIM118


@pytest.fixture(scope="module")
def virst_config():
    return json.loads((FIXTURE / "config_llm_virst.json").read_text())


@pytest.fixture(scope="module")
def isf(state, virst_config):
    cfg = fusion.InitialSegFusionConfig.from_virst_config(virst_config)
    model = nnx.eval_shape(lambda: fusion.InitialSegFusion(cfg, rngs=nnx.Rngs(0)))
    load_torch_state(model, _sub(state, ISF_PREFIX), source="fixture ISF")
    return model


@pytest.fixture(scope="module")
def segp(state, virst_config):
    cfg = fusion.SegPrompterConfig.from_virst_config(virst_config)
    model = nnx.eval_shape(lambda: fusion.SegPrompter(cfg, rngs=nnx.Rngs(0)))
    load_torch_state(model, _sub(state, SEGP_PREFIX), source="fixture SegPrompter")
    return model


def _images_sam() -> np.ndarray:
    """The STF frames [12, 1024, 1024, 3] as `collate_fn` left them (bfloat16 values)."""
    from PIL import Image

    frames = []
    for path in sorted((FIXTURE / "video" / "vid0").glob("*.jpg")):
        img = Image.open(path).convert("RGB").resize((1024, 1024), Image.BILINEAR)
        x = (np.asarray(img).astype(np.float32) / 255 - IMAGENET_MEAN) / IMAGENET_STD
        frames.append(x.astype(jnp.bfloat16).astype(np.float32))
    return np.stack(frames)


@pytest.fixture(scope="module")
def images_sam(acts):
    images = _images_sam()
    sums = images.astype(np.float64).sum((1, 2, 3))
    np.testing.assert_array_equal(sums, acts["in_images_sam_sum_per_frame"])
    return images


@pytest.fixture(scope="module")
def sam_feats(state, images_sam):
    """Our SAM2 stride-16 `vision_features` of the 12 STF frames, [1, 12, 64, 64, 256]."""
    neck = NeckConfig(backbone_channel_list=FIXTURE_TRUNK.channel_list)
    encoder = nnx.eval_shape(lambda: ImageEncoder(FIXTURE_TRUNK, neck, rngs=nnx.Rngs(0)))
    load_torch_state(encoder, _sub(state, SAM_PREFIX), source="fixture SAM2 image encoder")
    run = nnx.jit(lambda m, x: m(x).vision_features)
    feats = [np.asarray(run(encoder, jnp.asarray(images_sam[i : i + 4]))) for i in range(0, 12, 4)]
    return np.concatenate(feats)[None]


def _memory(acts) -> jax.Array:
    """`segp_memory` (t·64 + s, 1, 256) as [1, t, 64, 256]."""
    return jnp.asarray(acts["eval_segp_memory"][:, 0].reshape(1, 12, 64, 256))


# ----------------------------------------------------------------------------- configs, weights
def test_configs_from_virst(virst_config):
    isf_cfg = fusion.InitialSegFusionConfig.from_virst_config(virst_config)
    segp_cfg = fusion.SegPrompterConfig.from_virst_config(virst_config)
    assert isf_cfg.hidden_dim == segp_cfg.in_dim == 32
    real = fusion.SegPrompterConfig()
    assert (real.in_dim, real.token_dim, real.num_heads, real.num_layers) == (3584, 256, 8, 2)
    assert (real.ffn_dim, real.head_dim, real.rope_axis_dim) == (1024, 32, 10)
    assert fusion.InitialSegFusionConfig().hidden_dim == 3584
    with pytest.raises(fusion.FusionInputError, match="hidden_size"):
        fusion.SegPrompterConfig.from_virst_config({"token_proj": {"hidden_dim": 1024}})


def test_packed_in_proj_layout(segp, state):
    """torch's packed [3d, d] q/k/v rows land as [d, 3, d] (q = kernel[:, 0])."""
    ours = export_torch_state(segp)["decoder.0.self_attn.in_proj_weight"]
    torch_w = state[SEGP_PREFIX + "decoder.0.self_attn.in_proj_weight"].astype(np.float32)
    np.testing.assert_array_equal(ours[:, 1], torch_w[256:512].T)  # the k rows
    assert float(np.asarray(segp.decoder[0].self_attn.in_proj_bias[...])[2, 0]) == float(
        state[SEGP_PREFIX + "decoder.0.self_attn.in_proj_bias"][512]
    )


# ----------------------------------------------------------------------------- module level
def test_isf_fuse_from_stored_tokens(isf, acts):
    out = isf.fuse(
        jnp.asarray(acts["isf_isf_in_seg_embeds"]), jnp.asarray(acts["isf_isf_vision_tokens_256"])
    )
    assert rel_err(out, acts["isf_isf_out"]) < REL_TOL


def test_spatial_down_frame0(isf, segp, acts):
    """Both conv stacks on the stored frame-0 SAM2 features (NCHW in the fixture)."""
    f0 = jnp.asarray(acts["eval_stf_sam_vision_features_f0"]).transpose(1, 2, 0)[None, None]
    assert rel_err(isf.vision_tokens(f0)[0, 0], acts["isf_isf_vision_tokens_256"][0, 0]) < REL_TOL
    assert rel_err(segp.memory(f0)[0, 0], acts["eval_segp_memory"][:64, 0]) < REL_TOL


@pytest.mark.parametrize("run", ["eval_", "isf_"])
def test_segprompter_decode_from_stored_memory(segp, acts, run):
    seg = jnp.asarray(acts[run + "segp_in_seg_token"])
    assert rel_err(segp.seg_proj(seg), acts[run + "segp_seg_proj"]) < REL_TOL
    out = _decode(segp, seg, _memory(acts))
    for i, layer in enumerate(out.layer_outputs):  # reference: (q·t, 1, 256), query n·12 + t
        assert rel_err(layer[0], acts[run + f"segp_layer{i}_out"][:, 0]) < REL_TOL
    assert out.prompts.shape == (1, 10, 12, 256)
    assert rel_err(out.prompts, acts[run + "segp_out"]) < REL_TOL
    score, want = np.asarray(out.frame_score), acts[run + "segp_frame_score"]
    assert rel_err(score, want) < REL_TOL
    # The scores are near 1/768 each: their spread across frames must match too.
    assert rel_err(score - score.mean(), want - want.mean()) < 1e-3


# ----------------------------------------------------------------------------- end to end
def test_sam2_stf_features(sam_feats, acts):
    assert rel_err(sam_feats[0, 0].transpose(2, 0, 1), acts["eval_stf_sam_vision_features_f0"]) < (
        REL_TOL
    )
    chanmean = sam_feats[0].mean((1, 2))
    assert rel_err(chanmean, acts["eval_stf_sam_vision_features_chanmean"]) < REL_TOL


def test_isf_end_to_end(isf, sam_feats, acts):
    feats = jnp.asarray(sam_feats)
    assert rel_err(isf.vision_tokens(feats), acts["isf_isf_vision_tokens_256"]) < REL_TOL
    out = _call(isf, jnp.asarray(acts["isf_isf_in_seg_embeds"]), feats)
    assert rel_err(out, acts["isf_isf_out"]) < REL_TOL
    # VIRST's train forward ran the same module (ISF on) on the same frames.
    assert rel_err(out, acts["train_isf_out"]) < REL_TOL


@pytest.mark.parametrize("run", ["eval_", "isf_"])
def test_segprompter_end_to_end(segp, sam_feats, acts, run):
    feats = jnp.asarray(sam_feats)
    memory = segp.memory(feats)
    assert rel_err(memory.reshape(768, 256), acts["eval_segp_memory"][:, 0]) < REL_TOL
    out = _call(segp, jnp.asarray(acts[run + "segp_in_seg_token"]), feats)
    assert rel_err(out.prompts, acts[run + "segp_out"]) < REL_TOL
    assert rel_err(out.frame_score, acts[run + "segp_frame_score"]) < REL_TOL
    anchors = acts[run + "cond_idx"]
    assert rel_err(out.prompts[:, :, anchors], acts[run + "anchor_seg_prompts"]) < REL_TOL


# ----------------------------------------------------------------------------- padding (R5)
def test_padded_frames_and_slots_leave_valid_outputs_unchanged(segp, isf, acts):
    seg = jnp.asarray(acts["eval_segp_in_seg_token"])
    memory = _memory(acts)
    ref = _decode(segp, seg, memory)
    key = jax.random.key(0)
    junk_mem = jax.random.normal(key, (1, 3, 64, 256))
    junk_seg = 5.0 * jax.random.normal(key, (1, 2, 32))
    padded = _decode(
        segp,
        jnp.concatenate([seg, junk_seg], 1),
        jnp.concatenate([memory, junk_mem], 1),
        seg_valid=jnp.arange(12)[None] < 10,
        frame_valid=jnp.arange(15)[None] < 12,
    )
    assert rel_err(padded.prompts[:, :10, :12], ref.prompts) < REL_TOL
    assert rel_err(padded.frame_score[:, :12], ref.frame_score) < REL_TOL
    np.testing.assert_array_equal(np.asarray(padded.frame_score[:, 12:]), 0.0)
    assert np.isfinite(np.asarray(padded.prompts)).all()

    embeds, tokens = acts["isf_isf_in_seg_embeds"], acts["isf_isf_vision_tokens_256"]
    junk_tok = jax.random.normal(key, (1, 3, 64, 256))
    out = _fuse(
        isf,
        jnp.asarray(embeds),
        jnp.concatenate([jnp.asarray(tokens), junk_tok], 1),
        frame_valid=jnp.arange(15)[None] < 12,
    )
    assert rel_err(out, acts["isf_isf_out"]) < REL_TOL


def test_bad_inputs_raise(segp, isf, acts):
    with pytest.raises(fusion.FusionInputError, match="32x32"):
        isf.vision_tokens(jnp.zeros((1, 1, 32, 32, 256)))
    with pytest.raises(fusion.FusionInputError, match="max_length"):
        segp.decode(jnp.zeros((1, 1, 32)), jnp.zeros((1, 101, 64, 256)))
