"""Our Qwen2 decoder on the official VIRST code's tiny LLM (fixture): hidden states and logits.

The fixture ran `Qwen2Model_Flash` (eager attention, fp32) on the spliced input embeddings of the
real Qwen2 tokenizer's ids; we load its weights by name and feed the same embeddings.
"""

import json

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from shared_paths import VIRST_FIXTURE

from jax_refvos.model.backbone.decoder_lm import DecoderLM
from jax_refvos.model.backbone.lm_config import DecoderConfig
from jax_refvos.weights import hf

FIXTURE = VIRST_FIXTURE
pytestmark = pytest.mark.skipif(not FIXTURE.exists(), reason="shared VIRST fixture not present")


@pytest.fixture(scope="module")
def setup():
    config = json.loads((FIXTURE / "config_llm_virst.json").read_text())
    state = hf.read_safetensors(FIXTURE / "virst_tiny.safetensors")
    lm_state = {
        k: v
        for k, v in state.items()
        if k == "lm_head.weight"
        or k in ("model.embed_tokens.weight", "model.norm.weight")
        or k.startswith("model.layers.")
    }
    # VIRST's config says "virst" and the pre-resize vocabulary (152064); the weights were resized
    # to the tokenizer's 151647 rows, which is what the model is built with.
    cfg = DecoderConfig.from_hf(
        {**config, "model_type": "qwen2"},
        source="config_llm_virst.json",
        vocab_size=lm_state["model.embed_tokens.weight"].shape[0],
    )
    model = nnx.eval_shape(lambda: DecoderLM(cfg, rngs=nnx.Rngs(0)))
    hf.load_state(model, lm_state, source="virst_tiny.safetensors")
    return model, np.load(FIXTURE / "activations.npz")


@pytest.mark.parametrize("run", ["eval", "isf"])
def test_hidden_states_and_logits_equal_the_official_run(setup, run):
    model, acts = setup
    embeds = jnp.asarray(acts[f"{run}_llm_inputs_embeds"])[None]
    out = model(inputs_embeds=embeds, output_hidden_states=True)
    want = acts[f"{run}_llm_hidden_states"]  # [input, after layer 0, final-normed last layer]
    assert len(out.hidden_states) == want.shape[0]
    for i, (got, ref) in enumerate(zip(out.hidden_states, want, strict=True)):
        err = np.abs(np.asarray(got[0]) - ref).max() / np.abs(ref).max()
        assert err < 1e-5, f"hidden state {i}: rel err {err:.2e}"
    logits = np.asarray(out.logits[0], np.float64)
    top = logits.max(-1, keepdims=True)
    lse = (top[:, 0] + np.log(np.exp(logits - top).sum(-1))).astype(np.float32)
    np.testing.assert_allclose(lse, acts[f"{run}_lm_logsumexp"], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(logits.argmax(-1), acts[f"{run}_lm_argmax"])
    # the CE the official code computes from these logits ([SEG] targets masked)
    nxt = acts[f"{run}_lm_next_label"]
    picked = logits[np.arange(len(nxt)), np.maximum(nxt, 0)]
    np.testing.assert_allclose(
        picked[nxt >= 0], acts[f"{run}_lm_next_label_logit"][nxt >= 0], rtol=1e-5, atol=1e-5
    )
    if run == "eval":
        np.testing.assert_allclose(logits[-1], acts["eval_lm_logits_last"], rtol=1e-5, atol=1e-5)
