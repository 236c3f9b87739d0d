"""`refvos import-weights --kind virst`: the tiny VIRST fixture -> weights dir -> modules.

The fixture's state dict (`shared/fixtures/virst_tiny_dev`, official code, fp16-exact random
weights) is imported through the CLI, loaded back with `virst.load_virst`, and checked:

- every tensor of the file lands in exactly one variable, with its value (layout applied);
- one output per component against the official activations (relative error
  max|Δ| / max|ref| <= REL_TOL; measured 1e-7..1e-6): projector (UMT tokens -> visual tokens),
  LM (hidden states from the spliced input embeddings), Initial ST-Fusion, SegPrompter; the
  occupancy head against numpy; SAM2 by value only (its image encoder at 1024 px is slow here);
- a `.pt` written like VIRST's (`{"model_state_dict": ...}` of the peft model, with LoRA
  adapters) imports with the adapters merged (alpha 16) or kept, built without torch by the
  pickle assembler of `tests/weights/test_torch_pickle.py`;
- an unknown and a missing key are errors naming the file and the key.
"""

import json
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import save_file
from shared_paths import QWEN2_TOKENIZER
from shared_paths import VIRST_FIXTURE as FIXTURE

from jax_refvos.errors import InputError
from jax_refvos.main import import_weights
from jax_refvos.methods.virst import weights as virst
from jax_refvos.weights import hf, weights_dir
from jax_refvos.weights.torch_names import WeightMismatchError, torch_key_map

sys.path.insert(0, str(Path(__file__).parents[2] / "weights"))
from test_torch_pickle import state_pickle, tensor, write_archive  # noqa: E402

TOKENIZER = QWEN2_TOKENIZER
SAFETENSORS = FIXTURE / "virst_tiny.safetensors"
CONFIG = FIXTURE / "config_llm_virst.json"
YAML = FIXTURE / "sam2.1_hiera_tiny_virst_fixture.yaml"
UMT = FIXTURE / "config_umt_tiny.json"
REL_TOL = 1e-4
LM_PREFIX = {"lm": ""}

pytestmark = pytest.mark.skipif(
    not (SAFETENSORS.exists() and TOKENIZER.is_dir()), reason="VIRST tiny fixture not present"
)


def rel_err(got, want) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.abs(got - want).max() / np.abs(want).max())


def run_import(src: Path, out: Path, *extra: str) -> int:
    args = ["--kind", "virst", "--src", str(src), "--config", str(CONFIG), "--out_dir", str(out)]
    args += ["--sam2_config", str(YAML), "--vision_config", str(UMT)]
    return import_weights.main([*args, "--tokenizer", str(TOKENIZER), *extra])


@pytest.fixture(scope="module")
def state():
    return hf.read_safetensors(SAFETENSORS)  # float32


@pytest.fixture(scope="module")
def acts():
    return np.load(FIXTURE / "activations.npz")


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    out = tmp_path_factory.mktemp("virst") / "w"
    assert run_import(SAFETENSORS, out) == 0
    return out, virst.load_virst(out)


def test_every_tensor_lands_once_with_its_value(imported, state):
    out, modules = imported
    meta = weights_dir.read_meta(out)
    assert meta["kind"] == "virst" and "lora" not in meta
    assert set(modules) == set(virst.PREFIXES) | {"lm"}
    used = []
    for name, module in modules.items():
        prefix = {**virst.PREFIXES, **LM_PREFIX}[name]
        for key, (var, fn) in torch_key_map(module).items():
            np.testing.assert_array_equal(np.asarray(var.get_value()), fn(state[prefix + key]))
            used.append(prefix + key)
    assert sorted(used) == sorted(state)  # each tensor once, nothing left over
    assert sorted(p.name for p in (out / "tokenizer").iterdir()) == sorted(
        n for n in virst.TOKENIZER_FILES if (TOKENIZER / n).is_file()
    )


def test_components_reproduce_the_official_activations(imported, state, acts):
    m = imported[1]
    proj = nnx.jit(lambda p, x: p(x))(m["projector"], jnp.asarray(acts["eval_umt_out"]))
    assert rel_err(proj, acts["eval_proj_out"]) < REL_TOL, rel_err(proj, acts["eval_proj_out"])

    out = m["lm"].forward(
        inputs_embeds=jnp.asarray(acts["eval_llm_inputs_embeds"])[None], output_hidden_states=True
    )
    ref = acts["eval_llm_hidden_states"]
    assert rel_err(out.hidden_states[1][0], ref[1]) < REL_TOL, rel_err(
        out.hidden_states[1][0], ref[1]
    )
    assert rel_err(out.last_hidden_state[0], ref[2]) < REL_TOL, rel_err(
        out.last_hidden_state[0], ref[2]
    )

    fused = m["initial_seg_fusion"].fuse(
        jnp.asarray(acts["isf_isf_in_seg_embeds"]), jnp.asarray(acts["isf_isf_vision_tokens_256"])
    )
    assert rel_err(fused, acts["isf_isf_out"]) < REL_TOL, rel_err(fused, acts["isf_isf_out"])

    memory = acts["eval_segp_memory"].reshape(1, 12, 64, 256)  # (t s) b c, b = 1
    decode = nnx.jit(lambda p, q, mem: p.decode(q, mem))
    prompts = decode(m["seg_prompter"], jnp.asarray(acts["eval_segp_in_seg_token"]), memory)
    assert rel_err(prompts.prompts, acts["eval_segp_out"]) < REL_TOL, rel_err(
        prompts.prompts, acts["eval_segp_out"]
    )

    x = acts["eval_segp_out"][0, :, 0]  # any 256-d tokens
    want = x @ state["model.occ_predictor.weight"].T + state["model.occ_predictor.bias"]
    assert rel_err(m["occ_predictor"](jnp.asarray(x)), want) < 1e-6


def _lora_pt(path: Path, state: dict, rank: int = 2) -> tuple[Path, dict]:
    """VIRST's checkpoint layout: peft keys (base_layer, lora_A/B.default) on the LM's q/v proj,
    `base_model.model.` in front, saved as fp16 under "model_state_dict"."""
    rng = np.random.default_rng(0)
    peft = {}
    for key, value in state.items():
        if key.startswith("model.layers.") and key.rsplit(".", 2)[-2] in ("q_proj", "v_proj"):
            module, leaf = key.rsplit(".", 1)
            peft[f"{module}.base_layer.{leaf}"] = value
            if leaf == "weight":
                out_dim, in_dim = value.shape
                peft[f"{module}.lora_A.default.weight"] = rng.normal(size=(rank, in_dim)) * 0.1
                peft[f"{module}.lora_B.default.weight"] = rng.normal(size=(out_dim, rank)) * 0.1
        else:
            peft[key] = value
    peft = {k: np.asarray(v, np.float16) for k, v in peft.items()}
    items, storages = {}, {}
    for n, (key, value) in enumerate(peft.items()):
        stride = tuple(int(s) for s in np.array(value.strides) // value.itemsize)
        items["base_model.model." + key] = tensor(
            "HalfStorage", str(n), value.size, 0, value.shape, stride
        )
        storages[str(n)] = np.ascontiguousarray(value).tobytes()
    write_archive(path, state_pickle(items, key="model_state_dict"), storages)
    return path, {k: v.astype(np.float32) for k, v in peft.items()}


def test_pt_checkpoint_with_lora_merge_and_keep(tmp_path, state, imported):
    pt, peft = _lora_pt(tmp_path / "virst.pt", state)
    out = tmp_path / "merged"
    assert run_import(pt, out) == 0
    merged = virst.load_virst(out)
    assert weights_dir.read_meta(out)["lora"]["alpha"] == 16.0
    q = "model.layers.1.self_attn.q_proj"
    a, b = peft[f"{q}.lora_A.default.weight"], peft[f"{q}.lora_B.default.weight"]
    want = peft[f"{q}.base_layer.weight"] + (16.0 / 2) * b @ a
    got = merged["lm"].model.layers[1].self_attn.q_proj.kernel.get_value()
    np.testing.assert_allclose(np.asarray(got).T, want, rtol=1e-6, atol=1e-6)
    # the untouched components equal the safetensors import
    occ, ref = merged["occ_predictor"], imported[1]["occ_predictor"]
    np.testing.assert_array_equal(occ.kernel.get_value(), ref.kernel.get_value())

    kept_dir = tmp_path / "kept"
    assert run_import(pt, kept_dir, "--lora", "keep") == 0
    kept = virst.load_virst(kept_dir)["lm"]
    ids = jnp.arange(8, dtype=jnp.int32)[None]
    np.testing.assert_allclose(kept.hidden(ids), merged["lm"].hidden(ids), rtol=1e-4, atol=1e-5)


def _with(state: dict, path: Path, drop: str | None = None, add: str | None = None) -> Path:
    changed = {k: np.asarray(v, np.float16) for k, v in state.items() if k != drop}
    if add:
        changed[add] = np.zeros(3, np.float16)
    save_file(changed, str(path))
    return path


def test_unknown_and_missing_keys_name_the_file(tmp_path, state):
    extra = _with(state, tmp_path / "extra.safetensors", add="model.mystery_head.weight")
    with pytest.raises(WeightMismatchError, match=r"extra\.safetensors.*mystery_head\.weight"):
        virst.import_virst(extra, CONFIG, sam2_yaml=YAML, vision_config=UMT)
    inside = _with(state, tmp_path / "inside.safetensors", add="model.seg_prompter.extra.bias")
    with pytest.raises(WeightMismatchError, match=r"inside\.safetensors.*unexpected.*extra\.bias"):
        virst.import_virst(inside, CONFIG, sam2_yaml=YAML, vision_config=UMT)
    gone = "model.occ_predictor.bias"
    missing = _with(state, tmp_path / "missing.safetensors", drop=gone)
    with pytest.raises(WeightMismatchError, match=r"missing\.safetensors.*missing keys.*bias"):
        virst.import_virst(missing, CONFIG, sam2_yaml=YAML, vision_config=UMT)
    # the default SAM2 (SAM2.1-L, as released) does not fit the tiny fixture's tensors
    with pytest.raises(WeightMismatchError, match=r"model\.seg_model\."):
        virst.import_virst(SAFETENSORS, CONFIG, vision_config=UMT)


def test_cli_errors(tmp_path):
    out = tmp_path / "w"
    args = ["--kind", "virst", "--src", str(SAFETENSORS), "--out_dir", str(out)]
    assert import_weights.main(args) == 2  # no --config
    assert import_weights.main([*args, "--config", str(CONFIG)]) == 2  # no tokenizer next to it
    assert not out.exists()
    src_dir = ["--kind", "hf-lm", "--src", str(tmp_path), "--out_dir", str(out)]
    assert import_weights.main([*src_dir, "--config", str(CONFIG)]) == 2
    cfg = tmp_path / "bad.json"
    cfg.write_text(json.dumps({"hidden_size": 32, "mm_projector_type": "mlp2x_gelu"}))
    with pytest.raises(InputError, match=r"bad\.json.*tome16"):
        virst.import_virst(SAFETENSORS, cfg)
