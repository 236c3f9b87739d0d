"""`refvos import-weights`: each kind imports, writes our weights dir, and loads back equal."""

import json
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import save_file
from shared_paths import VIRST_FIXTURE

from jax_refvos.main import import_weights
from jax_refvos.model.backbone import lm_config
from jax_refvos.weights import backbones, hf, weights_dir

sys.path.insert(0, str(Path(__file__).parent / "model"))
from test_decoder_lm import hf_config, hf_state  # noqa: E402

FIXTURE = VIRST_FIXTURE


def write_lm_dir(path: Path, cfg, state: dict, extra_config: dict | None = None) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({**hf_config(cfg), **(extra_config or {})}))
    save_file(
        {k: np.ascontiguousarray(v) for k, v in state.items()}, str(path / "model.safetensors")
    )
    return path


def run(*args) -> int:
    return import_weights.main(list(args))


def test_hf_lm_round_trip(tmp_path):
    cfg = lm_config.tiny_qwen2()
    src = write_lm_dir(tmp_path / "src", cfg, hf_state(cfg))
    out = tmp_path / "w"
    assert run("--kind", "hf-lm", "--src", str(src), "--out_dir", str(out)) == 0
    lm = backbones.load_backbone(out)["lm"]
    ids = jnp.arange(12, dtype=jnp.int32).reshape(2, 6) % cfg.vocab_size
    want = hf.load_causal_lm(src)(ids).logits
    np.testing.assert_array_equal(lm(ids).logits, want)
    assert weights_dir.read_meta(out)["kind"] == "hf-lm"
    # an existing output is never overwritten by accident
    assert run("--kind", "hf-lm", "--src", str(src), "--out_dir", str(out)) == 2


def _with_peft_lora(state: dict, cfg, rank: int, seed: int = 3) -> dict:
    """The state as peft saves it with adapters on q_proj/v_proj (prefix, base_layer, .default)."""
    rng = np.random.default_rng(seed)
    out = {}
    for key, value in state.items():
        module = key.rsplit(".", 1)[0]
        if module.endswith(("q_proj", "v_proj")):
            key = f"{module}.base_layer.{key.rsplit('.', 1)[1]}"
            if key.endswith("weight"):
                o, i = value.shape
                a = (0.1 * rng.standard_normal((rank, i))).astype(np.float32)
                b = (0.1 * rng.standard_normal((o, rank))).astype(np.float32)
                out[f"base_model.model.{module}.lora_A.default.weight"] = a
                out[f"base_model.model.{module}.lora_B.default.weight"] = b
        out["base_model.model." + key] = value
    return out


def test_lora_merge_equals_keep_and_needs_alpha(tmp_path):
    cfg = lm_config.tiny_llama()
    base = hf_state(cfg)
    src = write_lm_dir(tmp_path / "src", cfg, _with_peft_lora(base, cfg, rank=4),
                       {"model_type": "llama"})  # fmt: skip
    assert run("--kind", "hf-lm", "--src", str(src), "--out_dir", str(tmp_path / "x")) == 2
    assert not (tmp_path / "x").exists()
    common = ("--kind", "hf-lm", "--src", str(src), "--lora_alpha", "8")
    assert run(*common, "--out_dir", str(tmp_path / "merged")) == 0
    assert run(*common, "--lora", "keep", "--out_dir", str(tmp_path / "kept")) == 0
    merged = backbones.load_backbone(tmp_path / "merged")["lm"]
    kept = backbones.load_backbone(tmp_path / "kept")["lm"]
    plain = backbones.load_backbone(tmp_path / "merged")["lm"]  # noqa: F841 (reload works twice)
    ids = jnp.arange(10, dtype=jnp.int32).reshape(1, 10)
    a, b = np.asarray(merged(ids).logits), np.asarray(kept(ids).logits)
    assert np.abs(a - b).max() <= 1e-5 * np.abs(a).max()
    meta = weights_dir.read_meta(tmp_path / "kept")
    assert meta["lora"] == {
        "rank": 4,
        "alpha": 8.0,
        "targets": ["q_proj", "v_proj"],
        "mode": "keep",
    }
    # the adapters changed the model (the test would pass on ignored adapters otherwise)
    no_lora = write_lm_dir(tmp_path / "base", cfg, base, {"model_type": "llama"})
    assert np.abs(np.asarray(hf.load_causal_lm(no_lora)(ids).logits) - a).max() > 1e-3


def test_bad_source_is_one_clear_error(tmp_path, capsys):
    assert (
        run("--kind", "hf-lm", "--src", str(tmp_path / "nope"), "--out_dir", str(tmp_path / "o"))
        == 2
    )
    assert "not a directory" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert (
        run("--kind", "clip", "--src", str(tmp_path / "empty"), "--out_dir", str(tmp_path / "o"))
        == 2
    )
    assert "config.json" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


@pytest.mark.skipif(not FIXTURE.exists(), reason="shared VIRST fixture not present")
def test_videochat_flash_from_the_virst_fixture(tmp_path):
    """VIRST's checkpoint holds the VideoChat-Flash backbone (plus SAM2 / fusion keys, ignored)."""
    src = tmp_path / "virst"
    src.mkdir()
    (src / "config.json").write_text((FIXTURE / "config_llm_virst.json").read_text())
    (src / "model.safetensors").symlink_to(FIXTURE / "virst_tiny.safetensors")
    out = tmp_path / "w"
    args = ("--kind", "videochat-flash", "--src", str(src), "--out_dir", str(out))
    assert run(*args, "--vision_config", str(FIXTURE / "config_umt_tiny.json")) == 0
    parts = backbones.load_backbone(out)
    assert set(parts) == {"vision", "projector", "lm"}
    acts = np.load(FIXTURE / "activations.npz")
    proj = parts["projector"](jnp.asarray(acts["eval_umt_out"]))
    ref = acts["eval_proj_out"]
    assert np.abs(np.asarray(proj) - ref).max() <= 1e-5 * np.abs(ref).max()
    hidden = parts["lm"](inputs_embeds=jnp.asarray(acts["eval_llm_inputs_embeds"])[None],
                         output_hidden_states=True).hidden_states[-1][0]  # fmt: skip
    want = acts["eval_llm_hidden_states"][-1]
    assert np.abs(np.asarray(hidden) - want).max() <= 1e-5 * np.abs(want).max()
    assert weights_dir.read_meta(out)["components"]["lm"]["config"]["vocab_size"] == 151647


def torch_layout_state(module, prefix: str) -> dict:
    """Our module's variables as a torch state dict (inverse of torch_names' layout rules)."""
    from flax import nnx

    from jax_refvos.weights.torch_names import torch_key_map

    nodes = dict(nnx.iter_graph(module))
    parents = {id(v): nodes[p[:-1]] for p, v in nodes.items() if isinstance(v, nnx.Variable)}
    out = {}
    for key, (var, _) in torch_key_map(module).items():
        value = np.asarray(var.get_value())
        parent = parents[id(var)]
        if isinstance(parent, nnx.Linear) and key.endswith("weight"):
            value = value.T
        elif isinstance(parent, nnx.Conv) and key.endswith("weight"):
            value = value.transpose(3, 2, 0, 1)
        out[prefix + key] = np.ascontiguousarray(value, np.float32)
    return out


def test_lisa_backbone(tmp_path):
    from flax import nnx

    from jax_refvos.model.backbone.clip_vit import ClipVisionConfig
    from jax_refvos.model.backbone.glus_projector import ClipLlavaVision

    lm_cfg = lm_config.tiny_llama()
    clip_cfg = ClipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                                num_attention_heads=4, image_size=56, patch_size=14)  # fmt: skip
    vision = ClipLlavaVision(clip_cfg, out_dim=lm_cfg.hidden_size, rngs=nnx.Rngs(5))
    state = {**hf_state(lm_cfg), **torch_layout_state(vision, "model.")}
    state["model.visual_model.image_encoder.patch_embed.proj.weight"] = np.ones(
        (2, 3, 4, 4), np.float32
    )
    src = write_lm_dir(tmp_path / "lisa", lm_cfg, state, {"model_type": "llava"})
    vision_json = tmp_path / "clip.json"
    vision_json.write_text(json.dumps({"model_type": "clip_vision_model", "hidden_size": 32,
                                       "intermediate_size": 64, "num_hidden_layers": 3,
                                       "num_attention_heads": 4, "image_size": 56,
                                       "patch_size": 14}))  # fmt: skip
    out = tmp_path / "w"
    assert run("--kind", "lisa", "--src", str(src), "--out_dir", str(out),
               "--vision_config", str(vision_json)) == 0  # fmt: skip
    parts = backbones.load_backbone(out)
    frames = jnp.asarray(np.random.default_rng(0).normal(size=(2, 56, 56, 3)), jnp.float32)
    np.testing.assert_allclose(parts["vision"](frames), vision(frames), rtol=1e-6, atol=1e-6)
    assert parts["vision"](frames).shape == (2, 4, lm_cfg.hidden_size)
    ids = jnp.arange(8, dtype=jnp.int32)[None]
    want = hf.load_causal_lm(write_lm_dir(tmp_path / "lm", lm_cfg, hf_state(lm_cfg),
                                          {"model_type": "llama"}))(ids).logits  # fmt: skip
    np.testing.assert_array_equal(parts["lm"](ids).logits, want)
