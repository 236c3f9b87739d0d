"""Unit tests of the Qwen2/LLaMA decoder LM, its RoPE variants, KV cache, generation and the HF
weight loader (no torch: HF-named random state dicts and hand-written safetensors files)."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from flax import nnx

from jax_refvos import sharding
from jax_refvos.model.backbone import generate, lm_config
from jax_refvos.model.backbone.decoder_lm import DecoderLM
from jax_refvos.model.backbone.kv_cache import KVCache
from jax_refvos.model.backbone.lm_config import DecoderConfig
from jax_refvos.weights import hf
from jax_refvos.weights.torch_names import WeightMismatchError

TOL = 1e-5  # f32, same math in another order


def hf_state(cfg: DecoderConfig, seed: int = 0) -> dict[str, np.ndarray]:
    """Random weights under HF names and torch layout ([out, in]); norms/biases non-trivial."""
    rng = np.random.default_rng(seed)
    d, f, k = cfg.hidden_size, cfg.intermediate_size, cfg.head_dim
    n, m = cfg.num_attention_heads * k, cfg.num_key_value_heads * k
    w = lambda *s: (0.15 * rng.standard_normal(s)).astype(np.float32)
    state = {"model.embed_tokens.weight": w(cfg.vocab_size, d)}
    state["model.norm.weight"] = 1 + w(d)
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}."
        shapes = {"q": (n, d), "k": (m, d), "v": (m, d), "o": (d, n)}
        for name, shape in shapes.items():
            state[f"{p}self_attn.{name}_proj.weight"] = w(*shape)
            if (cfg.attention_bias and name != "o") or (cfg.o_proj_bias and name == "o"):
                state[f"{p}self_attn.{name}_proj.bias"] = w(shape[0])
        for name, shape in {"gate": (f, d), "up": (f, d), "down": (d, f)}.items():
            state[f"{p}mlp.{name}_proj.weight"] = w(*shape)
            if cfg.mlp_bias:
                state[f"{p}mlp.{name}_proj.bias"] = w(shape[0])
        state[f"{p}input_layernorm.weight"] = 1 + w(d)
        state[f"{p}post_attention_layernorm.weight"] = 1 + w(d)
    if not cfg.tie_word_embeddings:
        state["lm_head.weight"] = w(cfg.vocab_size, d)
    return state


# Jitted calls: eager dispatch compiles every primitive per shape and is slower on tiny models.
run = nnx.jit(lambda m, *a, **kw: m(*a, **kw), static_argnames=("output_hidden_states",))


def build(cfg: DecoderConfig, seed: int = 0) -> DecoderLM:
    model = DecoderLM(cfg, rngs=nnx.Rngs(1))
    hf.load_state(model, hf_state(cfg, seed))
    return model


def ids(cfg, b, n, seed=0):
    return jnp.asarray(np.random.default_rng(seed).integers(0, cfg.vocab_size, (b, n)), jnp.int32)


def rel(a, b):
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))) / np.max(np.abs(np.asarray(b))))


def test_shapes_and_hf_hidden_states_layout():
    cfg = lm_config.tiny_qwen2()
    model = build(cfg)
    out = run(model, ids(cfg, 2, 7), output_hidden_states=True)
    assert out.logits.shape == (2, 7, 97) and out.logits.dtype == jnp.float32
    hs = out.hidden_states
    assert len(hs) == cfg.num_hidden_layers + 1
    np.testing.assert_array_equal(hs[0], model.model.embed_tokens(ids(cfg, 2, 7)))
    np.testing.assert_array_equal(hs[-1], out.last_hidden_state)
    assert rel(model.hidden(ids(cfg, 2, 7)), hs[-1]) < TOL  # eager vs jit
    embeds = model.model.embed_tokens(ids(cfg, 2, 7))
    assert rel(run(model, inputs_embeds=embeds).logits, out.logits) < TOL
    # logits are the head applied to the last entry, and it is normed (not the raw layer output)
    assert rel(out.logits, hs[-1] @ model.lm_head.kernel[...]) < TOL
    norm = lambda h: np.sqrt(np.mean(np.asarray(h) ** 2, -1))
    np.testing.assert_allclose(norm(hs[-1] / model.model.norm.weight[...]), 1.0, rtol=1e-3)
    assert not np.allclose(norm(hs[-2]), 1.0, rtol=0.1)


def test_scan_and_remat_equal_loop():
    base = lm_config.tiny_qwen2()
    x = ids(base, 2, 6)

    @jax.jit
    def run(graphdef, params):
        def loss(params):
            out = nnx.merge(graphdef, params)(x, output_hidden_states=True)
            return jnp.sum(jnp.sin(out.logits)), out

        return jax.grad(loss, has_aux=True)(params)

    results = {}
    for scan, remat in [(False, False), (True, False), (False, True), (True, True)]:
        model = build(dataclasses.replace(base, scan_layers=scan, remat=remat))
        grads, out = run(*nnx.split(model))
        grads = nnx.to_pure_dict(grads)
        if not scan:  # stack per-layer grads like the scanned params
            layers = grads["model"]["layers"]
            grads["model"]["layers"] = jax.tree.map(lambda *a: jnp.stack(a), *layers.values())
        results[scan, remat] = out, grads
    ref_out, ref_grads = results[False, False]
    for key, (out, grads) in results.items():
        assert rel(out.logits, ref_out.logits) < TOL, key
        for a, b in zip(out.hidden_states, ref_out.hidden_states, strict=True):
            assert rel(a, b) < TOL, key
        for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads), strict=True):
            assert a.shape == b.shape and rel(a, b) < TOL, key


def test_padding_rows_match_unpadded():
    cfg = lm_config.tiny_qwen2()
    model = build(cfg)
    x = ids(cfg, 1, 5, seed=3)
    want = run(model, x).logits[0]
    left = jnp.concatenate([jnp.full((1, 3), 7, jnp.int32), x], axis=1)
    right = jnp.concatenate([x, jnp.full((1, 3), 7, jnp.int32)], axis=1)
    batch = jnp.concatenate([left, right])
    mask = jnp.array([[0, 0, 0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 0, 0, 0]])
    got = run(model, batch, attention_mask=mask).logits
    assert rel(got[0, 3:], want) < TOL
    assert rel(got[1, :5], want) < TOL
    assert np.all(np.isfinite(got))
    # without the mask the left-padded row differs (the mask matters)
    assert rel(run(model, left).logits[0, 3:], want) > 1e-3


@pytest.mark.parametrize("scan", [False, True])
def test_kv_cache_decoding_equals_full_forward(scan):
    cfg = lm_config.tiny_qwen2(scan_layers=scan)
    model = build(cfg)
    full_ids = ids(cfg, 2, 9, seed=5)
    # row 0 is left-padded by 2 in the cached run
    mask = jnp.ones((2, 9), bool).at[0, :2].set(False)
    want_row0 = run(model, full_ids[:1, 2:]).logits[0]
    want_row1 = run(model, full_ids[1:]).logits[0]
    cache = KVCache.init(cfg, 2, 12)
    out = run(model, full_ids[:, :4], attention_mask=mask[:, :4], cache=cache)
    logits, cache = [out.logits], out.cache
    for t in range(4, 9):
        out = run(model, full_ids[:, t : t + 1], cache=cache)
        logits.append(out.logits)
        cache = out.cache
    got = jnp.concatenate(logits, axis=1)
    assert int(cache.index) == 9
    np.testing.assert_array_equal(cache.next_pos, [7, 9])
    assert rel(got[0, 2:], want_row0) < TOL
    assert rel(got[1], want_row1) < TOL


def test_cache_with_jit_and_explicit_positions():
    cfg = lm_config.tiny_llama()
    model = build(cfg)
    x = ids(cfg, 1, 6, seed=2)
    pos = jnp.arange(6)[None] + 10  # shifted positions (e.g. after spliced tokens)
    want = run(model, x, positions=pos).logits
    out = run(model, x[:, :3], positions=pos[:, :3], cache=KVCache.init(cfg, 1, 8))
    assert int(out.cache.next_pos[0]) == 13
    got = [out.logits]
    cache = out.cache
    for t in range(3, 6):
        o = run(model, x[:, t : t + 1], cache=cache)
        got.append(o.logits)
        cache = o.cache
    assert rel(jnp.concatenate(got, 1), want) < TOL


def test_greedy_generate_equals_repeated_argmax():
    cfg = lm_config.tiny_qwen2()
    model = build(cfg, seed=4)
    prompt = ids(cfg, 3, 5, seed=6)
    # row 1 left-padded, row 2 right-padded, by 2
    mask = jnp.ones((3, 5), bool).at[1, :2].set(False).at[2, 3:].set(False)
    new = np.asarray(generate.generate(model, prompt, mask, max_new_tokens=6))
    # Reference: full forwards over a fixed-size buffer (causal, so the tail does not matter).
    for row, valid in [(0, slice(0, 5)), (1, slice(2, 5)), (2, slice(0, 3))]:
        n = valid.stop - valid.start
        buf = np.zeros((1, n + 6), np.int32)
        buf[0, :n] = prompt[row, valid]
        for i in range(6):
            buf[0, n + i] = int(jnp.argmax(run(model, jnp.asarray(buf)).logits[0, n + i - 1]))
        np.testing.assert_array_equal(new[row], buf[0, n:])
    # eos: row 0 stops after its 3rd token and is padded afterwards
    eos = int(new[0, 2])
    stopped = np.asarray(generate.generate(model, prompt, mask, 6, eos_id=eos, pad_id=-5))
    first = int(np.argmax(new[0] == eos))
    np.testing.assert_array_equal(stopped[0, : first + 1], new[0, : first + 1])
    assert np.all(stopped[0, first + 1 :] == -5)


def test_sampling_respects_top_k():
    cfg = lm_config.tiny_llama()
    model = build(cfg)
    prompt = ids(cfg, 2, 4)
    logits, _ = generate.prefill(model, prompt, max_len=5)
    top2 = np.asarray(jax.lax.top_k(logits, 2)[1])
    key = jax.random.key(3)
    sampled = [
        np.asarray(
            generate.generate(
                model,
                prompt,
                None,
                1,
                greedy=False,
                top_k=2,
                temperature=5.0,
                rng=jax.random.fold_in(key, i),
            )
        )
        for i in range(8)
    ]
    for s in sampled:
        for r in range(2):
            assert s[r, 0] in top2[r]
    assert len({int(s[0, 0]) for s in sampled} | {int(s[1, 0]) for s in sampled}) > 1


def test_bf16_compute_close_to_f32():
    cfg = lm_config.tiny_qwen2()
    x = ids(cfg, 2, 6)
    want = run(build(cfg), x).logits
    model = build(dataclasses.replace(cfg, dtype=jnp.bfloat16))
    assert model.model.layers[0].self_attn.q_proj.kernel[...].dtype == jnp.float32
    out = run(model, x, cache=KVCache.init(model.cfg, 2, 8))
    assert out.logits.dtype == jnp.float32 and out.cache.k.dtype == jnp.bfloat16
    assert rel(out.logits, want) < 3e-2  # bf16 activations, f32 params and statistics


def test_logical_axes_annotated():
    model = DecoderLM(lm_config.tiny_qwen2(), rngs=nnx.Rngs(0))
    axes = lambda v: v.get_metadata()["out_sharding"]
    layer = model.model.layers[0]
    assert axes(model.model.embed_tokens.embedding) == ("vocab", "embed")
    assert axes(layer.self_attn.q_proj.kernel) == ("embed", "heads")
    assert axes(layer.self_attn.q_proj.bias) == ("heads",)
    assert axes(layer.self_attn.k_proj.kernel) == ("embed", "kv_heads")
    assert axes(layer.self_attn.o_proj.kernel) == ("heads", "embed")
    assert axes(layer.mlp.gate_proj.kernel) == ("embed", "mlp")
    assert axes(layer.mlp.down_proj.kernel) == ("mlp", "embed")
    assert axes(layer.input_layernorm.weight) == ("embed",)
    assert axes(model.model.norm.weight) == ("embed",)
    assert axes(model.lm_head.kernel) == ("embed", "vocab")
    scanned = DecoderLM(lm_config.tiny_qwen2(scan_layers=True), rngs=nnx.Rngs(0))
    kernel = scanned.model.layers.self_attn.q_proj.kernel
    assert kernel.shape == (2, 32, 32) and axes(kernel) == (None, "embed", "heads")


@pytest.mark.parametrize("scan", [False, True])
def test_sharded_under_mesh(scan):
    cfg = lm_config.tiny_qwen2(vocab_size=96, scan_layers=scan)
    mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "model": 2})
    x = ids(cfg, 4, 6)
    want = run(build(cfg), x).logits
    model = build(cfg)
    sharding.place_state(model, mesh)
    layers = model.model.layers
    kernel = layers.self_attn.q_proj.kernel if scan else layers[0].self_attn.q_proj.kernel
    spec = tuple(kernel[...].sharding.spec)
    with jax.set_mesh(mesh):
        got = nnx.jit(lambda m, t: m(t).logits)(model, x)
    assert spec[-2:] == ("fsdp", "model")
    assert rel(got, want) < TOL


def write_safetensors(path, tensors):
    """Minimal safetensors writer (header JSON + raw little-endian bytes)."""
    names = {np.float32: "F32", ml_dtypes.bfloat16: "BF16"}
    header, blobs, offset = {}, [], 0
    for k, v in tensors.items():
        raw = np.ascontiguousarray(v).tobytes()
        header[k] = {
            "dtype": names[v.dtype.type],
            "shape": list(v.shape),
            "data_offsets": [offset, offset + len(raw)],
        }
        blobs.append(raw)
        offset += len(raw)
    h = json.dumps(header).encode()
    with open(path, "wb") as f:
        f.write(len(h).to_bytes(8, "little") + h + b"".join(blobs))


def hf_config(cfg: DecoderConfig) -> dict:
    return dict(
        model_type="qwen2",
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers,
        num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_key_value_heads,
        rms_norm_eps=cfg.rms_norm_eps,
        rope_parameters={"rope_theta": cfg.rope_theta, "rope_type": "default"},
        tie_word_embeddings=cfg.tie_word_embeddings,
        max_position_embeddings=cfg.max_position_embeddings,
    )


@pytest.mark.parametrize("scan", [False, True])
def test_load_causal_lm_bf16_sharded(tmp_path, scan):
    cfg = lm_config.tiny_qwen2()
    state = {k: v.astype(ml_dtypes.bfloat16) for k, v in hf_state(cfg).items()}
    (tmp_path / "config.json").write_text(json.dumps(hf_config(cfg)))
    keys = sorted(state)
    shards = {"a.safetensors": keys[::2], "b.safetensors": keys[1::2]}
    for name, part in shards.items():
        write_safetensors(tmp_path / name, {k: state[k] for k in part})
    weight_map = {k: name for name, part in shards.items() for k in part}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    read = hf.read_safetensors_dir(tmp_path)
    assert read["lm_head.weight"].dtype == np.float32
    np.testing.assert_array_equal(
        read["lm_head.weight"], state["lm_head.weight"].astype(np.float32)
    )
    model = hf.load_causal_lm(tmp_path, scan_layers=scan)
    ref = DecoderLM(cfg, rngs=nnx.Rngs(0))
    hf.load_state(ref, read)
    x = ids(cfg, 2, 5)
    assert rel(run(model, x).logits, run(ref, x).logits) < TOL


def test_loader_errors_name_the_file(tmp_path):
    cfg = lm_config.tiny_qwen2(num_hidden_layers=1)
    with pytest.raises(hf.CheckpointError, match="config.json"):
        hf.load_causal_lm(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(hf_config(cfg)))
    with pytest.raises(hf.CheckpointError, match="model.safetensors"):
        hf.load_causal_lm(tmp_path)
    state = hf_state(cfg)
    state["model.layers.0.extra.weight"] = state.pop("model.layers.0.mlp.up_proj.weight")
    write_safetensors(tmp_path / "model.safetensors", state)
    for scan in (False, True):
        with pytest.raises(
            WeightMismatchError,
            match=r"model\.safetensors.*missing keys \(1\): "
            r"model\.layers\.0\.mlp\.up_proj\.weight.*unexpected.*extra",
        ):
            hf.load_causal_lm(tmp_path, scan_layers=scan)


def test_truncated_safetensors_is_a_checkpoint_error_naming_the_file(tmp_path):
    from safetensors.numpy import save_file

    from jax_refvos.weights import hf

    f = tmp_path / "model.safetensors"
    save_file({"w": np.ones((4, 8), np.float32)}, str(f))
    data = f.read_bytes()
    f.write_bytes(data[:-16])
    with pytest.raises(hf.CheckpointError, match=r"model.safetensors: tensor w .*truncated"):
        hf.read_safetensors(f)
