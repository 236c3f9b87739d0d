"""jax_refvos: referring / reasoning video object segmentation in JAX (VIRST, GLUS)."""

import flax as _flax

__version__ = "0.1.0"

# Parameters carry logical-axis names as metadata (STYLE R7) and are placed on a mesh explicitly
# (`sharding.place_state`, or restoring into `nnx.get_abstract_model` targets), so building a model
# needs no mesh: on a laptop CPU the same constructors run unchanged. Flax's default eager sharding
# (FLIP 4844) would instead require a mesh in context for every annotated variable.
_flax.config.update("flax_always_shard_variable", False)
