"""A VIRST training run from its config: data, tokenizer, the model's record, the model.

- `tiny` (no `model.init`): a `presets.virst_tiny` model over the synthetic tokenizer, trained
  from scratch on the synthetic benchmark (generated and converted when missing).
- `7b`: `model.init` names a weights dir (`refvos import-weights --kind virst`); every shape comes
  from its recorded components, the tokenizer from its `tokenizer/` (`data.tokenizer_dir`,
  relative to the weights dir), the data from `data.train_records` (config arg `records=`).
  Without `init`, a random `presets.virst_7b`.

Either way the model is built from its record (`record.py`), the same record config.json keeps,
so a workdir rebuilds exactly the model it trained.
"""

import logging
import shutil
from pathlib import Path
from typing import Any

import ml_collections
from flax import nnx

from jax_refvos import config_lib
from jax_refvos.datasets.synthetic.make import ensure_synthetic_records
from jax_refvos.errors import InputError
from jax_refvos.methods.virst import model as virst
from jax_refvos.methods.virst import presets
from jax_refvos.methods.virst import record as rec
from jax_refvos.methods.virst import weights as vweights
from jax_refvos.methods.virst import workdir as vworkdir
from jax_refvos.methods.virst.anchor_updater import AnchorConfig
from jax_refvos.pipeline.config import SYNTH_TOKENIZER, PipelineConfig
from jax_refvos.pipeline.tokenizer import TextTokenizer, load_tokenizer
from jax_refvos.weights import weights_dir

log = logging.getLogger(__name__)
PRESETS = ("tiny", "7b")


def tokenizer_dir(c: ml_collections.ConfigDict) -> str:
    """The run's tokenizer: `data.tokenizer_dir` (inside `model.init` when relative and a
    weights dir is given); unset, the weights dir's own tokenizer, or without one the synthetic
    tokenizer."""
    if not c.data.tokenizer_dir:
        if c.model.init:
            meta = weights_dir.read_meta(c.model.init)
            return str(Path(c.model.init) / meta.get("tokenizer", vworkdir.TOKENIZER_DIR))
        return SYNTH_TOKENIZER
    if c.model.init and not Path(c.data.tokenizer_dir).is_absolute():
        return str(Path(c.model.init) / c.data.tokenizer_dir)
    return c.data.tokenizer_dir


def check(c: ml_collections.ConfigDict) -> None:
    """The model's start, the tokenizer and the data exist (before anything is written)."""
    if c.model.preset not in PRESETS:
        raise InputError(f"config: model.preset {c.model.preset!r}, choose from {PRESETS}")
    records = c.data.train_records
    if not records:
        raise InputError(
            "config: data.train_records is empty: pass records=DIR (a `refvos convert` output)"
        )
    if not (Path(records) / "manifest.json").is_file() and not c.data.synth_root:
        from jax_refvos.datasets import records as records_lib

        records_lib.read_manifest(records)  # the InputError naming what is wrong
    if c.model.init:
        meta = weights_dir.read_meta(c.model.init)
        if meta.get("method", meta.get("kind")) != vweights.KIND:
            raise InputError(f"{c.model.init}: model.init is not a VIRST weights dir")
    tok_dir = Path(tokenizer_dir(c))
    if not tok_dir.is_dir():
        raise InputError(f"{tok_dir}: the run's tokenizer directory does not exist")
    vweights.check_tokenizer(tok_dir)
    if c.model.init:  # every id of the tokenizer needs a row of the LLM's embedding
        rows = meta["components"].get("lm", {}).get("config", {}).get("vocab_size")
        vocab = run_tokenizer(c).vocab_size
        if rows is None or rows < vocab:
            raise InputError(
                f"{tok_dir}: the tokenizer has {vocab} ids, the LLM of {c.model.init} {rows} "
                "embedding rows (data.tokenizer_dir names another tokenizer than the weights')"
            )
    d = c.data
    if min(d.batch_size, d.vlm_frames, d.sam_frames, d.max_expressions, d.max_text_len) < 1:
        raise InputError("config: batch, frames, expressions and text length must be >= 1")
    if d.vlm_frames % 4:
        raise InputError(f"config: vlm_frames {d.vlm_frames} is not a multiple of 4 (UMT clips)")


def prepare(c: ml_collections.ConfigDict, workdir: Path) -> None:
    """Main process: the data, and the tokenizer copied into `<workdir>/tokenizer/` (so the
    workdir loads without the paths the config named)."""
    ensure_synthetic_records(c.data.synth_root, c.data.train_records, c.synth)
    dest = Path(workdir) / vworkdir.TOKENIZER_DIR
    tmp = Path(workdir) / ".tokenizer.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    vweights.copy_tokenizer(tokenizer_dir(c), tmp)  # -> <tmp>/tokenizer/
    shutil.rmtree(dest, ignore_errors=True)
    (tmp / vworkdir.TOKENIZER_DIR).rename(dest)
    tmp.rmdir()


def run_tokenizer(c: ml_collections.ConfigDict) -> TextTokenizer:
    return load_tokenizer(tokenizer_dir(c), "virst")


def model_config(c: ml_collections.ConfigDict, tok: TextTokenizer) -> virst.VirstConfig:
    """The config's model: the `model.init` weights dir's components, or the preset's shapes;
    the config's switches (Initial ST-Fusion, every anchor setting) either way."""
    anchors = config_lib.to_dataclass(AnchorConfig, c.anchors, where="config: anchors")
    switches = dict(initial_seg_fusion=c.model.initial_seg_fusion, anchors=anchors)
    if c.model.init:
        meta = weights_dir.read_meta(c.model.init)
        return vworkdir.weights_config(
            Path(c.model.init), meta, seg_token_id=tok.seg_id, **switches
        )
    if c.model.preset == "tiny":
        return presets.virst_tiny(
            vocab_size=tok.vocab_size,
            seg_token_id=tok.seg_id,
            image_size=c.model.image_size,
            vlm_size=c.model.vlm_size,
            llm_width=c.model.llm_width,
            sam_width=c.model.sam_width,
            fusion_grid=c.model.fusion_grid or None,
            **switches,
        )
    return presets.virst_7b(vocab_size=tok.vocab_size, seg_token_id=tok.seg_id, **switches)


def model_record(c: ml_collections.ConfigDict) -> dict[str, Any]:
    """What config.json records of the run's model (`record.make_record`)."""
    lora_cfg = rec.lora_config(c.model.lora_rank, c.model.lora_alpha) if c.model.lora_rank else None
    return rec.make_record(model_config(c, run_tokenizer(c)), lora_cfg)


def build(c: ml_collections.ConfigDict, record: dict[str, Any]) -> virst.Virst:
    """The model of `record`: random (`nnx.Rngs(c.seed)`), or the `model.init` weights with
    LoRA adapters (`nnx.Rngs(c.seed + 1)`) added when the record has them."""
    cfg, lora_cfg = rec.config_from_record(record, "config")
    if not c.model.init:
        return rec.build_model(cfg, lora_cfg, c.seed)
    model = vworkdir.assemble(Path(c.model.init), cfg)
    if lora_cfg is not None:
        from jax_refvos.model.backbone import lora

        lora.apply_lora(model.lm, lora_cfg, rngs=nnx.Rngs(c.seed + 1))
    return model


def pipeline_config(c: ml_collections.ConfigDict, cfg: virst.VirstConfig) -> PipelineConfig:
    """The input pipeline of the run: the model's image sizes, the config's data settings."""
    return PipelineConfig.virst(
        mixture={"train": (c.data.train_records, 1.0)},
        **pipeline_settings(c, cfg),
        tokenizer_dir=tokenizer_dir(c),
        seed=c.seed,
        num_workers=c.data.num_workers,
    )


def pipeline_settings(c: ml_collections.ConfigDict, cfg: virst.VirstConfig) -> dict:
    """Batch, view and text settings as `PipelineConfig.virst` keywords; the views' sizes are
    the model's (SAM2 input side, UMT input side)."""
    return dict(
        batch_size=c.data.batch_size,
        vlm_size=cfg.umt.img_size,
        sam_size=cfg.sam2.image_size,
        mask_size=cfg.sam2.image_size,
        vlm_frames=c.data.vlm_frames,
        sam_frames=c.data.sam_frames,
        max_expressions=c.data.max_expressions,
        max_text_len=c.data.max_text_len,
    )
