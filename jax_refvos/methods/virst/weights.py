"""A released VIRST checkpoint -> our weights dir (`refvos import-weights --kind virst`).

VIRST's checkpoint is one state dict (`torch.save({"model_state_dict": ...})` of the peft-wrapped
`VirstForCausalLM`, read by `model/builder.py::load_checkpoint_virst`, AIDASLab/VIRST @ 954276f),
or the same tensors as one `.safetensors` file (the tiny fixture). After the peft wrapper prefix
`base_model.model.` its keys split into the components we build:

| prefix                                    | component            | our module           |
| ---                                       | ---                  | ---                  |
| `model.vision_tower.vision_tower.encoder.`| `vision`             | `UmtVisionTower`     |
| `model.mm_projector.`                     | `projector`          | `Tome16Projector`    |
| `model.{embed_tokens,layers.N,norm}.`, `lm_head.` | `lm`         | `DecoderLM` (Qwen2)  |
| `model.seg_model.`                        | `sam2`               | `Sam2Model`          |
| `model.seg_prompter.`                     | `seg_prompter`       | `SegPrompter`        |
| `model.initial_seg_fusion_module.`        | `initial_seg_fusion` | `InitialSegFusion`   |
| `model.occ_predictor.`                    | `occ_predictor`      | `OccPredictor`       |

Every tensor must be used and every variable filled: a key under no prefix, or a key a
component does not have, or a variable without a key, is a `WeightMismatchError` naming the file
and listing the keys. The LM's LoRA adapters (peft `...lora_A.default.weight`, VIRST puts them on
the LM's q/k/v/o/gate/up/down projections) are merged (W += alpha/r B A) or kept; VIRST trains
with `lora_alpha` 16.
"""

import dataclasses
import re
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import nnx
from jaxtyping import Array, Float

from jax_refvos import fileio
from jax_refvos.errors import InputError
from jax_refvos.methods.virst import fusion
from jax_refvos.methods.virst.sam2_config import sam2_config_from_yaml, virst_sam2_config
from jax_refvos.model.backbone import lora, tome, umt
from jax_refvos.model.backbone.decoder_lm import DecoderLM
from jax_refvos.model.backbone.lm_config import DecoderConfig
from jax_refvos.model.sam2 import config as sam2_config
from jax_refvos.model.sam2.sam2_model import Sam2Model
from jax_refvos.weights import backbones, hf, videochat_flash, weights_dir
from jax_refvos.weights.torch_names import WeightMismatchError, load_torch_state
from jax_refvos.weights.torch_pickle import load_state_dict

KIND = "virst"
DEFAULT_LORA_ALPHA = 16.0  # VIRST's training scripts (`--lora_alpha 16`)
STATE_KEY = "model_state_dict"  # the entry `load_checkpoint_virst` reads
PREFIXES = {
    "vision": "model." + videochat_flash.TOWER_SUFFIX,
    "projector": "model." + videochat_flash.PROJECTOR_SUFFIX,
    "sam2": "model.seg_model.",
    "seg_prompter": "model.seg_prompter.",
    "initial_seg_fusion": "model.initial_seg_fusion_module.",
    "occ_predictor": "model.occ_predictor.",
}
# The LM's keys (peft's `.base_layer.` / `.lora_X.` inside them included).
_LM_KEY = re.compile(r"^(lm_head\.weight$|model\.(embed_tokens|norm|layers\.\d+)\.)")
# Files of an HF tokenizer dir (VideoChat-Flash's Qwen2 tokenizer: vocab.json + merges.txt, the
# rest optional); copied into <out_dir>/tokenizer/.
TOKENIZER_FILES = (
    "vocab.json",
    "merges.txt",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
)


@dataclasses.dataclass(frozen=True, kw_only=True)
class OccPredictorConfig:
    """`nn.Linear(token_dim, 1)` of `VirstMetaModel.initialize_module` (token_dim 256)."""

    token_dim: int = 256


class OccPredictor(nnx.Linear):
    """VIRST's `occ_predictor`: prompt token [.., token_dim] -> occupancy logit [.., 1].

    Port of `model/VIRST.py::VirstMetaModel.occ_predictor` (a bare `nn.Linear`, so its torch
    keys are `weight` / `bias`). VIRST @ 954276f builds and saves it but never calls it (its
    occupancy loss reads SAM2's object-score logits); it is imported so that the checkpoint is
    fully accounted for.
    """

    def __init__(
        self,
        cfg: OccPredictorConfig,
        *,
        dtype=jnp.float32,
        param_dtype=jnp.float32,
        rngs: nnx.Rngs,
    ):
        super().__init__(
            cfg.token_dim,
            1,
            kernel_init=nnx.with_partitioning(nnx.initializers.lecun_normal(), ("embed", None)),
            bias_init=nnx.with_partitioning(nnx.initializers.zeros_init(), (None,)),
            dtype=dtype,
            param_dtype=param_dtype,
            rngs=rngs,
        )
        self.cfg = cfg

    def __call__(self, x: Float[Array, "... d"]) -> Float[Array, "... 1"]:
        return super().__call__(x)


def read_state(path: str | Path) -> dict[str, np.ndarray]:
    """The checkpoint's tensors, peft / DDP wrapper prefixes removed.

    `.safetensors` is memory-mapped (stored dtype); anything else is a `torch.save` file read by
    our restricted unpickler (entry `model_state_dict`, or a flat dict of tensors).
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: not a file (--src for --kind virst is the state dict file)")
    if path.suffix == ".safetensors":
        state = hf.read_safetensors(path, dtype=None)
    else:
        state = load_state_dict(path, key=STATE_KEY)
    if state and all(k.startswith(backbones.PEFT_PREFIX) for k in state):
        state = {k.removeprefix(backbones.PEFT_PREFIX): v for k, v in state.items()}
    return state


def _split(state: Mapping[str, np.ndarray], source: str) -> dict[str, dict[str, np.ndarray]]:
    """{component: its keys (full names)}; keys under no component are an error."""
    parts: dict[str, dict[str, np.ndarray]] = {name: {} for name in PREFIXES}
    parts["lm"] = {k: v for k, v in state.items() if _LM_KEY.match(k)}
    lm_keys = set(parts["lm"])
    unknown = []
    for key, value in state.items():
        if key in lm_keys:
            continue
        owner = next((n for n, p in PREFIXES.items() if key.startswith(p)), None)
        if owner is None:
            unknown.append(key)
        else:
            parts[owner][key] = value
    if unknown:
        raise WeightMismatchError(
            f"{source}: {len(unknown)} tensors belong to no VIRST component (known prefixes: "
            f"{', '.join(sorted(PREFIXES.values()))}, model.layers / embed_tokens / norm, "
            f"lm_head): {', '.join(sorted(unknown))}"
        )
    empty = [n for n, p in parts.items() if not p]
    if empty:
        raise WeightMismatchError(
            f"{source}: no tensors for the VIRST components {empty} "
            f"(prefixes {[PREFIXES.get(n, 'model.layers.') for n in empty]})"
        )
    return parts


def _strip(part: Mapping[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    return {k[len(prefix) :]: v for k, v in part.items()}


def _loaded(module_fn, state: Mapping[str, np.ndarray], source: str):
    module = nnx.eval_shape(module_fn)
    load_torch_state(module, state, source=source)
    return module


def import_virst(
    src: str | Path,
    config: str | Path,
    *,
    sam2_yaml: str | Path | None = None,
    vision_config: str | Path | None = None,
    lora_mode: str = "merge",
    lora_alpha: float | None = DEFAULT_LORA_ALPHA,
) -> backbones.Imported:
    """All VIRST components from its state dict file and `config.json`.

    Args:
        src: the state dict (`.pt` / `.bin` torch file, or `.safetensors`).
        config: VIRST's `config.json` (VideoChat-Flash-Qwen2 + `sam2_config`): the LM's shape and
            the fusion modules' LLM width.
        sam2_yaml: the SAM2 hydra yaml VIRST was built from; default SAM2.1-L (the release's).
        vision_config: JSON overriding the UMT tower's shape (`UmtConfig.from_json` keys);
            default UMT-L.
        lora_mode, lora_alpha: what to do with the LM's LoRA adapters (see `lm_from_state`).

    Raises:
        WeightMismatchError: unknown, missing or mis-shaped tensors (listed, naming `src`).
        InputError: unreadable files, configs we do not support.
    """
    src, config = Path(src), Path(config)
    source = str(src)
    cfg = fileio.load_json(config)
    if not isinstance(cfg, dict) or "hidden_size" not in cfg:
        raise InputError(f"{config}: not a VIRST / VideoChat-Flash config.json (no hidden_size)")
    if "tome16" not in str(cfg.get("mm_projector_type", "")):
        raise InputError(
            f"{config}: mm_projector_type {cfg.get('mm_projector_type')!r} is not VIRST's "
            "tome16_mlp_hd64"
        )
    umt_cfg = umt.umt_large()
    if vision_config is not None:
        umt_cfg = umt.UmtConfig.from_json(fileio.load_json(vision_config))
    s2_cfg = virst_sam2_config() if sam2_yaml is None else sam2_config_from_yaml(sam2_yaml)
    parts = _split(read_state(src), source)

    # DEVIATION(VIRST): its fusion modules hard-code an 8 x 8 grid, i.e. SAM2 at 1024 px (three
    # stride-2 convs from the stride-16 map). A SAM2 yaml of another size gets the grid
    # image_size / 128 with the same convs, as the tiny preset does; no parameter depends on
    # the grid, so the released weights load either way (1024 px: the released 8 x 8).
    if s2_cfg.image_size % 128:
        raise InputError(f"SAM2 image_size {s2_cfg.image_size}: VIRST needs a multiple of 128")
    grid = s2_cfg.image_size // 128
    isf_cfg = dataclasses.replace(
        fusion.InitialSegFusionConfig.from_virst_config(cfg), grid_hw=grid
    )
    segp_cfg = dataclasses.replace(fusion.SegPrompterConfig.from_virst_config(cfg), grid_hw=grid)
    occ_cfg = OccPredictorConfig(token_dim=segp_cfg.token_dim)

    def sub(name: str) -> tuple[dict, str]:
        return _strip(parts[name], PREFIXES[name]), f"{source} [{PREFIXES[name]}*]"

    # Small parts first, the LM (most of the memory and time) last.
    occ = _loaded(lambda: OccPredictor(occ_cfg, rngs=nnx.Rngs(0)), *sub("occ_predictor"))
    isf = _loaded(
        lambda: fusion.InitialSegFusion(isf_cfg, rngs=nnx.Rngs(0)), *sub("initial_seg_fusion")
    )
    segp = _loaded(lambda: fusion.SegPrompter(segp_cfg, rngs=nnx.Rngs(0)), *sub("seg_prompter"))
    sam2 = _loaded(lambda: Sam2Model(s2_cfg, rngs=nnx.Rngs(0)), *sub("sam2"))
    vis_state = {**parts["vision"], **parts["projector"]}
    tower, projector = videochat_flash.load_vision_tower_and_projector(
        vis_state, umt_cfg, source=source
    )
    lm, info = lm_from_state(parts["lm"], cfg, source, lora_mode, lora_alpha)
    components = {
        "vision": (tower, umt_cfg),
        "projector": (projector, projector.cfg),
        "lm": (lm, lm.cfg),
        "sam2": (sam2, s2_cfg),
        "initial_seg_fusion": (isf, isf_cfg),
        "seg_prompter": (segp, segp_cfg),
        "occ_predictor": (occ, occ_cfg),
    }
    return backbones.Imported(components, {"lora": info} if info else {})


def lm_from_state(state, cfg, source: str, lora_mode: str, lora_alpha: float | None):
    """The Qwen2 LM (VIRST's config says model_type "virst"; its LM is Qwen2)."""
    return backbones.lm_from_state(
        state, cfg, source=source, model_type="qwen2", lora_mode=lora_mode, lora_alpha=lora_alpha
    )


def check_tokenizer(tokenizer_dir: str | Path) -> list[str]:
    """The tokenizer files present in `tokenizer_dir`; InputError unless it has a vocabulary."""
    tokenizer_dir = Path(tokenizer_dir)
    names = [n for n in TOKENIZER_FILES if (tokenizer_dir / n).is_file()]
    if "tokenizer.json" not in names and not {"vocab.json", "merges.txt"} <= set(names):
        raise InputError(
            f"{tokenizer_dir}: no tokenizer (tokenizer.json, or vocab.json + merges.txt); pass "
            "--tokenizer DIR"
        )
    return names


def copy_tokenizer(tokenizer_dir: str | Path, out_dir: str | Path) -> list[str]:
    """Copy the tokenizer files of `tokenizer_dir` into `<out_dir>/tokenizer/`; their names."""
    names = check_tokenizer(tokenizer_dir)
    dest = Path(out_dir) / "tokenizer"
    dest.mkdir(parents=True, exist_ok=True)
    for n in names:
        shutil.copyfile(Path(tokenizer_dir) / n, dest / n)
    return names


# ----------------------------------------------------------------------------- loading back
def _build_lm(c: Mapping[str, Any], lora_info: Mapping[str, Any] | None) -> DecoderLM:
    model = DecoderLM(DecoderConfig(**c), rngs=nnx.Rngs(0))
    if lora_info and lora_info.get("mode") == "keep":
        lora.apply_lora(model, backbones.lora_config(lora_info), rngs=nnx.Rngs(0))
    return model


def virst_builders(meta: Mapping[str, Any]) -> dict[str, Any]:
    """{component: config dict -> module} for a weights dir written by `import_virst`."""
    if meta.get("method", meta.get("kind")) != KIND:
        raise InputError(f"weights of {meta.get('method', meta.get('kind'))!r}, not {KIND!r}")
    lora_info = meta.get("lora")
    r = nnx.Rngs
    return {
        "vision": lambda c: umt.UmtVisionTower(umt.UmtConfig(**c), rngs=r(0)),
        "projector": lambda c: tome.Tome16Projector(tome.Tome16Config(**c), rngs=r(0)),
        "lm": lambda c: _build_lm(c, lora_info),
        "sam2": lambda c: Sam2Model(
            weights_dir.dataclass_from_config(sam2_config.Sam2Config, c), rngs=r(0)
        ),
        "initial_seg_fusion": lambda c: fusion.InitialSegFusion(
            fusion.InitialSegFusionConfig(**c), rngs=r(0)
        ),
        "seg_prompter": lambda c: fusion.SegPrompter(fusion.SegPrompterConfig(**c), rngs=r(0)),
        "occ_predictor": lambda c: OccPredictor(OccPredictorConfig(**c), rngs=r(0)),
    }


def load_virst(path: str | Path, *, mesh=None) -> dict[str, nnx.Module]:
    """The seven modules of a VIRST weights dir (optionally sharded on `mesh`)."""
    meta = weights_dir.read_meta(path)
    return weights_dir.load_weights(path, virst_builders(meta), mesh=mesh)


def save_virst(
    out_dir: str | Path,
    components: Mapping[str, tuple[nnx.Module, Any]],
    *,
    source: str,
    tokenizer_dir: str | Path,
    extra: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """A VIRST weights dir: the components (method "virst") and a copy of the tokenizer."""
    return weights_dir.save_weights(
        out_dir,
        components,
        method=KIND,
        kind=KIND,
        source=source,
        extra={**dict(extra or {}), "tokenizer": "tokenizer"},
        overwrite=overwrite,
        add_files=lambda tmp: copy_tokenizer(tokenizer_dir, tmp),
    )


def import_to_dir(
    src: Path,
    out_dir: Path,
    *,
    config: str | None = None,
    sam2_config: str | None = None,
    vision_config: str | None = None,
    tokenizer: str | None = None,
    lora: str = "merge",
    lora_alpha: float | None = None,
    overwrite: bool = False,
) -> Path:
    """`refvos import-weights --kind virst`: the released state dict + config (+ SAM2 yaml,
    tokenizer) -> a weights dir; the tokenizer is checked before the long import."""
    if not config:
        raise InputError("--kind virst needs --config (VIRST's config.json)")
    config_path = Path(config)
    tokenizer_dir = Path(tokenizer) if tokenizer else config_path.parent
    check_tokenizer(tokenizer_dir)
    print(f"importing virst from {src}", flush=True)
    imported = import_virst(
        src,
        config_path,
        sam2_yaml=sam2_config,
        vision_config=vision_config,
        lora_mode=lora,
        lora_alpha=DEFAULT_LORA_ALPHA if lora_alpha is None else lora_alpha,
    )
    return save_virst(
        out_dir,
        imported.components,
        source=str(Path(src).absolute()),
        tokenizer_dir=tokenizer_dir,
        extra=imported.extra,
        overwrite=overwrite,
    )
