"""`refvos import-weights`: official checkpoints -> our weights directory.

    refvos import-weights --kind {hf-lm,videochat-flash,lisa,clip} --src DIR --out_dir O
        [--vision_config JSON] [--lora merge|keep] [--lora_alpha A] [--overwrite]
    refvos import-weights --kind virst --src STATE_DICT --config CONFIG_JSON --out_dir O
        [--sam2_config YAML] [--vision_config JSON] [--tokenizer DIR] [--lora ...] [--overwrite]
    refvos import-weights --kind METHOD --src SRC --out_dir O [--option KEY=VALUE ...]

Backbones (`weights/backbones.py`): `--src` is an HF-style model directory (config.json +
safetensors or pytorch_model.bin, single or sharded). The output (`weights/weights_dir.py`) is
config.json (method null, kind the backbone's) + an Orbax checkpoint of each component ("lm",
"vision", "projector"), written atomically. `--vision_config` overrides the vision tower's shape
(VideoChat-Flash: the UMT keys of the VIRST fixture's config_umt_tiny.json; LISA / clip: an HF
CLIP vision config.json). LoRA adapters in the checkpoint are merged by default, or kept as
adapters (`--lora keep`); their alpha comes from `--lora_alpha` or an adapter_config.json in
`--src`.

A method's checkpoint (`--kind` a registered method; its `Method.import_weights`, which gets the
flags below that were given and every `--option KEY=VALUE`): a weights dir whose config.json
records the method, for `refvos train` (`init=`), `evaluate` and `predict`.
`--kind virst` (`methods/virst/weights.py`): `--src` is the released state dict FILE (`.pt` /
`.bin`, or `.safetensors`), `--config` VIRST's config.json, `--sam2_config` the SAM2 yaml
(default SAM2.1-L, as released); it writes seven components (vision, projector, lm, sam2,
initial_seg_fusion, seg_prompter, occ_predictor) and copies the tokenizer (`--tokenizer`, default
the config's directory) into `<out_dir>/tokenizer/`. Every tensor must be used; LoRA alpha
defaults to VIRST's 16.
"""

from pathlib import Path

from absl import flags

from jax_refvos.errors import InputError
from jax_refvos.main import cli
from jax_refvos.methods import registry
from jax_refvos.weights import backbones, weights_dir

LM_KINDS = ("hf-lm", "videochat-flash", "lisa")
METHOD_FLAGS = ("config", "sam2_config", "vision_config", "tokenizer", "lora", "lora_alpha")


def define_flags(fv: flags.FlagValues) -> None:
    # Backbone kinds, then the registered methods (whose `Method.import_weights` does the work).
    kinds = [*backbones.KINDS, *registry.names()]
    flags.DEFINE_enum("kind", None, kinds, "What the checkpoint is.", flag_values=fv)
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
    flags.DEFINE_multi_string(
        "option", [], "A method importer's option KEY=VALUE (repeatable).", flag_values=fv
    )
    flags.DEFINE_boolean("overwrite", False, "Replace an existing --out_dir.", flag_values=fv)
    for name in ("kind", "src", "out_dir"):
        flags.mark_flag_as_required(name, flag_values=fv)


def body(fv: flags.FlagValues) -> None:
    src, out = Path(fv.src), Path(fv.out_dir)
    if out.exists() and not fv.overwrite:
        raise InputError(f"{out}: exists (pass --overwrite to replace it)")
    if fv.kind in registry.names():
        method = registry.get(fv.kind)
        options = cli.method_options(fv, METHOD_FLAGS)
        method.import_weights(src, out, options, overwrite=fv.overwrite)
        print(f"wrote {out}\n{weights_dir.describe(out)}")
        return
    for name in ("config", "sam2_config", "tokenizer", "option"):
        if fv[name].present:
            raise InputError(f"--{name} only applies to a method's --kind ({registry.names()})")
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
        method=None,  # backbone parts, not a method's whole model
        kind=fv.kind,
        source=str(src.absolute()),
        extra=imported.extra,
        overwrite=fv.overwrite,
    )
    print(f"wrote {out}\n{weights_dir.describe(out)}")


def main(argv=None) -> int:
    return cli.run_command("import-weights", __doc__, define_flags, body, argv)


if __name__ == "__main__":
    raise SystemExit(main())
