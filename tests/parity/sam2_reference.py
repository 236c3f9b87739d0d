"""The PyTorch reference for SAM2 parity tests: the `sam2` 1.1.0 package, random weights, CPU.

Import this only after `pytest.importorskip("torch")` and `pytest.importorskip("sam2")`.
Weights are seeded and then perturbed (`randomize_`) so that zero-initialised biases, LayerNorm
shifts and layer-scales are tested too; a test that needs the object present biases the
object-score head itself.
"""

import functools
import warnings

import numpy as np
import torch


@functools.cache
def _import_sam2():
    # PyPI torchvision links CUDA ops; with CPU torch its fake-kernel registration fails.
    # Skip that registration (shared/reference/jax_stack.md §8); sam2 needs no torchvision C ops.
    orig = torch.library.register_fake
    torch.library.register_fake = lambda *a, **k: lambda f: f
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import torchvision  # noqa: F401
    finally:
        torch.library.register_fake = orig
    import sam2.build_sam

    return sam2.build_sam


def randomize_(module: torch.nn.Module, seed: int, scale: float = 0.02) -> torch.nn.Module:
    """Add N(0, scale²) noise to every parameter and float buffer (deterministic in `seed`)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in list(module.parameters()) + list(module.buffers()):
            if tensor.dtype.is_floating_point:
                tensor.add_(torch.randn(tensor.shape, generator=gen) * scale)
    return module


def build_reference(
    model_cfg: str = "sam2.1_hiera_t", *, image_size: int = 256, seed: int = 0, video=True
):
    """A random-weight `SAM2VideoPredictor` (or `SAM2Base` if `video=False`) in eval mode, CPU.

    `model_cfg` is a bundled yaml stem, e.g. "sam2.1_hiera_t" or "sam2_hiera_s".
    """
    build = _import_sam2()
    folder = "sam2.1" if model_cfg.startswith("sam2.1") else "sam2"
    config_file = f"configs/{folder}/{model_cfg}.yaml"
    overrides = [f"++model.image_size={image_size}"]
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if video:
            model = build.build_sam2_video_predictor(
                config_file, ckpt_path=None, device="cpu", hydra_overrides_extra=overrides
            )
        else:
            model = build.build_sam2(
                config_file, ckpt_path=None, device="cpu", hydra_overrides_extra=overrides
            )
    randomize_(model, seed)
    return model.eval()


def state_dict_numpy(module: torch.nn.Module, prefix: str = "") -> dict[str, np.ndarray]:
    """`module.state_dict()` restricted to keys under `prefix` (stripped), as float32 numpy."""
    out = {}
    for key, value in module.state_dict().items():
        if key.startswith(prefix):
            out[key[len(prefix) :]] = value.detach().float().numpy()
    return out


def to_numpy(x: torch.Tensor) -> np.ndarray:
    return x.detach().float().numpy()


def nchw_to_nhwc(x) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(x).transpose(0, 2, 3, 1))


def nhwc_to_nchw(x) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(np.asarray(x).transpose(0, 3, 1, 2)))
