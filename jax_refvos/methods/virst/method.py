"""VIRST as a `methods.base.Method`: the wiring of this package's pieces into the protocol."""

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

from jax_refvos import config_lib
from jax_refvos.errors import InputError
from jax_refvos.methods.base import Method, WorkdirKind
from jax_refvos.methods.virst import batch as vbatch
from jax_refvos.methods.virst import config as vconfig
from jax_refvos.methods.virst import predictor as vpredictor
from jax_refvos.methods.virst import train_setup
from jax_refvos.methods.virst import weights as vweights
from jax_refvos.methods.virst import workdir as vworkdir
from jax_refvos.methods.virst.losses import VirstLossConfig

# `refvos import-weights --kind virst` options (`weights.import_to_dir`).
IMPORT_OPTIONS = frozenset(
    {"config", "sam2_config", "vision_config", "tokenizer", "lora", "lora_alpha"}
)


class VirstMethod(Method):
    name = "virst"
    sections = vconfig.SECTIONS
    scalars = vconfig.SCALARS
    load_options = vpredictor.OPTIONS

    # ------------------------------------------------------------------ training
    def check(self, c):
        if c.trainable not in vconfig.TRAINABLE:
            raise InputError(
                f"config: trainable {c.trainable!r}, choose from {sorted(vconfig.TRAINABLE)}"
            )
        train_setup.check(c)

    def prepare(self, c, workdir: Path) -> None:
        train_setup.prepare(c, workdir)

    def model_record(self, c, workdir: Path) -> dict[str, Any]:
        return {**train_setup.model_record(c), "tokenizer": vworkdir.TOKENIZER_DIR}

    def build(self, c, record: Mapping[str, Any], workdir: Path):
        return train_setup.build(c, dict(record))

    def trainable(self, c):
        return vconfig.TRAINABLE[c.trainable]

    def train_data(self, c, model, *, process_index: int, process_count: int):
        from jax_refvos.pipeline.dataset import make_dataset

        return make_dataset(
            train_setup.pipeline_config(c, model.cfg),
            process_index=process_index,
            process_count=process_count,
        )

    def loss(self, c, model):
        loss_cfg = config_lib.to_dataclass(VirstLossConfig, c.loss, where="config: loss")
        return vbatch.make_loss(anchor_cfg=model.cfg.anchors, loss_cfg=loss_cfg)

    def batch_counts(self, c, model, batch):
        frames = batch["vlm_frames"]
        shape = jax.ShapeDtypeStruct(frames.shape, jnp.float32)
        visual = jax.eval_shape(model.visual_tokens, shape).shape[1]
        return vbatch.make_batch_counts(model.cfg.umt.clip_frames, visual)

    # ------------------------------------------------------------------ inference
    def load(self, path: Path, kind: WorkdirKind, options: Mapping[str, Any]):
        dynamic = bool(options.get("dynamic_anchors", False))
        if kind == "training":
            model, tok = vworkdir.load_training_workdir(path, dynamic_anchors=dynamic)
        else:
            model, tok = vworkdir.load_weights_dir(
                path,
                initial_seg_fusion=bool(options.get("initial_seg_fusion", False)),
                dynamic_anchors=dynamic,
            )
        return vpredictor.VirstPredictor(model, tok, options)

    def check_predict(self, text: str, options: Mapping[str, Any]) -> None:
        vpredictor.check_templates(
            text, options.get("question_template_id", 0), options.get("answer_template_id", 0)
        )

    # ------------------------------------------------------------------ weights
    def import_weights(self, src: Path, out_dir: Path, options: Mapping[str, Any], *, overwrite):
        unknown = sorted(set(options) - IMPORT_OPTIONS)
        if unknown:
            raise InputError(f"--kind virst takes no {unknown} (takes: {sorted(IMPORT_OPTIONS)})")
        opts = dict(options)
        if isinstance(opts.get("lora_alpha"), str):
            opts["lora_alpha"] = config_lib.parse_value("lora_alpha", opts["lora_alpha"], 0.0)
        vweights.import_to_dir(src, out_dir, **opts, overwrite=overwrite)


METHOD = VirstMethod()
