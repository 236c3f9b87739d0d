"""SAM 2 models on disk: the record config.json keeps, imported weights dirs, training workdirs.

- record (`model_record`): `{"components": {"sam2": {"config", "num_params"}}, "method_config":
  {}}` -- the `Sam2Config` the model was built with, so loading never goes back to a preset;
- weights dir (`refvos import-weights --kind sam2`): an official SAM 2 / 2.1 `.pt` read without
  torch (`weights/sam2_torch.py`) and saved with `method: "sam2"`, component "sam2";
- training workdir (`refvos train --config configs/sam2.py`): the record + `checkpoints/`.
"""

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
from flax import nnx

from jax_refvos import checkpoint
from jax_refvos.errors import InputError
from jax_refvos.model.sam2.config import Sam2Config, from_name
from jax_refvos.model.sam2.sam2_model import Sam2Model
from jax_refvos.weights import weights_dir
from jax_refvos.weights.weights_dir import config_dict, dataclass_from_config, num_params

METHOD = "sam2"
COMPONENT = "sam2"


def make_record(cfg: Sam2Config) -> dict[str, Any]:
    abstract = nnx.eval_shape(lambda: Sam2Model(cfg, rngs=nnx.Rngs(0)))
    component = {"config": config_dict(cfg), "num_params": num_params(abstract)}
    return {"components": {COMPONENT: component}, "method_config": {}}


def config_from_record(record: Mapping[str, Any], source: str) -> Sam2Config:
    try:
        return dataclass_from_config(Sam2Config, record["components"][COMPONENT]["config"])
    except (KeyError, TypeError) as e:
        raise InputError(f"{source}: no SAM 2 component config ({e})") from None
    except InputError as e:
        raise InputError(f"{source}: component 'sam2': {e}") from None


def import_checkpoint(
    src: Path, out_dir: Path, *, model_cfg: str, image_size: int | None, overwrite: bool
) -> Path:
    """An official SAM 2 / 2.1 `.pt` (architecture `model_cfg`) -> a SAM 2 weights dir."""
    from jax_refvos.weights import sam2_torch

    try:
        from_name(model_cfg)
    except ValueError as e:
        raise InputError(str(e)) from None
    model = sam2_torch.load_sam2(src, model_cfg, image_size=image_size)
    return weights_dir.save_weights(
        out_dir,
        {COMPONENT: (model, model.cfg)},
        method=METHOD,
        kind="sam2",
        source=str(src),
        extra={"model_cfg": model_cfg},
        overwrite=overwrite,
    )


def load_weights_dir(path: Path, *, image_size: int | None = None) -> Sam2Model:
    meta = weights_dir.read_meta(path)
    if meta.get("method") != METHOD:
        raise InputError(f"{path}: weights of {meta.get('method')!r}, not SAM 2")

    def build(config):
        cfg = dataclass_from_config(Sam2Config, config).with_image_size(image_size)
        return Sam2Model(cfg, rngs=nnx.Rngs(0))

    return weights_dir.load_weights(path, {COMPONENT: build})[COMPONENT]


def load_training_workdir(path: Path, *, step: int | None = None) -> Sam2Model:
    """The model of a SAM 2 training workdir at checkpoint `step` (default newest), one device."""
    path = Path(path)
    record = json.loads((path / "config.json").read_text())
    cfg = config_from_record(record, f"{path}/config.json")
    model = nnx.eval_shape(lambda: Sam2Model(cfg, rngs=nnx.Rngs(0)))
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), nnx.state(model)
    )
    restored = checkpoint.restore_subtree(path / "checkpoints", {"model": target}, step=step)
    nnx.update(model, restored["model"])
    return model
