"""Test session setup: CPU backend with 8 fake devices, set before anything initialises JAX."""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import jax  # noqa: E402

jax.config.update("jax_num_cpu_devices", 8)


def _import_torchvision_for_cpu_torch() -> None:
    """Import torchvision once, the way that works with the CPU torch wheel (parity tests only).

    PyPI torchvision links CUDA ops and its fake-kernel registration fails against CPU torch
    (shared/reference/jax_stack.md §8). Skipping that registration makes the import succeed; the
    references (sam2, transformers) use no torchvision C ops. This must be the first import of
    torchvision in the process: a failed plain import leaves half-registered ops behind, which is
    why it happens here and not in the test modules (xdist runs many modules per process).
    """
    try:
        import torch
    except ImportError:
        return
    import warnings

    orig = torch.library.register_fake
    torch.library.register_fake = lambda *a, **k: lambda f: f
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import torchvision  # noqa: F401
    except Exception:  # no usable torchvision: transformers then works without it
        import sys

        sys.modules["torchvision"] = None
    finally:
        torch.library.register_fake = orig


_import_torchvision_for_cpu_torch()
