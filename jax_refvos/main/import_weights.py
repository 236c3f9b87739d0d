"""`refvos import-weights`: official backbone checkpoints -> our weights directory.

    refvos import-weights --kind {hf-lm,videochat-flash,lisa,clip} --src DIR --out_dir O
        [--vision_config JSON] [--lora merge|keep] [--lora_alpha A] [--overwrite]
    refvos import-weights --kind virst --src STATE_DICT --config CONFIG_JSON --out_dir O
        [--sam2_config YAML] [--vision_config JSON] [--tokenizer DIR] [--lora ...] [--overwrite]

`--src` is an HF-style model directory (config.json + safetensors or pytorch_model.bin, single
or sharded). The output (`convert/weights_dir.py`) is config.json + an Orbax checkpoint of each
component ("lm", "vision", "projector"), written atomically. `--vision_config` overrides the
vision tower's shape (VideoChat-Flash: the UMT keys of the VIRST fixture's config_umt_tiny.json;
LISA / clip: an HF CLIP vision config.json). LoRA adapters in the checkpoint are merged by
default, or kept as adapters (`--lora keep`); their alpha comes from `--lora_alpha` or an
adapter_config.json in `--src`.

`--kind virst` (`convert/virst.py`): `--src` is the released state dict FILE (`.pt` / `.bin`, or
`.safetensors`), `--config` VIRST's config.json, `--sam2_config` the SAM2 yaml (default
SAM2.1-L, as released); it writes seven components (vision, projector, lm, sam2,
initial_seg_fusion, seg_prompter, occ_predictor) and copies the tokenizer (`--tokenizer`, default
the config's directory) into `<out_dir>/tokenizer/`. Every tensor must be used; LoRA alpha
defaults to VIRST's 16.
"""

from pathlib import Path

from absl import flags

from jax_refvos.convert import backbones, virst, weights_dir
from jax_refvos.errors import InputError
from jax_refvos.main.cli import run_command

LM_KINDS = ("hf-lm", "videochat-flash", "lisa")
KINDS = (*backbones.KINDS, virst.KIND)


def define_flags(fv: flags.FlagValues) -> None:
    flags.DEFINE_enum("kind", None, list(KINDS), "What the checkpoint is.",
                      flag_values=fv)  # fmt: skip
    flags.DEFINE_string(
        "src", None, "HF-style model directory (virst: the state dict file).", flag_values=fv
    )
    flags.DEFINE_string("out_dir", None, "Weights directory to write.", flag_values=fv)
    flags.DEFINE_string(
        "vision_config", None, "JSON overriding the vision tower's shape.", flag_values=fv
    )
    flags.DEFINE_enum("lora", "merge", ["merge", "keep"], "What to do with LoRA adapters.",
                      flag_values=fv)  # fmt: skip
    flags.DEFINE_float("lora_alpha", None, "LoRA alpha (when not in adapter_config.json).",
                       flag_values=fv)  # fmt: skip
    flags.DEFINE_string("config", None, "virst: VIRST's config.json.", flag_values=fv)
    flags.DEFINE_string(
        "sam2_config", None, "virst: SAM2 yaml (default SAM2.1-L as released).", flag_values=fv
    )
    flags.DEFINE_string(
        "tokenizer", None, "virst: tokenizer dir (default: --config's directory).", flag_values=fv
    )
    flags.DEFINE_boolean("overwrite", False, "Replace an existing --out_dir.", flag_values=fv)
    for name in ("kind", "src", "out_dir"):
        flags.mark_flag_as_required(name, flag_values=fv)


def body(fv: flags.FlagValues) -> None:
    src, out = Path(fv.src), Path(fv.out_dir)
    if out.exists() and not fv.overwrite:
        raise InputError(f"{out}: exists (pass --overwrite to replace it)")
    if fv.kind == virst.KIND:
        return _body_virst(fv, src, out)
    for name in ("config", "sam2_config", "tokenizer"):
        if fv[name].value is not None:
            raise InputError(f"--{name} only applies to --kind virst")
    kwargs = {}
    if fv.vision_config:
        if fv.kind == "hf-lm":
            raise InputError("--vision_config does not apply to --kind hf-lm")
        kwargs["vision_config"] = Path(fv.vision_config)
    if fv.kind in LM_KINDS:
        kwargs["lora_mode"] = fv.lora
        kwargs["lora_alpha"] = backbones.lora_alpha_from(src, fv.lora_alpha)
    print(f"importing {fv.kind} from {src}", flush=True)
    imported = backbones.import_backbone(fv.kind, src, **kwargs)
    weights_dir.save_weights(
        out,
        imported.components,
        kind=fv.kind,
        source=str(src.absolute()),
        extra=imported.extra,
        overwrite=fv.overwrite,
    )
    print(f"wrote {out}\n{weights_dir.describe(out)}")


def _body_virst(fv: flags.FlagValues, src: Path, out: Path) -> None:
    if not fv.config:
        raise InputError("--kind virst needs --config (VIRST's config.json)")
    config = Path(fv.config)
    tokenizer = Path(fv.tokenizer) if fv.tokenizer else config.parent
    virst.check_tokenizer(tokenizer)  # before the (long) import
    print(f"importing virst from {src}", flush=True)
    imported = virst.import_virst(
        src,
        config,
        sam2_yaml=fv.sam2_config,
        vision_config=fv.vision_config,
        lora_mode=fv.lora,
        lora_alpha=virst.DEFAULT_LORA_ALPHA if fv.lora_alpha is None else fv.lora_alpha,
    )
    weights_dir.save_weights(
        out,
        imported.components,
        kind=virst.KIND,
        source=str(src.absolute()),
        extra={**imported.extra, "tokenizer": "tokenizer"},
        overwrite=fv.overwrite,
        add_files=lambda tmp: virst.copy_tokenizer(tokenizer, tmp),
    )
    print(f"wrote {out}\n{weights_dir.describe(out)}")


def main(argv=None) -> int:
    return run_command("import-weights", __doc__, define_flags, body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
