"""Parity of `weights.hf.load_causal_lm` + `DecoderLM` with transformers' PyTorch
Qwen2ForCausalLM / LlamaForCausalLM (5.23, CPU, eager attention).

Tiny random models (hidden 64, 2 layers, 4 heads, 2 kv heads, vocab 256) with every norm weight
and bias perturbed by 0.1 * randn, saved with `save_pretrained` in f32 and bf16 (one sharded),
loaded from disk. Tolerance: max|ours - torch| <= 1e-4 * max|torch| for the logits and every
hidden state; bf16 checkpoints are compared with the torch model holding the same bf16-rounded
weights run in f32, so the tolerance stays the same.
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
# torchvision is imported for CPU torch by tests/conftest.py (see there).
transformers = pytest.importorskip("transformers")

import jax.numpy as jnp  # noqa: E402

from jax_refvos.weights import hf  # noqa: E402

pytestmark = pytest.mark.parity

REL = 1e-4
COMMON = dict(
    vocab_size=256,
    hidden_size=64,
    intermediate_size=96,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=64,
    rms_norm_eps=1e-6,
)
CASES = {
    "qwen2": ("qwen2", dict(rope_theta=1e6, tie_word_embeddings=False)),
    "llama_llama3": (
        "llama",
        dict(
            rope_theta=1e4,
            tie_word_embeddings=False,
            # original length 16: the 8 frequencies of head_dim 16 fall in all three bands
            rope_scaling=dict(
                rope_type="llama3",
                factor=8.0,
                low_freq_factor=1.0,
                high_freq_factor=4.0,
                original_max_position_embeddings=16,
            ),
        ),
    ),
    "llama_tied_bias": (
        "llama",
        dict(rope_theta=1e4, tie_word_embeddings=True, attention_bias=True, mlp_bias=True),
    ),
    # max_position_embeddings 8 < sequence length 12: HF recomputes the NTK base in forward.
    "llama_dynamic": (
        "llama",
        dict(
            rope_theta=1e4,
            tie_word_embeddings=False,
            max_position_embeddings=8,
            rope_scaling=dict(rope_type="dynamic", factor=2.0),
        ),
    ),
    "llama_yarn": (
        "llama",
        dict(
            rope_theta=1e4,
            tie_word_embeddings=False,
            rope_scaling=dict(rope_type="yarn", factor=4.0, original_max_position_embeddings=16),
        ),
    ),
}


def _torch_model(name: str):
    kind, extra = CASES[name]
    cls_cfg, cls_model = {
        "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM),
        "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
    }[kind]
    cfg = cls_cfg(**(COMMON | extra), attn_implementation="eager")
    torch.manual_seed(0)
    model = cls_model(cfg).eval()
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if "norm" in pname or pname.endswith(".bias"):
                p.add_(0.1 * torch.randn_like(p))
    return model


def _reference(model, ids, mask=None):
    with torch.no_grad():
        out = model(
            input_ids=torch.from_numpy(ids).long(),
            attention_mask=None if mask is None else torch.from_numpy(mask).long(),
            output_hidden_states=True,
        )
    return out.logits.numpy(), [h.numpy() for h in out.hidden_states]


def _rel(got, want) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape
    return float(np.abs(got - want).max() / np.abs(want).max())


def _compare(ours, torch_model, ids, n_hidden):
    want_logits, want_hidden = _reference(torch_model, ids)
    out = ours(jnp.asarray(ids, jnp.int32), output_hidden_states=True)
    assert out.logits.dtype == jnp.float32
    errors = {"logits": _rel(out.logits, want_logits)}
    assert len(out.hidden_states) == len(want_hidden) == n_hidden + 1
    for i, (a, b) in enumerate(zip(out.hidden_states, want_hidden, strict=True)):
        errors[f"hidden_{i}"] = _rel(a, b)
    bad = {k: v for k, v in errors.items() if not v <= REL}
    assert not bad, f"relative errors above {REL}: {bad} (all: {errors})"
    return errors


IDS = np.random.default_rng(0).integers(0, 256, (2, 12))


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("scan", [False, True], ids=["loop", "scan"])
def test_f32_checkpoint_matches_torch(tmp_path, name, scan):
    model = _torch_model(name)
    model.save_pretrained(tmp_path)
    if name == "llama_tied_bias":
        assert "lm_head.weight" not in hf.read_safetensors_dir(tmp_path)
    ours = hf.load_causal_lm(tmp_path, scan_layers=scan)
    assert ours.cfg.tie_word_embeddings == (name == "llama_tied_bias")
    _compare(ours, model, IDS, COMMON["num_hidden_layers"])


@pytest.mark.parametrize(
    ("name", "shard"), [("qwen2", "20KB"), ("llama_tied_bias", None), ("llama_llama3", None)]
)
def test_bf16_checkpoint_matches_torch_with_rounded_weights(tmp_path, name, shard):
    model = _torch_model(name)
    kw = {} if shard is None else {"max_shard_size": shard}
    model.to(torch.bfloat16).save_pretrained(tmp_path, **kw)
    if shard is not None:
        assert (tmp_path / "model.safetensors.index.json").is_file()
        assert len(list(tmp_path.glob("*.safetensors"))) > 1
    model.to(torch.float32)  # same bf16-rounded values, computed in f32
    state = hf.read_safetensors_dir(tmp_path)
    for key, p in model.state_dict().items():
        if key in state:
            np.testing.assert_array_equal(state[key], p.numpy(), err_msg=key)
    ours = hf.load_causal_lm(tmp_path)
    _compare(ours, model, IDS, COMMON["num_hidden_layers"])


@pytest.mark.parametrize("name", ["qwen2", "llama_llama3"])
def test_right_padding_valid_positions_match(tmp_path, name):
    model = _torch_model(name)
    model.save_pretrained(tmp_path)
    ours = hf.load_causal_lm(tmp_path)
    mask = np.ones((2, 12), np.int64)
    mask[1, 7:] = 0
    want_logits, want_hidden = _reference(model, IDS, mask)
    out = ours(
        jnp.asarray(IDS, jnp.int32), attention_mask=jnp.asarray(mask), output_hidden_states=True
    )
    valid = mask.astype(bool)
    assert _rel(np.asarray(out.logits)[valid], want_logits[valid]) <= REL
    for a, b in zip(out.hidden_states, want_hidden, strict=True):
        assert _rel(np.asarray(a)[valid], b[valid]) <= REL
    # the padded row's valid part equals the unpadded 7-token sequence
    short, _ = _reference(model, IDS[1:, :7])
    assert _rel(np.asarray(out.logits)[1, :7], short[0]) <= REL
