"""Official SAM 2 / SAM 2.1 `.pt` checkpoints -> `Sam2Model`, without torch.

The checkpoint is read by the restricted unpickler in `torch_pickle.py` (no pickled code runs);
its "model" state dict maps onto our module by path (`torch_names.py`). Every model tensor must be
present and every checkpoint tensor used; a mismatch is an error that lists the keys.
"""

from pathlib import Path

import jax.numpy as jnp
from flax import nnx

from jax_refvos.model.sam2.config import from_name
from jax_refvos.model.sam2.image_predictor import Sam2ImagePredictor
from jax_refvos.model.sam2.sam2_model import Sam2Model
from jax_refvos.model.sam2.video_predictor import Sam2VideoPredictor
from jax_refvos.weights.torch_names import load_torch_state
from jax_refvos.weights.torch_pickle import load_state_dict


def abstract_sam2(
    model_cfg: str = "sam2.1_hiera_t", *, image_size: int | None = None, dtype=jnp.float32
) -> Sam2Model:
    """A `Sam2Model` with shapes only (no parameter memory), to be filled by `load_torch_state`."""
    cfg = from_name(model_cfg, image_size=image_size)
    return nnx.eval_shape(lambda: Sam2Model(cfg, dtype=dtype, rngs=nnx.Rngs(0)))


def load_sam2(
    path: str | Path,
    model_cfg: str = "sam2.1_hiera_t",
    *,
    image_size: int | None = None,
    dtype=jnp.float32,
) -> Sam2Model:
    """Build `model_cfg` and load the official checkpoint at `path` into it.

    Raises:
        CheckpointError: unreadable or unsafe file (see `torch_pickle`).
        WeightMismatchError: the checkpoint does not fit `model_cfg` (keys listed).
    """
    state = load_state_dict(path, key="model")
    model = abstract_sam2(model_cfg, image_size=image_size, dtype=dtype)
    load_torch_state(model, state, source=f"{path} (model_cfg {model_cfg})")
    return model


def load_video_predictor(
    path: str | Path,
    model_cfg: str = "sam2.1_hiera_t",
    *,
    image_size: int | None = None,
    **kwargs,
) -> Sam2VideoPredictor:
    """A `Sam2VideoPredictor` over `load_sam2(path, model_cfg, image_size=...)`; `kwargs` go to
    the predictor (e.g. `chunk_size`)."""
    return Sam2VideoPredictor(load_sam2(path, model_cfg, image_size=image_size), **kwargs)


def load_image_predictor(
    path: str | Path,
    model_cfg: str = "sam2.1_hiera_t",
    *,
    image_size: int | None = None,
    **kwargs,
) -> Sam2ImagePredictor:
    """A `Sam2ImagePredictor` over `load_sam2(path, model_cfg, image_size=...)`."""
    return Sam2ImagePredictor(load_sam2(path, model_cfg, image_size=image_size), **kwargs)
