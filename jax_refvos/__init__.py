"""jax_refvos: referring / reasoning video object segmentation in JAX (VIRST, GLUS)."""

__version__ = "0.1.0"
