"""HF CLIP checkpoints -> `ClipVisionModel`, without torch.

Accepted directory layouts (config.json plus weights):
- a full `CLIPModel` (e.g. `openai/clip-vit-large-patch14`): `vision_model.*` is used, the text
  tower, projections, `logit_scale` and the old persistent `position_ids` buffers are ignored;
- a `CLIPVisionModel` saved by transformers 4.x (`vision_model.*`) or 5.x (no prefix:
  `embeddings.*`, `encoder.*`, ...).
Weights come from `model.safetensors` or a sharded `model.safetensors.index.json` (read by
`weights.hf`, memory-mapped, f32/f16/bf16), or `pytorch_model.bin` (read by `torch_pickle`, no
pickled code runs). Values are cast to the model's `param_dtype`.
"""

from collections.abc import Mapping
from pathlib import Path

import jax.numpy as jnp
import numpy as np
from flax import nnx

from jax_refvos.model.backbone.clip_vit import ClipVisionConfig, ClipVisionModel, from_hf
from jax_refvos.weights.hf import CheckpointError, read_config, read_safetensors_dir
from jax_refvos.weights.torch_names import load_torch_state
from jax_refvos.weights.torch_pickle import load_state_dict

_VISION_PREFIX = "vision_model."
# Keys of a CLIPModel / CLIPVisionModelWithProjection checkpoint that the vision tower never uses.
_IGNORED_PREFIXES = ("text_model.", "visual_projection.", "text_projection.", "logit_scale")
_IGNORED_KEYS = ("vision_model.embeddings.position_ids",)


def read_checkpoint_dir(path: str | Path) -> tuple[dict, dict[str, np.ndarray]]:
    """(config.json as a dict, state dict as numpy in the stored dtypes) of an HF model dir.

    Raises:
        CheckpointError: no config.json or no weights file, or an unreadable one.
    """
    path = Path(path)
    config = read_config(path)
    safetensors = ("model.safetensors", "model.safetensors.index.json")
    if any((path / name).is_file() for name in safetensors):
        return config, read_safetensors_dir(path, dtype=None)
    if (path / "pytorch_model.bin").is_file():
        return config, load_state_dict(path / "pytorch_model.bin", key="state_dict")
    raise CheckpointError(
        f"{path}: no weights (model.safetensors, model.safetensors.index.json or pytorch_model.bin)"
    )


def vision_state(state: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The vision-tower tensors of a CLIP state dict, keyed as `ClipVisionModel` expects.

    Keys without the `vision_model.` prefix (transformers 5.x `CLIPVisionModel`) get it; text
    tower, projections, `logit_scale` and `position_ids` buffers are dropped. Anything else is
    kept, so that `load_torch_state` reports it as unexpected.
    """
    prefixed = any(k.startswith(_VISION_PREFIX) for k in state)
    out = {}
    for key, value in state.items():
        if key.startswith(_IGNORED_PREFIXES):
            continue
        key = key if prefixed else _VISION_PREFIX + key
        if key not in _IGNORED_KEYS:
            out[key] = value
    return out


def abstract_clip_vision(
    cfg: ClipVisionConfig, *, dtype=jnp.float32, param_dtype=jnp.float32
) -> ClipVisionModel:
    """A `ClipVisionModel` with shapes only (no parameter memory), to be filled by a load."""
    return nnx.eval_shape(
        lambda: ClipVisionModel(cfg, dtype=dtype, param_dtype=param_dtype, rngs=nnx.Rngs(0))
    )


def load_clip_vision(
    path_or_state: str | Path | Mapping[str, np.ndarray],
    cfg: ClipVisionConfig | None = None,
    *,
    dtype=jnp.float32,
    param_dtype=jnp.float32,
) -> ClipVisionModel:
    """Build a `ClipVisionModel` and load CLIP weights into it.

    Args:
        path_or_state: an HF model directory (config.json + weights), or a state dict
            (torch key -> array) of a CLIPModel or CLIPVisionModel.
        cfg: the architecture; default: from the directory's config.json (required for a
            state dict).
        dtype: compute dtype. param_dtype: storage dtype of the parameters.

    Raises:
        CheckpointError: unreadable directory, or a state dict without `cfg`.
        ClipConfigError: config.json describes an unsupported tower.
        WeightMismatchError: missing, unexpected or mis-shaped keys (listed, with the source).
    """
    if isinstance(path_or_state, Mapping):
        if cfg is None:
            raise CheckpointError("load_clip_vision: a state dict needs an explicit cfg")
        state, source = path_or_state, "CLIP state dict"
    else:
        config, state = read_checkpoint_dir(path_or_state)
        source = str(path_or_state)
        if cfg is None:
            cfg = from_hf(config, source=str(Path(path_or_state) / "config.json"))
    model = abstract_clip_vision(cfg, dtype=dtype, param_dtype=param_dtype)
    load_torch_state(model, vision_state(state), source=source)
    return model
