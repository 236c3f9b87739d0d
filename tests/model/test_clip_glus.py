"""CLIP vision tower + GLUS visual tokens without torch: pooling layout, shapes, sharding, I/O."""

import json
import struct

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from flax import nnx
from jax.sharding import PartitionSpec as P

from jax_refvos import sharding
from jax_refvos.model.backbone import clip_preprocess, clip_vit, glus_projector
from jax_refvos.weights import clip as clip_convert
from jax_refvos.weights.hf import CheckpointError
from jax_refvos.weights.torch_names import torch_key_map

# Distinct sizes so a wrong axis cannot broadcast: width 24, 3 heads, MLP 40, 4 x 4 patches.
TINY = clip_vit.ClipVisionConfig(
    hidden_size=24,
    intermediate_size=40,
    num_hidden_layers=3,
    num_attention_heads=3,
    image_size=28,
    patch_size=7,
)


def test_avg_pool_groups_are_horizontal_strips_in_raster_order():
    # A 16 x 16 grid whose channels hold (row, column) of each patch, flattened row-major.
    rows, cols = np.meshgrid(np.arange(16.0), np.arange(16.0), indexing="ij")
    x = np.stack([rows.ravel(), cols.ravel()], -1)[None]  # [1, 256, 2]
    pooled = np.asarray(glus_projector.avg_pool_tokens(jnp.asarray(x), 4))
    assert pooled.shape == (1, 64, 2)
    m = np.arange(64)
    # Token m: row m // 4 (one row per strip, not a 2 x 2 block), columns 4(m % 4) .. +3.
    np.testing.assert_array_equal(pooled[0, :, 0], m // 4)
    np.testing.assert_array_equal(pooled[0, :, 1], 4 * (m % 4) + 1.5)
    # Generic check against an explicit loop; a tail shorter than the kernel is dropped (torch).
    y = np.random.default_rng(0).standard_normal((2, 18, 5)).astype(np.float32)
    want = np.stack([y[:, 4 * i : 4 * i + 4].mean(1) for i in range(4)], 1)
    np.testing.assert_allclose(glus_projector.avg_pool_tokens(jnp.asarray(y)), want, rtol=1e-6)
    assert glus_projector.avg_pool_tokens(jnp.asarray(y, jnp.bfloat16)).dtype == jnp.bfloat16


def test_select_features_drops_cls_of_the_penultimate_state():
    states = [jnp.full((2, 17, 3), float(i)) for i in range(4)]
    feats = glus_projector.select_features(states)
    assert feats.shape == (2, 16, 3) and float(feats[0, 0, 0]) == 2.0


def test_vit_l14_224_shapes_and_parameter_count_without_allocation():
    cfg = clip_vit.vit_large_patch14_224()
    model = nnx.eval_shape(lambda: glus_projector.ClipLlavaVision(cfg, 4096, rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(model)
    frames = jax.ShapeDtypeStruct((2, 224, 224, 3), jnp.float32)
    tokens = jax.eval_shape(lambda s, x: nnx.merge(graphdef, s)(x), state, frames)
    assert tokens.shape == (2, 64, 4096)
    tower = model.vision_tower.vision_tower
    tower_def, tower_state = nnx.split(tower)
    out = jax.eval_shape(lambda s, x: nnx.merge(tower_def, s)(x), tower_state, frames)
    assert out.last_hidden_state.shape == (2, 257, 1024) and out.pooler_output.shape == (2, 1024)
    assert len(out.hidden_states) == 25
    count = lambda m: sum(v.size for v in jax.tree.leaves(nnx.state(m, nnx.Param)))
    assert count(tower) == 303_179_776  # openai/clip-vit-large-patch14 vision_model
    assert count(model.mm_projector) == 1024 * 4096 + 4096


def test_parameters_carry_logical_axes():
    model = nnx.eval_shape(lambda: glus_projector.ClipLlavaVision(TINY, 32, rngs=nnx.Rngs(0)))
    vm = model.vision_tower.vision_tower.vision_model
    layer = vm.encoder.layers[1]
    axes = lambda v: v.get_metadata()["out_sharding"]
    assert axes(layer.self_attn.q_proj.kernel) == ("embed", "heads")
    assert axes(layer.self_attn.q_proj.bias) == ("heads",)
    assert axes(layer.self_attn.out_proj.kernel) == ("heads", "embed")
    assert axes(layer.mlp.fc1.kernel) == ("embed", "mlp")
    assert axes(layer.mlp.fc2.kernel) == ("mlp", "embed")
    assert axes(layer.layer_norm2.scale) == ("embed",)
    assert axes(vm.embeddings.class_embedding) == ("embed",)
    assert axes(vm.embeddings.patch_embedding.kernel) == (None, None, None, "embed")
    assert axes(vm.embeddings.position_embedding.embedding) == (None, "embed")
    assert axes(model.mm_projector.kernel) == (None, "embed")
    for path, var in nnx.iter_graph(model):
        if isinstance(var, nnx.Param):
            assert len(axes(var)) == var.get_value().ndim, path


def test_parameters_are_sharded_under_a_mesh():
    mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "model": 2})
    with jax.set_mesh(mesh), nnx.logical_axis_rules(sharding.PARAM_RULES):
        model = nnx.jit(lambda: clip_vit.ClipVisionModel(TINY, rngs=nnx.Rngs(0)))()
    fc1 = model.vision_model.encoder.layers[0].mlp.fc1.kernel
    assert fc1.get_value().sharding.spec == P("fsdp", "model")
    # The activation constraints resolve on the mesh, and sharding does not change the result.
    x = jnp.asarray(np.random.default_rng(3).standard_normal((4, 28, 28, 3)), jnp.float32)
    run = lambda m, x: m.hidden_state(x, -2)
    with jax.set_mesh(mesh):
        sharded = nnx.jit(run)(model, x)
    assert sharded.sharding.spec[0] == ("data", "fsdp")
    np.testing.assert_allclose(sharded, nnx.jit(run)(model, x), rtol=1e-5, atol=1e-5)


def test_penultimate_state_runs_fewer_layers_and_matches_the_full_call():
    # Jitted construction: eager op-by-op random init is slower on CPU.
    model = nnx.jit(lambda: clip_vit.ClipVisionModel(TINY, rngs=nnx.Rngs(1)))()
    x = jnp.asarray(np.random.default_rng(2).standard_normal((2, 28, 28, 3)), jnp.float32)
    out = nnx.jit(lambda m, x: m(x))(model, x)
    assert len(out.hidden_states) == 4
    np.testing.assert_array_equal(out.last_hidden_state, out.hidden_states[-1])
    state_of = nnx.jit(lambda m, x, i: m.hidden_state(x, i), static_argnums=2)
    for index in (-2, 0, 3):
        np.testing.assert_array_equal(state_of(model, x, index), out.hidden_states[index])
    # Only the layers an entry needs are traced: matmuls grow linearly with the index.
    matmuls = lambda i: str(jax.make_jaxpr(lambda x: model.hidden_state(x, i))(x)).count("dot_")
    assert matmuls(0) == 0 and matmuls(-2) == 2 * matmuls(1) > 0
    with pytest.raises(IndexError):
        model.hidden_state(x, 4)
    with pytest.raises(ValueError, match="28x28"):
        model(jnp.zeros((1, 14, 28, 3)))


def test_torch_keys_follow_lisa_names():
    vision = nnx.eval_shape(lambda: glus_projector.ClipLlavaVision(TINY, 8, rngs=nnx.Rngs(0)))
    keys = set(torch_key_map(vision))
    tower = "vision_tower.vision_tower.vision_model."
    assert {
        "mm_projector.weight",
        "mm_projector.bias",
        tower + "embeddings.class_embedding",
        tower + "embeddings.patch_embedding.weight",
        tower + "embeddings.position_embedding.weight",
        tower + "pre_layrnorm.weight",
        tower + "encoder.layers.2.self_attn.out_proj.bias",
        tower + "encoder.layers.2.mlp.fc2.weight",
        tower + "post_layernorm.bias",
    } <= keys
    assert len(keys) == 2 + 3 + 4 + 3 * 16
    proj = glus_projector.GlusProjector(24, 8, rngs=nnx.Rngs(0))
    assert set(torch_key_map(proj)) == {"mm_projector.weight", "mm_projector.bias"}


def test_from_hf_reads_vision_config_and_defaults():
    clip_config = {"model_type": "clip", "text_config": {"hidden_size": 7},
                   "vision_config": {"hidden_size": 1024, "intermediate_size": 4096,
                                     "num_hidden_layers": 24, "num_attention_heads": 16,
                                     "patch_size": 14}}  # fmt: skip
    assert clip_vit.from_hf(clip_config) == clip_vit.vit_large_patch14_224()
    base = clip_vit.from_hf({"hidden_act": "gelu"})  # transformers' ViT-B/32 defaults
    assert (base.hidden_size, base.patch_size, base.hidden_act) == (768, 32, "gelu")
    with pytest.raises(clip_vit.ClipConfigError, match="cfg.json: hidden_act 'relu'"):
        clip_vit.from_hf({"hidden_act": "relu"}, source="cfg.json")
    with pytest.raises(clip_vit.ClipConfigError, match="'llava' is not a CLIP config"):
        clip_vit.from_hf({"model_type": "llava", "hidden_size": 4096})
    with pytest.raises(clip_vit.ClipConfigError, match="not divisible"):
        clip_vit.from_hf({"num_attention_heads": 7})


def _write_safetensors(path, tensors: dict[str, np.ndarray], dtypes: dict[str, str]) -> None:
    header, blobs, offset = {"__metadata__": {"format": "pt"}}, [], 0
    for name, array in tensors.items():
        blob = np.ascontiguousarray(array).tobytes()
        header[name] = dict(dtype=dtypes[name], shape=list(array.shape),
                            data_offsets=[offset, offset + len(blob)])  # fmt: skip
        blobs.append(blob)
        offset += len(blob)
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def test_safetensors_reader_and_state_keys(tmp_path):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((3, 5)).astype(ml_dtypes.bfloat16)
    b = rng.standard_normal(4).astype(np.float16)
    _write_safetensors(
        tmp_path / "model.safetensors", {"a": a, "b.c": b}, {"a": "BF16", "b.c": "F16"}
    )
    (tmp_path / "config.json").write_text("{}")
    config, state = clip_convert.read_checkpoint_dir(tmp_path)
    assert config == {} and set(state) == {"a", "b.c"}
    assert state["a"].dtype == ml_dtypes.bfloat16
    np.testing.assert_array_equal(state["a"], a)
    np.testing.assert_array_equal(state["b.c"], b)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="no weights"):
        clip_convert.read_checkpoint_dir(tmp_path)
    # transformers 5.x CLIPVisionModel keys get the 4.x prefix; CLIPModel extras are dropped.
    one = np.zeros(1)
    assert set(clip_convert.vision_state({"embeddings.class_embedding": one})) == {
        "vision_model.embeddings.class_embedding"
    }
    full = {"vision_model.post_layernorm.bias": one, "text_model.x": one, "logit_scale": one,
            "visual_projection.weight": one,
            "vision_model.embeddings.position_ids": one}  # fmt: skip
    assert set(clip_convert.vision_state(full)) == {"vision_model.post_layernorm.bias"}


def test_preprocess_geometry_and_values():
    assert clip_preprocess.resized_shape(480, 854, 224) == (224, 398)  # int(398.53)
    assert clip_preprocess.resized_shape(854, 480, 224) == (398, 224)
    # A flat colour survives resize and crop exactly: (v / 255 - mean) / std per channel.
    image = np.broadcast_to(np.array([200, 10, 90], np.uint8), (123, 321, 3))
    got = clip_preprocess.preprocess(image)
    want = (np.array([200, 10, 90]) / 255 - np.array(clip_preprocess.CLIP_MEAN)) / np.array(
        clip_preprocess.CLIP_STD
    )
    assert got.shape == (224, 224, 3) and got.dtype == np.float32
    np.testing.assert_allclose(got, np.broadcast_to(want, got.shape), atol=1e-6)
    # Wide frames lose their left and right borders: a red left edge is cropped away.
    wide = np.zeros((100, 300, 3), np.uint8)
    wide[:, :60, 0] = 255
    assert np.all(clip_preprocess.preprocess(wide)[..., 0] < 0)
    assert clip_preprocess.preprocess_frames([wide, image]).shape == (2, 224, 224, 3)
    with pytest.raises(ValueError, match="RGB uint8"):
        clip_preprocess.preprocess(image.astype(np.float32))
