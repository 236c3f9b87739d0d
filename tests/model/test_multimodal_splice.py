"""multimodal.py: static-shape splicing equals the reference's list concatenation."""

import json

import jax.numpy as jnp
import numpy as np
import pytest
from shared_paths import VIRST_FIXTURE

from jax_refvos.model.backbone import multimodal as mm
from jax_refvos.pipeline.tokenizer import IGNORE_INDEX, IMAGE_TOKEN_INDEX

FIXTURE = VIRST_FIXTURE


def reference_splice(ids, labels, embeds, visual, vis_len):
    """The LLaVA-style loop: per row, concatenate text chunks and visual blocks."""
    out_e, out_l = [], []
    k = 0
    for i, t in enumerate(ids):
        if t == IMAGE_TOKEN_INDEX:
            out_e.extend(visual[k, : vis_len[k]])
            out_l.extend([IGNORE_INDEX] * vis_len[k])
            k += 1
        else:
            out_e.append(embeds[i])
            out_l.append(labels[i])
    return np.array(out_e), np.array(out_l)


def random_case(rng, b=3, n=17, p=3, v=5, d=4):
    ids = rng.integers(0, 50, (b, n))
    lengths = rng.integers(8, n + 1, b)
    valid = np.arange(n)[None] < lengths[:, None]
    counts = rng.integers(0, p + 1, b)
    for r in range(b):
        ids[r, rng.choice(lengths[r], counts[r], replace=False)] = IMAGE_TOKEN_INDEX
    labels = np.where(rng.random((b, n)) < 0.5, IGNORE_INDEX, ids)
    vis_len = rng.integers(1, v + 1, (b, p))
    vis_valid = np.arange(v)[None, None] < vis_len[..., None]
    embeds = rng.normal(size=(b, n, d)).astype(np.float32)
    visual = rng.normal(size=(b, p, v, d)).astype(np.float32)
    return ids, labels, valid, embeds, visual, vis_valid, vis_len, lengths


@pytest.mark.parametrize("seed", range(4))
def test_splice_equals_reference_loop(seed):
    rng = np.random.default_rng(seed)
    ids, labels, valid, embeds, visual, vis_valid, vis_len, lengths = random_case(rng)
    out_len = mm.spliced_length(ids.shape[1], visual.shape[1], visual.shape[2])
    got = mm.splice_visual_tokens(
        jnp.asarray(embeds), jnp.asarray(ids), jnp.asarray(valid), jnp.asarray(visual),
        jnp.asarray(vis_valid), out_len=out_len, labels=jnp.asarray(labels),
    )  # fmt: skip
    for r in range(ids.shape[0]):
        n = lengths[r]
        want_e, want_l = reference_splice(
            ids[r, :n], labels[r, :n], embeds[r], visual[r], vis_len[r]
        )
        m = len(want_e)
        np.testing.assert_array_equal(np.asarray(got.valid[r]), np.arange(out_len) < m)
        np.testing.assert_array_equal(np.asarray(got.embeds[r, :m]), want_e.reshape(m, -1))
        assert np.all(np.asarray(got.embeds[r, m:]) == 0)
        np.testing.assert_array_equal(np.asarray(got.labels[r, :m]), want_l)
        assert np.all(np.asarray(got.labels[r, m:]) == IGNORE_INDEX)
        # text_to_out points every kept text token at its own embedding
        keep = np.flatnonzero((ids[r] != IMAGE_TOKEN_INDEX) & valid[r])
        pos = np.asarray(got.text_to_out[r, keep])
        np.testing.assert_array_equal(np.asarray(got.embeds[r, pos]), embeds[r, keep])


def test_truncation_and_gather_offsets():
    rng = np.random.default_rng(7)
    ids, labels, valid, embeds, visual, vis_valid, _, _ = random_case(rng)
    full = mm.spliced_length(ids.shape[1], visual.shape[1], visual.shape[2])
    args = [jnp.asarray(a) for a in (embeds, ids, valid, visual, vis_valid)]
    short = mm.splice_visual_tokens(*args, out_len=10)
    long = mm.splice_visual_tokens(*args, out_len=full)
    np.testing.assert_array_equal(short.embeds, long.embeds[:, :10])
    np.testing.assert_array_equal(short.valid, long.valid[:, :10])
    hidden = jnp.arange(2 * full * 3, dtype=jnp.float32).reshape(2, full, 3)
    # two kept (non-placeholder, valid) text tokens per row
    kept = [np.flatnonzero((ids[r] != IMAGE_TOKEN_INDEX) & valid[r])[[1, 3]] for r in range(2)]
    idx = jnp.asarray(np.stack(kept))
    t2o = long.text_to_out[:2]
    at = mm.gather_tokens(hidden, t2o, idx)
    before = mm.gather_tokens(hidden, t2o, idx, offset=-1)
    pos = np.take_along_axis(np.asarray(t2o), np.asarray(idx), 1)
    np.testing.assert_array_equal(at, np.take_along_axis(np.asarray(hidden), pos[..., None], 1))
    np.testing.assert_array_equal(
        before, np.take_along_axis(np.asarray(hidden), np.maximum(pos - 1, 0)[..., None], 1)
    )


def test_check_placeholders_names_the_rows():
    ids = np.array([[IMAGE_TOKEN_INDEX, 1, IMAGE_TOKEN_INDEX], [1, 2, 3]])
    mm.check_placeholders(ids, np.ones_like(ids, bool), 2)
    with pytest.raises(ValueError, match=r"rows \[0\] have \[2\]"):
        mm.check_placeholders(ids, np.ones_like(ids, bool), 1)


@pytest.mark.skipif(not FIXTURE.exists(), reason="shared VIRST fixture not present")
def test_virst_fixture_splice():
    """The official code's spliced LM input: 111 ids, one <image> -> 3 clips x 64 tokens."""
    from safetensors import safe_open

    prompt = json.loads((FIXTURE / "prompt.json").read_text())
    acts = np.load(FIXTURE / "activations.npz")
    with safe_open(str(FIXTURE / "virst_tiny.safetensors"), "numpy") as f:
        table = f.get_tensor("model.embed_tokens.weight").astype(np.float32)
    ids = np.asarray(prompt["input_ids"])[None]
    labels = np.asarray(prompt["labels"])[None]
    visual = acts["eval_proj_out"].reshape(1, 1, -1, table.shape[1])  # clip-major, 192 tokens
    out_len = mm.spliced_length(ids.shape[1], 1, visual.shape[2])
    got = mm.splice_visual_tokens(
        mm.embed_text_ids(jnp.asarray(table), jnp.asarray(ids)), jnp.asarray(ids),
        jnp.ones(ids.shape, bool), jnp.asarray(visual), jnp.ones(visual.shape[:3], bool),
        out_len=out_len, labels=jnp.asarray(labels),
    )  # fmt: skip
    assert out_len == acts["eval_llm_inputs_embeds"].shape[0] == 302
    np.testing.assert_allclose(got.embeds[0], acts["eval_llm_inputs_embeds"], rtol=0, atol=1e-7)
    np.testing.assert_array_equal(got.labels[0], acts["eval_llm_labels_spliced"])
    seg = np.asarray(prompt["seg_positions_in_input_ids"])
    np.testing.assert_array_equal(got.text_to_out[0, seg], prompt["seg_positions_after_splice"])
    assert bool(np.all(got.valid))
