"""VIRST models from disk: an imported weights dir or a `refvos train` workdir.

- weights dir (`refvos import-weights --kind virst`): config.json with method "virst", the
  components' configs and weights, and `tokenizer/`; the switches (Initial ST-Fusion, dynamic
  anchors) are given at load time (the released eval runs without ISF);
- training workdir (`refvos train`): config.json records the components and the switches the
  model trained with (`record.py`), `tokenizer/` the run's tokenizer, `checkpoints/` the
  weights (the newest step unless told).

Neither path re-derives a shape from a preset.
"""

import dataclasses
import json
from pathlib import Path

import jax
from flax import nnx

from jax_refvos import checkpoint
from jax_refvos.errors import InputError
from jax_refvos.methods.virst import model as virst
from jax_refvos.methods.virst import record as rec
from jax_refvos.methods.virst import weights as vweights
from jax_refvos.methods.virst.anchor_updater import AnchorConfig
from jax_refvos.pipeline.tokenizer import SEG_TOKEN, TextTokenizer, load_tokenizer
from jax_refvos.weights import weights_dir

TOKENIZER_DIR = "tokenizer"  # inside a weights dir or training workdir


def tokenizer_of(path: Path, name: str = TOKENIZER_DIR) -> TextTokenizer:
    """The tokenizer folder of a weights dir or workdir; InputError when it is missing."""
    tok_dir = Path(path) / name
    if not tok_dir.is_dir():
        raise InputError(f"{tok_dir}: tokenizer directory missing")
    return load_tokenizer(str(tok_dir), "virst")


def assemble(path: Path, cfg: virst.VirstConfig) -> virst.Virst:
    """A `Virst` of `cfg` holding the modules of the weights dir `path` (`weights.load_virst`)."""
    parts = vweights.load_virst(path)
    model = nnx.eval_shape(lambda: virst.Virst(cfg, rngs=nnx.Rngs(0)))
    for name, (_, _, attr) in rec.COMPONENTS.items():
        setattr(model, attr, parts[name])
    return model


def weights_config(path: Path, meta: dict, *, seg_token_id: int, **switches) -> virst.VirstConfig:
    """The VirstConfig of a weights dir: its recorded components plus `switches`
    (`initial_seg_fusion`, `anchors`, ...)."""
    parts = rec.component_configs(meta.get("components", {}), str(path))
    return virst.VirstConfig(**parts, seg_token_id=seg_token_id, **switches)


def load_weights_dir(
    path: Path, *, initial_seg_fusion: bool = False, dynamic_anchors: bool = False
) -> tuple[virst.Virst, TextTokenizer]:
    """(Virst, tokenizer) of a VIRST weights dir."""
    path = Path(path)
    meta = weights_dir.read_meta(path)
    if meta.get("method", meta.get("kind")) != vweights.KIND:
        raise InputError(f"{path}: weights of {meta.get('method', meta.get('kind'))!r}, not VIRST")
    tok = tokenizer_of(path, meta.get("tokenizer", TOKENIZER_DIR))
    cfg = weights_config(
        path,
        meta,
        seg_token_id=tok.token_id(SEG_TOKEN),
        initial_seg_fusion=initial_seg_fusion,
        anchors=AnchorConfig(dynamic_update=dynamic_anchors),
    )
    return assemble(path, cfg), tok


def load_training_workdir(
    path: Path, *, dynamic_anchors: bool = False, step: int | None = None
) -> tuple[virst.Virst, TextTokenizer]:
    """(Virst, tokenizer) of a training workdir at checkpoint `step` (default the newest), on
    one device; the model as trained (its Initial ST-Fusion switch and anchors included), with
    the dynamic anchor update set to `dynamic_anchors`."""
    path = Path(path)
    data = json.loads((path / "config.json").read_text())
    cfg, lora_cfg = rec.config_from_record(data, f"{path}/config.json")
    cfg = dataclasses.replace(
        cfg, anchors=dataclasses.replace(cfg.anchors, dynamic_update=dynamic_anchors)
    )
    model = nnx.eval_shape(lambda: rec.build_model(cfg, lora_cfg, 0))
    device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    target = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), nnx.state(model)
    )
    restored = checkpoint.restore_subtree(path / "checkpoints", {"model": target}, step=step)
    nnx.update(model, restored["model"])
    return model, tokenizer_of(path, data.get("tokenizer", TOKENIZER_DIR))
