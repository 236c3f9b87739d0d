"""VIRST end to end (`methods/virst/model.py`) vs the official tiny fixture: JPEGs + ids -> logits.

The fixture (`shared/fixtures/virst_tiny_dev`, see its README) ran the official PyTorch code in
float32 with random fp16-exact weights. Here everything starts from the raw inputs: the 12 JPEGs
(three preprocessing recipes: VLM 448 px, STF 1024 px bf16, propagation 1024 px uint8),
`prompt.json`'s `input_ids` and the safetensors; `Virst.predict` must give `eval_video_res_logits`
(released eval: Initial ST-Fusion off) and, with ISF on, `isf_video_res_logits`.

Errors are relative, max|Δ| / max|ref| (per frame for the logits), float32. Bounds: REL_TOL =
1e-5 for the intermediates (measured: STF SAM2 channel means 1.4e-7, `[SEG]` hidden states
3.4e-7, SegPrompter prompts 5.0e-7) and 1e-4 per frame for the logits (values in [-0.29, 0.14];
measured <= 1.3e-6 eval, <= 1.6e-6 ISF, signs all equal).
"""

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest
import virst_fixture_inputs as vfi
from flax import nnx
from shared_paths import VIRST_FIXTURE as FIXTURE
from virst_fixture_inputs import rel_err

from jax_refvos.methods.virst import model as virst

pytestmark = pytest.mark.skipif(not FIXTURE.exists(), reason="VIRST tiny fixture not present")

REL_TOL = 1e-5
LOGITS_REL_TOL = 1e-4
VIDEO_SIZE = (72, 112)


@pytest.fixture(scope="module")
def inputs():
    """(vlm [12, 448, 448, 3], stf [12, 1024, 1024, 3], prop uint8 [12, 1024, 1024, 3], ids)."""
    imgs = vfi.jpegs(FIXTURE)
    assert len(imgs) == 12
    ids = np.asarray(vfi.prompt(FIXTURE)["input_ids"], np.int32)
    return vfi.vlm_view(imgs), vfi.stf_view(imgs), vfi.prop_view(imgs), ids


@pytest.fixture(scope="module")
def acts():
    return np.load(FIXTURE / "activations.npz")


@pytest.fixture(scope="module")
def state():
    return vfi.official_state(FIXTURE)


def _config(state, *, initial_seg_fusion: bool) -> virst.VirstConfig:
    return vfi.official_config(FIXTURE, state, initial_seg_fusion=initial_seg_fusion)


@pytest.fixture(scope="module")
def model(state):
    return vfi.official_model(FIXTURE, state, initial_seg_fusion=False)


def _check_logits(ours: np.ndarray, ref: np.ndarray) -> None:
    assert ours.shape == ref.shape == (12, *VIDEO_SIZE)
    per_frame = [rel_err(o, r) for o, r in zip(ours, ref, strict=True)]
    agree = float(((ours > 0) == (ref > 0)).mean())
    print({"per_frame_rel": [f"{e:.1e}" for e in per_frame], "mask_agreement": agree})
    assert max(per_frame) < LOGITS_REL_TOL, per_frame
    assert agree > 1 - 1e-4  # README note 3: 11 values lie within 1e-5 of 0


@nnx.jit
def _intermediates(model, vlm, stf, ids):
    feats = model.stf_features(stf)
    hidden = model.seg_hidden(vlm, ids, stf_feats=feats)
    return feats.mean((2, 3)), hidden, model.seg_prompts(hidden, feats)


def test_config_and_weights(model, state):
    cfg = model.cfg
    assert (cfg.seg_token_id, cfg.num_seg_tokens) == (151646, 10)
    assert cfg.tome.llm_dim == cfg.lm.hidden_size == cfg.isf.hidden_dim == 32
    assert virst.VirstConfig.__dataclass_params__.frozen
    np.testing.assert_array_equal(
        np.asarray(model.seg_model.no_obj_ptr[...]), state["model.seg_model.no_obj_ptr"]
    )
    np.testing.assert_array_equal(
        np.asarray(model.initial_seg_fusion_module.gate[...]),
        state["model.initial_seg_fusion_module.gate"],
    )


def test_intermediates_match_fixture(model, inputs, acts):
    """STF SAM2 features, `[SEG]` hidden states and SegPrompter prompts from the raw inputs."""
    vlm, stf, _, ids = inputs
    chanmean, hidden, prompts = _intermediates(
        model, jnp.asarray(vlm)[None], jnp.asarray(stf)[None], jnp.asarray(ids)[None]
    )
    prompt = vfi.prompt(FIXTURE)
    assert prompt["seg_token_id"] == model.cfg.seg_token_id
    np.testing.assert_array_equal(
        np.asarray(model.seg_index(jnp.asarray(ids)[None]))[0], prompt["seg_positions_in_input_ids"]
    )
    seg_pos = prompt["seg_positions_after_splice"]
    errs = {
        "stf_chanmean": rel_err(chanmean[0], acts["eval_stf_sam_vision_features_chanmean"]),
        "seg_hidden": rel_err(hidden[0], acts["eval_llm_hidden_states"][-1][seg_pos]),
        "segp_out": rel_err(prompts, acts["eval_segp_out"]),
    }
    print(errs)
    assert max(errs.values()) < REL_TOL, errs


def test_predict_eval_video_res_logits(model, inputs, acts):
    """The released eval path (ISF off): anchors 0, 6, 11, forward tracking, 72 x 112 logits."""
    vlm, stf, prop, ids = inputs
    out = model.predict(vlm, stf, prop, ids, video_size=VIDEO_SIZE, chunk_size=5)
    _check_logits(out, acts["eval_video_res_logits"])


@pytest.mark.slow  # a second full run (~20 s): the same path with Initial ST-Fusion on
def test_predict_isf_video_res_logits(state, inputs, acts):
    vlm, stf, prop, ids = inputs
    model = virst.from_official_state(state, _config(state, initial_seg_fusion=True))
    out = model.predict(vlm, stf, prop, ids, video_size=VIDEO_SIZE, chunk_size=5)
    _check_logits(out, acts["isf_video_res_logits"])


def test_bad_inputs(model, inputs):
    vlm, stf, prop, ids = inputs
    with pytest.raises(virst.VirstInputError, match="STF frames"):
        model.predict(vlm, stf[:8], prop, ids, video_size=VIDEO_SIZE)
    with pytest.raises(virst.VirstInputError, match="SEG"):
        model.predict(vlm, stf, prop, ids[:60], video_size=VIDEO_SIZE)
    cfg = dataclasses.replace(model.cfg, initial_seg_fusion=True)
    isf_model = nnx.eval_shape(lambda: virst.Virst(cfg, rngs=nnx.Rngs(0)))
    with pytest.raises(virst.VirstInputError, match="STF features"):
        isf_model.seg_hidden(jnp.asarray(vlm)[None], jnp.asarray(ids)[None])
