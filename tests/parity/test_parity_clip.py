"""Parity of the CLIP vision tower, GLUS visual tokens and CLIP preprocessing with transformers.

Tiny random CLIP (width 64, 3 layers, 4 heads, 56 px, patch 14 -> 16 patches + CLS), with
LayerNorms, biases, CLS and position embeddings perturbed so none is trivial; saved with
`save_pretrained` (float32 and bfloat16) and loaded with `weights.clip.load_clip_vision`.
Tolerance: max|ours - torch| <= 1e-4 * max|torch| per output, float32 compute (measured
~1e-6); preprocessing must be bit-exact up to 1e-6.
"""

import numpy as np
import pytest

pytestmark = pytest.mark.parity

torch = pytest.importorskip("torch")
# torchvision is imported for CPU torch by tests/conftest.py (see there).
transformers = pytest.importorskip("transformers")

import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402

from jax_refvos.model.backbone import clip_preprocess, clip_vit, glus_projector  # noqa: E402
from jax_refvos.weights import clip as clip_convert  # noqa: E402
from jax_refvos.weights.hf import CheckpointError  # noqa: E402
from jax_refvos.weights.torch_names import WeightMismatchError, load_torch_state  # noqa: E402

REL = 1e-4
TINY = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=3,
    num_attention_heads=4,
    image_size=56,
    patch_size=14,
    hidden_act="quick_gelu",
)


def _perturb(module, seed: int):
    """Adds 0.1 * randn to every norm, bias and embedding so a mis-mapped one shows."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            if "norm" in name or "layrnorm" in name or "bias" in name or "embedding" in name:
                p.add_(0.1 * torch.randn(p.shape, generator=gen))
    return module.eval()


def _tiny_vision(seed: int = 0):
    torch.manual_seed(seed)
    return _perturb(transformers.CLIPVisionModel(transformers.CLIPVisionConfig(**TINY)), seed)


def _pixels(b: int = 2, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((b, 56, 56, 3)).astype(np.float32)


def _reference(model, pixels: np.ndarray):
    with torch.no_grad():
        x = torch.from_numpy(pixels).permute(0, 3, 1, 2)
        return model(pixel_values=x, output_hidden_states=True)


def _check(name: str, got, want, rel: float = REL) -> float:
    got, want = np.asarray(got, np.float32), want.detach().float().numpy()
    assert got.shape == want.shape, (name, got.shape, want.shape)
    assert np.std(want) > 0.1, f"{name}: reference output is trivial"
    err = float(np.abs(got - want).max() / np.abs(want).max())
    assert err <= rel, f"{name}: relative error {err:.2e} > {rel}"
    return err


def _check_all(ours, ref, pixels) -> None:
    out = nnx.jit(lambda m, x: m(x))(ours, jnp.asarray(pixels))
    assert len(out.hidden_states) == len(ref.hidden_states) == TINY["num_hidden_layers"] + 1
    for i, (got, want) in enumerate(zip(out.hidden_states, ref.hidden_states, strict=True)):
        _check(f"hidden_states[{i}]", got, want)
    _check("last_hidden_state", out.last_hidden_state, ref.last_hidden_state)
    _check("pooler_output", out.pooler_output, ref.pooler_output)


@pytest.mark.parametrize("torch_dtype", ["float32", "bfloat16"])
def test_vision_model_matches_transformers(tmp_path, torch_dtype):
    reference = _tiny_vision().to(getattr(torch, torch_dtype))
    reference.save_pretrained(tmp_path)
    # A bf16 checkpoint holds rounded weights; the reference computes with those in f32.
    reference = reference.float()
    ours = clip_convert.load_clip_vision(tmp_path)
    assert ours.config == clip_vit.ClipVisionConfig(**TINY)
    pixels = _pixels()
    _check_all(ours, _reference(reference, pixels), pixels)


def test_bfloat16_compute_is_within_bfloat16_rounding(tmp_path):
    # torch's own bf16 run of this model is 1.0e-2 (relative) off its f32 run; ours 1.0e-2.
    reference = _tiny_vision()
    reference.save_pretrained(tmp_path)
    ours = clip_convert.load_clip_vision(tmp_path, dtype=jnp.bfloat16)
    pixels = _pixels()
    out = nnx.jit(lambda m, x: m(x))(ours, jnp.asarray(pixels))
    assert out.last_hidden_state.dtype == jnp.bfloat16
    ref = _reference(reference, pixels)
    for i, (got, want) in enumerate(zip(out.hidden_states, ref.hidden_states, strict=True)):
        _check(f"bf16 hidden_states[{i}]", got, want, rel=3e-2)


def test_full_clip_model_checkpoint(tmp_path):
    torch.manual_seed(3)
    text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                vocab_size=99, max_position_embeddings=16)  # fmt: skip
    config = transformers.CLIPConfig(text_config=text, vision_config=TINY, projection_dim=16)
    reference = _perturb(transformers.CLIPModel(config), seed=3)
    reference.save_pretrained(tmp_path)
    pixels = _pixels(seed=4)
    want = _reference(reference.vision_model, pixels)
    _check_all(clip_convert.load_clip_vision(tmp_path), want, pixels)
    # The same as a torch.save'd pytorch_model.bin holding the persistent `position_ids`
    # buffers of checkpoints written by transformers < 4.31 (openai/clip-vit-large-patch14).
    (tmp_path / "model.safetensors").unlink()
    state = reference.state_dict()
    for tower in ("text_model", "vision_model"):
        n = getattr(reference, tower).embeddings.position_embedding.num_embeddings
        state[f"{tower}.embeddings.position_ids"] = torch.arange(n)[None]
    torch.save(state, tmp_path / "pytorch_model.bin")
    _check_all(clip_convert.load_clip_vision(tmp_path), want, pixels)


def test_glus_visual_tokens_match_torch_pipeline():
    reference = _tiny_vision(seed=5)
    projector = torch.nn.Linear(TINY["hidden_size"], 48)
    with torch.no_grad():
        projector.bias.normal_()
    pixels = _pixels(seed=6)
    with torch.no_grad():
        feats = _reference(reference, pixels).hidden_states[-2][:, 1:]
        pooled = torch.nn.AvgPool1d(kernel_size=4, stride=4)(feats.permute(0, 2, 1))
        want = projector(pooled.permute(0, 2, 1))
    ours = nnx.eval_shape(
        lambda: glus_projector.ClipLlavaVision(
            clip_vit.ClipVisionConfig(**TINY), 48, rngs=nnx.Rngs(0)
        )
    )
    vision = clip_convert.vision_state({k: v.numpy() for k, v in reference.state_dict().items()})
    state = {f"vision_tower.vision_tower.{k}": v for k, v in vision.items()}
    state |= {f"mm_projector.{k}": v.detach().numpy() for k, v in projector.state_dict().items()}
    load_torch_state(ours, state)
    got = nnx.jit(lambda m, x: m(x))(ours, jnp.asarray(pixels))
    assert got.shape == (2, 4, 48)
    _check("glus tokens", got, want)
    # The standalone projector (LISA key `model.mm_projector.*` without `model.`) agrees.
    proj = nnx.eval_shape(lambda: glus_projector.GlusProjector(64, 48, rngs=nnx.Rngs(0)))
    load_torch_state(proj, {k: v for k, v in state.items() if k.startswith("mm_projector.")})
    _check("GlusProjector", proj(jnp.asarray(feats.numpy())), want)


def test_loader_errors_name_the_checkpoint(tmp_path):
    _tiny_vision().save_pretrained(tmp_path)
    state = clip_convert.read_checkpoint_dir(tmp_path)[1]
    cfg = clip_vit.ClipVisionConfig(**TINY)
    extra = dict(state) | {"encoder.layers.0.self_attn.extra.weight": np.zeros(3, np.float32)}
    with pytest.raises(WeightMismatchError, match="unexpected keys.*self_attn.extra.weight"):
        clip_convert.load_clip_vision(extra, cfg)
    with pytest.raises(WeightMismatchError, match=f"{tmp_path}.*missing keys.*mlp.fc2.bias"):
        clip_convert.load_clip_vision(
            tmp_path, clip_vit.ClipVisionConfig(**TINY | {"num_hidden_layers": 4})
        )
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=f"{tmp_path}: no weights"):
        clip_convert.load_clip_vision(tmp_path)


@pytest.mark.parametrize("shape", [(300, 451), (451, 300), (100, 80), (224, 224)])
def test_preprocess_matches_clip_image_processor(shape):
    processor_cls = getattr(transformers, "CLIPImageProcessorPil", None)
    if processor_cls is None:  # transformers 4.x: the default class is the PIL one
        processor_cls = transformers.CLIPImageProcessor
    image = np.random.default_rng(sum(shape)).integers(0, 256, (*shape, 3), dtype=np.uint8)
    want = processor_cls()(images=image, return_tensors="np")["pixel_values"][0]
    got = clip_preprocess.preprocess(image)
    assert got.dtype == np.float32 and got.shape == (224, 224, 3)
    np.testing.assert_allclose(got, want.transpose(1, 2, 0), rtol=0, atol=1e-6)
