"""SAM 2 as a `methods.base.Method`: promptable video segmentation trained as the official
trainer does (`train_forward.py`), evaluated as semi-supervised VOS (`predictor.py`)."""

import dataclasses
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jax_refvos import config_lib
from jax_refvos.errors import InputError
from jax_refvos.methods.base import Method, WorkdirKind
from jax_refvos.methods.sam2 import config as sconfig
from jax_refvos.methods.sam2 import workdir as sworkdir
from jax_refvos.methods.sam2.predictor import Sam2VosPredictor, refuse_text
from jax_refvos.methods.sam2.train_forward import TrainSettings, sam2_loss, sam2_train_forward
from jax_refvos.model.sam2.config import from_name
from jax_refvos.model.sam2.sam2_model import Sam2Model
from jax_refvos.weights import weights_dir

log = logging.getLogger(__name__)
IMPORT_OPTIONS = frozenset({"model_cfg", "image_size"})


def _model(c) -> sconfig.ModelSection:
    return config_lib.to_dataclass(sconfig.ModelSection, c.model, where="config: model")


def _data(c) -> sconfig.DataSection:
    return config_lib.to_dataclass(sconfig.DataSection, c.data, where="config: data")


def _is_weights_dir(path: str) -> bool:
    return (Path(path) / "config.json").is_file() and (Path(path) / "params").is_dir()


class Sam2Method(Method):
    name = "sam2"
    sections = sconfig.SECTIONS
    scalars = sconfig.SCALARS

    # ------------------------------------------------------------------ training
    def check(self, c):
        m, d = _model(c), _data(c)
        if m.preset not in sconfig.PRESETS:
            raise InputError(f"config: model.preset {m.preset!r}, choose from {sconfig.PRESETS}")
        if m.image_size % 32 or m.image_size <= 0:
            raise InputError(f"config: model.image_size {m.image_size} is not a multiple of 32")
        if m.preset == "large":
            try:
                from_name(m.model_cfg)
            except ValueError as e:
                raise InputError(f"config: model.model_cfg: {e}") from None
        if m.init:
            if not Path(m.init).exists():
                raise InputError(f"{m.init}: model.init does not exist")
            if _is_weights_dir(m.init) and weights_dir.read_meta(m.init).get("method") != "sam2":
                raise InputError(f"{m.init}: model.init is not a SAM 2 weights dir")
        if not d.train_records:
            raise InputError("config: data.train_records is empty: pass records=DIR")
        if not (Path(d.train_records) / "manifest.json").is_file() and not d.synth_root:
            from jax_refvos.datasets import records as records_lib

            records_lib.read_manifest(d.train_records)  # the InputError naming the problem
        if min(d.batch_size, d.frames, d.max_objects) < 1:
            raise InputError("config: batch, frames and max_objects must be >= 1")

    def prepare(self, c, workdir: Path) -> None:
        from jax_refvos.datasets.synthetic.make import ensure_synthetic_records

        d = _data(c)
        ensure_synthetic_records(d.synth_root, d.train_records, c.synth)

    def model_config(self, c):
        m = _model(c)
        if m.preset == "tiny" and not m.init:
            cfg = sconfig.tiny_sam2(m.image_size, m.width)
        elif m.init and _is_weights_dir(m.init):
            meta = weights_dir.read_meta(m.init)
            cfg = sworkdir.config_from_record(meta, f"{m.init}/config.json")
        else:
            cfg = from_name(m.model_cfg, image_size=m.image_size)
        return dataclasses.replace(cfg, multimask_output_for_tracking=m.multimask_tracking)

    def model_record(self, c, workdir: Path) -> dict[str, Any]:
        return sworkdir.make_record(self.model_config(c))

    def build(self, c, record: Mapping[str, Any], workdir: Path):
        cfg = sworkdir.config_from_record(record, "config")
        m = _model(c)
        if not m.init:
            return Sam2Model(cfg, rngs=nnx.Rngs(c.seed))
        if _is_weights_dir(m.init):
            return sworkdir.load_weights_dir(Path(m.init), image_size=cfg.image_size)
        from jax_refvos.weights import sam2_torch

        log.info("loading %s (%s)", m.init, m.model_cfg)
        return sam2_torch.load_sam2(m.init, m.model_cfg, image_size=cfg.image_size)

    def trainable(self, c):
        return sconfig.trainable(_model(c))

    def train_data(self, c, model, *, process_index: int, process_count: int):
        from jax_refvos.pipeline.config import PipelineConfig
        from jax_refvos.pipeline.dataset import make_dataset

        d, size = _data(c), model.cfg.image_size
        cfg = PipelineConfig.sam2(
            mixture={"train": (d.train_records, 1.0)},
            batch_size=d.batch_size,
            sam_size=size,
            mask_size=size,
            sam_frames=d.frames,
            max_objects=d.max_objects,
            hflip_prob=d.hflip_prob,
            seed=c.seed,
            num_workers=d.num_workers,
        )
        return make_dataset(cfg, process_index=process_index, process_count=process_count)

    def loss(self, c, model):
        lc = config_lib.to_dataclass(sconfig.LossSection, c.loss, where="config: loss")
        settings = TrainSettings(**vars(lc))

        def loss_fn(model, method_state, batch):
            out = sam2_train_forward(model, batch, settings)
            loss, metrics = sam2_loss(out, batch["obj_valid"].reshape(-1), settings)
            return loss, ({"loss": loss, **metrics}, method_state)

        return loss_fn

    def batch_counts(self, c, model, batch):
        @jax.jit
        def counts(batch):
            valid = batch["frame_valid"]
            return {
                "clips": jnp.sum(valid.any(axis=1)),
                "frames": jnp.sum(valid),
                "tokens": jnp.int32(0),
            }

        return counts

    # ------------------------------------------------------------------ inference
    def load(self, path: Path, kind: WorkdirKind, options: Mapping[str, Any]):
        if kind == "training":
            return Sam2VosPredictor(sworkdir.load_training_workdir(path))
        return Sam2VosPredictor(sworkdir.load_weights_dir(path))

    def check_predict(self, text: str, options: Mapping[str, Any]) -> None:
        refuse_text()

    # ------------------------------------------------------------------ weights
    def import_weights(self, src: Path, out_dir: Path, options: Mapping[str, Any], *, overwrite):
        unknown = sorted(set(options) - IMPORT_OPTIONS)
        if unknown:
            raise InputError(f"--kind sam2 takes no {unknown} (takes: {sorted(IMPORT_OPTIONS)})")
        size = options.get("image_size")
        sworkdir.import_checkpoint(
            Path(src),
            Path(out_dir),
            model_cfg=str(options.get("model_cfg", "sam2.1_hiera_l")),
            image_size=int(size) if size else None,
            overwrite=overwrite,
        )


METHOD = Sam2Method()
