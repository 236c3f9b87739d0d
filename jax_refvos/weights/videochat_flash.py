"""VideoChat-Flash / VIRST state dicts -> the UMT vision tower and the ToMe16 projector.

Key layout of the official checkpoints (VideoChat-Flash-Qwen2-7B_res448 safetensors, VIRST's
`model_state_dict`, the tiny fixture), after any wrapper prefix (`base_model.model.` etc.):

- `model.vision_tower.vision_tower.encoder.` + `patch_embed.proj.weight` (Conv3d, OIDHW),
  `blocks.N.{norm1,attn.qkv,attn.q_bias,attn.v_bias,attn.proj,norm2,mlp.fc1,mlp.fc2}.*`,
  `vision_layernorm.*` -> `UmtVisionTower` (the Conv3d weight becomes DHWIO through
  `PatchConv.TORCH_LAYOUT`);
- `model.mm_projector.` + `mlp.0.*`, `mlp.2.*` -> `Tome16Projector.mlp` (index 1 is the GELU).

Below the prefixes the names are equal, so `torch_names.load_torch_state` does the rest (Linear
weights transposed, LayerNorm weight -> scale). The fixed sinusoid position tables are not in
the state dict; the tower computes them.
"""

from collections.abc import Mapping

import jax.numpy as jnp
import numpy as np
from flax import nnx

from jax_refvos.model.backbone.tome import Tome16Config, Tome16Projector
from jax_refvos.model.backbone.umt import UmtConfig, UmtVisionTower
from jax_refvos.weights.torch_names import WeightMismatchError, load_torch_state

TOWER_SUFFIX = "vision_tower.vision_tower.encoder."
PROJECTOR_SUFFIX = "mm_projector."
_TOWER_PROBE = "patch_embed.proj.weight"
_PROJECTOR_PROBE = "mlp.0.weight"


def find_prefix(state: Mapping[str, np.ndarray], suffix: str, probe: str, *, source: str) -> str:
    """The one key prefix ending in `suffix` under which `probe` exists, e.g.
    `model.vision_tower.vision_tower.encoder.` (peft/DDP wrappers may add more in front)."""
    found = sorted(k[: -len(probe)] for k in state if k.endswith(suffix + probe))
    if len(found) != 1:
        what = "no" if not found else f"{len(found)} ({', '.join(found)})"
        raise WeightMismatchError(f"{source}: expected one '*{suffix}{probe}' key, found {what}")
    return found[0]


def sub_state(state: Mapping[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    """The entries under `prefix`, with the prefix removed."""
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def load_vision_tower(
    state: Mapping[str, np.ndarray],
    umt_cfg: UmtConfig,
    *,
    dtype=jnp.float32,
    param_dtype=jnp.float32,
    source: str = "state dict",
) -> UmtVisionTower:
    """Build a `UmtVisionTower` and fill it from the full official state dict."""
    prefix = find_prefix(state, TOWER_SUFFIX, _TOWER_PROBE, source=source)
    tower = nnx.eval_shape(
        lambda: UmtVisionTower(umt_cfg, dtype=dtype, param_dtype=param_dtype, rngs=nnx.Rngs(0))
    )
    load_torch_state(tower, sub_state(state, prefix), source=f"{source} [{prefix}*]")
    return tower


def load_projector(
    state: Mapping[str, np.ndarray],
    tome_cfg: Tome16Config,
    *,
    dtype=jnp.float32,
    param_dtype=jnp.float32,
    source: str = "state dict",
) -> Tome16Projector:
    """Build a `Tome16Projector` and fill it from the full official state dict."""
    prefix = find_prefix(state, PROJECTOR_SUFFIX, _PROJECTOR_PROBE, source=source)
    projector = nnx.eval_shape(
        lambda: Tome16Projector(tome_cfg, dtype=dtype, param_dtype=param_dtype, rngs=nnx.Rngs(0))
    )
    load_torch_state(projector, sub_state(state, prefix), source=f"{source} [{prefix}*]")
    return projector


def load_vision_tower_and_projector(
    state: Mapping[str, np.ndarray],
    umt_cfg: UmtConfig,
    tome_cfg: Tome16Config | None = None,
    *,
    dtype=jnp.float32,
    param_dtype=jnp.float32,
    source: str = "state dict",
) -> tuple[UmtVisionTower, Tome16Projector]:
    """The UMT tower and the ToMe16 projector of a VideoChat-Flash / VIRST state dict.

    Args:
        state: the whole model's state dict as numpy arrays (any float dtype; cast on load).
            Keys of other parts (LLM, SAM2, ...) are ignored; within the tower and projector
            prefixes every tensor must be used and every variable filled.
        umt_cfg: the tower's architecture.
        tome_cfg: the projector's; by default its vision width and metric heads come from
            `umt_cfg` and its LLM width from the projector's weights.
        source: named in error messages (e.g. the checkpoint path).

    Raises:
        WeightMismatchError: a prefix is missing or ambiguous, or keys / shapes do not fit.
    """
    if tome_cfg is None:
        prefix = find_prefix(state, PROJECTOR_SUFFIX, _PROJECTOR_PROBE, source=source)
        llm_dim = int(np.shape(state[prefix + _PROJECTOR_PROBE])[0])
        tome_cfg = Tome16Config(
            vision_dim=umt_cfg.embed_dim,
            llm_dim=llm_dim,
            metric_heads=umt_cfg.num_heads,
            clip_frames=umt_cfg.clip_frames,
        )
    kw = dict(dtype=dtype, param_dtype=param_dtype, source=source)
    return load_vision_tower(state, umt_cfg, **kw), load_projector(state, tome_cfg, **kw)
