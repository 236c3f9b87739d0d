"""Import the methods' vision-language backbones into our modules (`refvos import-weights`).

Kinds and the components they produce:
  hf-lm            an HF Qwen2 / LLaMA causal-LM directory: "lm"
  clip             an HF CLIP (or CLIPVision) directory: "vision"
  videochat-flash  VideoChat-Flash-Qwen2 (VIRST's base), one HF directory: "vision" (UMT tower),
                   "projector" (ToMe16 + MLP), "lm" (Qwen2)
  lisa             LISA-7B / GLUS (LLaVA-LLaMA), one HF directory: "vision" (CLIP ViT-L/14 +
                   linear mm_projector), "lm" (LLaMA)

LoRA adapters found in a checkpoint (peft keys `...q_proj.lora_A[.default].weight`) are merged
into the base weights (W += alpha/r · B·A) or kept as `LoraLinear`s; alpha is not stored in a
state dict, so it comes from `adapter_config.json` next to the weights or from the caller.
Keys that belong to other parts (SAM, seg heads) are ignored and counted in the result.
"""

import dataclasses
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from flax import nnx

from jax_refvos import fileio
from jax_refvos.errors import InputError
from jax_refvos.model.backbone import clip_vit, lora, tome, umt
from jax_refvos.model.backbone.decoder_lm import DecoderLM
from jax_refvos.model.backbone.glus_projector import ClipLlavaVision
from jax_refvos.model.backbone.lm_config import DecoderConfig
from jax_refvos.weights import clip as clip_convert
from jax_refvos.weights import hf, peft, videochat_flash, weights_dir
from jax_refvos.weights.torch_names import WeightMismatchError, load_torch_state
from jax_refvos.weights.torch_pickle import load_state_dict

KINDS = ("hf-lm", "clip", "videochat-flash", "lisa")
PEFT_PREFIX = "base_model.model."
_LM_KEY = re.compile(r"^(lm_head\.weight|model\.(embed_tokens|norm|layers\.\d+)\..+)$")
_LORA_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<ab>[AB])(\.[^.]+)?\.weight$")


@dataclasses.dataclass
class Imported:
    """What an import produced: {name: (module, config)} plus facts for config.json."""

    components: dict[str, tuple[nnx.Module, Any]]
    extra: dict[str, Any]


def read_weights_dir(src: Path) -> dict[str, np.ndarray]:
    """The state dict of an HF model dir: safetensors (single / sharded, memory-mapped), else
    `pytorch_model.bin` (single / sharded `.bin.index.json`, read without running pickled code)."""
    if (src / "model.safetensors").is_file() or (src / "model.safetensors.index.json").is_file():
        return hf.read_safetensors_dir(src, dtype=None)
    index = src / "pytorch_model.bin.index.json"
    if index.is_file():
        files = sorted(set(fileio.load_json(index).get("weight_map", {}).values()))
        if not files:
            raise hf.CheckpointError(f"{index}: empty weight_map")
        state = {}
        for name in files:
            if not (src / name).is_file():
                raise hf.CheckpointError(f"{index}: shard {name} is missing")
            state.update(load_state_dict(src / name, key="state_dict"))
        return state
    if (src / "pytorch_model.bin").is_file():
        return load_state_dict(src / "pytorch_model.bin", key="state_dict")
    raise hf.CheckpointError(
        f"{src}: no weights (model.safetensors[.index.json] or pytorch_model.bin[.index.json])"
    )


def _lm_state(state: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The LM's tensors (HF names), peft wrapper prefix removed; LoRA tensors included."""
    out = {}
    for key, value in state.items():
        key = key.removeprefix(PEFT_PREFIX)
        base = re.sub(r"\.(base_layer)\.", ".", key)
        if _LM_KEY.match(base):
            out[key] = value
    return out


def _lora_modules(state: Mapping[str, np.ndarray]) -> dict[str, int]:
    """{module path: rank} of the LoRA adapters in `state`."""
    ranks = {}
    for key, value in state.items():
        m = _LORA_KEY.match(key)
        if m and m["ab"] == "A":
            ranks[m["module"]] = int(np.shape(value)[0])
    return ranks


def lora_alpha_from(src: Path, given: float | None) -> float | None:
    """`given`, else `lora_alpha` of an `adapter_config.json` in `src` (peft's file)."""
    if given is not None:
        return given
    f = src / "adapter_config.json"
    return float(fileio.load_json(f)["lora_alpha"]) if f.is_file() else None


def merge_lora_state(
    state: Mapping[str, np.ndarray], alpha: float, *, source: str
) -> dict[str, np.ndarray]:
    """HF-named state with every adapter folded in: W += alpha/r · B @ A (torch layout)."""
    ranks = _lora_modules(state)
    out = {}
    for key, value in state.items():
        if _LORA_KEY.match(key):
            continue
        out[key.replace(".base_layer.", ".")] = np.asarray(value, np.float32)
    for module, r in ranks.items():
        a = _lora_tensor(state, module, "A", source)
        b = _lora_tensor(state, module, "B", source)
        w = f"{module}.weight"
        if w not in out:
            raise WeightMismatchError(f"{source}: LoRA adapter on {module} without its base {w}")
        out[w] = out[w] + (alpha / r) * (b.astype(np.float32) @ a.astype(np.float32))
    return out


def _lora_tensor(state, module: str, ab: str, source: str) -> np.ndarray:
    for key in (f"{module}.lora_{ab}.weight", f"{module}.lora_{ab}.default.weight"):
        if key in state:
            return np.asarray(state[key])
    raise WeightMismatchError(f"{source}: LoRA adapter on {module} has no lora_{ab}")


def lm_from_state(
    state: Mapping[str, np.ndarray],
    config: Mapping[str, Any],
    *,
    source: str,
    model_type: str,
    lora_mode: str = "merge",
    lora_alpha: float | None = None,
    **overrides,
) -> tuple[DecoderLM, dict]:
    """A `DecoderLM` from a whole-model state dict whose LM keys follow HF's names.

    The vocabulary size comes from the embedding (VIRST resizes it to its tokenizer after the
    config was written). Returns the model and a dict describing its LoRA adapters (if any).
    """
    lm = _lm_state(state)
    if "model.embed_tokens.weight" not in lm:
        raise WeightMismatchError(f"{source}: no model.embed_tokens.weight (not a causal LM?)")
    cfg = DecoderConfig.from_hf(
        {**config, "model_type": model_type},
        source=source,
        vocab_size=int(np.shape(lm["model.embed_tokens.weight"])[0]),
        **overrides,
    )
    ranks = _lora_modules(lm)
    info: dict[str, Any] = {}
    if ranks:
        if lora_alpha is None:
            raise InputError(
                f"{source}: the checkpoint holds LoRA adapters ({len(ranks)} modules) but "
                "their alpha is unknown: pass --lora_alpha (VIRST: 16, GLUS: 16)"
            )
        rank = sorted(set(ranks.values()))
        targets = tuple(sorted({m.rsplit(".", 1)[-1] for m in ranks}))
        info = {"rank": rank[0], "alpha": lora_alpha, "targets": targets, "mode": lora_mode}
        if len(rank) > 1:
            raise InputError(f"{source}: LoRA adapters of several ranks {rank} are not supported")
    model = nnx.eval_shape(lambda: DecoderLM(cfg, rngs=nnx.Rngs(0)))
    if not ranks or lora_mode == "merge":
        hf.load_state(model, merge_lora_state(lm, lora_alpha, source=source) if ranks else lm,
                      source=source)  # fmt: skip
        return model, info
    if lora_mode != "keep":
        raise InputError(f"lora mode {lora_mode!r}: use merge or keep")
    base = {k.replace(".base_layer.", "."): v for k, v in lm.items() if not _LORA_KEY.match(k)}
    hf.load_state(model, base, source=source)
    lora.apply_lora(model, lora_config(info), rngs=nnx.Rngs(0))
    peft.load_peft_adapter(model, {k: v for k, v in lm.items() if _LORA_KEY.match(k)},
                           source=source, prefix="")  # fmt: skip
    return model, info


def lora_config(info: Mapping[str, Any]) -> lora.LoraConfig:
    """The `LoraConfig` recorded for kept adapters (rebuilds the module structure on load)."""
    return lora.LoraConfig(
        rank=int(info["rank"]),
        alpha=float(info["alpha"]),
        target_modules=tuple(info["targets"]),
        include=(r"layers",),
    )


def import_hf_lm(src: Path, **lora_kw) -> Imported:
    config = hf.read_config(src)
    model_type = config.get("model_type")
    state = read_weights_dir(src)
    model, info = lm_from_state(state, config, source=str(src), model_type=model_type, **lora_kw)
    return Imported({"lm": (model, model.cfg)}, {"lora": info} if info else {})


def import_clip(src: Path, vision_config: Path | None = None) -> Imported:
    cfg = _clip_config(vision_config)
    model = clip_convert.load_clip_vision(src, cfg)
    return Imported({"vision": (model, model.cfg if cfg is None else cfg)}, {})


def _clip_config(path: Path | None) -> clip_vit.ClipVisionConfig | None:
    if path is None:
        return None
    return clip_vit.from_hf(fileio.load_json(path), source=str(path))


def import_videochat_flash(src: Path, vision_config: Path | None = None, **lora_kw) -> Imported:
    """VideoChat-Flash-Qwen2 (also VIRST checkpoints: their SAM2 / fusion keys are ignored)."""
    config = hf.read_config(src)
    if "tome16" not in str(config.get("mm_projector_type", "")):
        raise InputError(
            f"{src / 'config.json'}: mm_projector_type {config.get('mm_projector_type')!r} is "
            "not VideoChat-Flash's tome16_mlp_hd64"
        )
    umt_cfg = umt.umt_large()
    if vision_config is not None:
        umt_cfg = umt.UmtConfig.from_json(fileio.load_json(vision_config))
    state = read_weights_dir(src)
    tower, projector = videochat_flash.load_vision_tower_and_projector(
        state, umt_cfg, source=str(src)
    )
    lm, info = lm_from_state(state, config, source=str(src), model_type="qwen2", **lora_kw)
    components = {
        "vision": (tower, umt_cfg),
        "projector": (projector, projector.cfg),
        "lm": (lm, lm.cfg),
    }
    return Imported(components, {"lora": info} if info else {})


def import_lisa(src: Path, vision_config: Path | None = None, **lora_kw) -> Imported:
    """LISA-7B-v1 / GLUS (LLaVA-LLaMA): CLIP tower + mm_projector + LLaMA; SAM keys ignored."""
    config = hf.read_config(src)
    cfg = _clip_config(vision_config) or clip_vit.vit_large_patch14_224()
    state = read_weights_dir(src)
    vision_keys = {
        k.removeprefix(PEFT_PREFIX).removeprefix("model."): v
        for k, v in state.items()
        if k.removeprefix(PEFT_PREFIX).startswith(("model.vision_tower.", "model.mm_projector."))
    }
    lm, info = lm_from_state(state, config, source=str(src), model_type="llama", **lora_kw)
    vision = nnx.eval_shape(
        lambda: ClipLlavaVision(cfg, out_dim=lm.cfg.hidden_size, rngs=nnx.Rngs(0))
    )
    load_torch_state(vision, vision_keys, source=str(src))
    extra = {"lora": info} if info else {}
    vision_cfg = {"clip": cfg, "out_dim": lm.cfg.hidden_size}
    return Imported({"vision": (vision, vision_cfg), "lm": (lm, lm.cfg)}, extra)


def import_backbone(kind: str, src: str | Path, **kwargs) -> Imported:
    """Dispatch on `kind` (see the module docstring)."""
    src = Path(src)
    if not src.is_dir():
        raise InputError(f"{src}: not a directory (--src is an HF-style model directory)")
    if kind not in KINDS:
        raise InputError(f"--kind {kind!r}: use one of {', '.join(KINDS)}")
    fn = {
        "hf-lm": import_hf_lm,
        "clip": import_clip,
        "videochat-flash": import_videochat_flash,
        "lisa": import_lisa,
    }[kind]
    return fn(src, **kwargs)


def _build_lm(config: Mapping[str, Any], lora_info: Mapping[str, Any] | None) -> DecoderLM:
    model = DecoderLM(DecoderConfig(**config), rngs=nnx.Rngs(0))
    if lora_info and lora_info.get("mode") == "keep":
        lora.apply_lora(model, lora_config(lora_info), rngs=nnx.Rngs(0))
    return model


def builders(meta: Mapping[str, Any]) -> dict[str, Any]:
    """{component: config dict -> module} for a weights dir written by `import_backbone`."""
    kind, lora_info = meta["kind"], meta.get("lora")
    lm = lambda c: _build_lm(c, lora_info)  # noqa: E731
    out: dict[str, Any] = {"lm": lm}
    if kind == "clip":
        out = {"vision": lambda c: clip_vit.ClipVisionModel(clip_vit.ClipVisionConfig(**c),
                                                             rngs=nnx.Rngs(0))}  # fmt: skip
    elif kind == "videochat-flash":
        out["vision"] = lambda c: umt.UmtVisionTower(umt.UmtConfig(**c), rngs=nnx.Rngs(0))
        out["projector"] = lambda c: tome.Tome16Projector(tome.Tome16Config(**c), rngs=nnx.Rngs(0))
    elif kind == "lisa":
        out["vision"] = lambda c: ClipLlavaVision(
            clip_vit.ClipVisionConfig(**c["clip"]), out_dim=c["out_dim"], rngs=nnx.Rngs(0)
        )
    elif kind != "hf-lm":
        raise InputError(
            f"weights kind {kind!r} is not a backbone ({', '.join(KINDS)}); a method's weights "
            "dir loads through its method (`methods.registry`)"
        )
    return out


def load_backbone(path: str | Path, *, mesh=None) -> dict[str, nnx.Module]:
    """The modules of a weights dir written by `refvos import-weights` (optionally sharded)."""
    meta = weights_dir.read_meta(path)
    return weights_dir.load_weights(path, builders(meta), mesh=mesh)
