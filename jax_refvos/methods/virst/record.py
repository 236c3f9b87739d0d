"""What VIRST records of a model, and the model rebuilt from the record (never from a preset).

A training workdir's config.json and a VIRST weights dir's meta share the record's shape:

    "components":    {name: {"config": <the component's config>, "num_params": n}} for
                     vision (UMT), projector (ToMe16), lm (Qwen2), sam2, initial_seg_fusion,
                     seg_prompter (a weights dir also has occ_predictor, unused by the model)
    "method_config": {"initial_seg_fusion", "anchors", "seg_token_id", "num_seg_tokens",
                      "lora": {"rank", "alpha", "target_modules", "include"} or null}
                     (training workdirs; a weights dir's switches are given at load time)

`num_params` counts `nnx.Param` elements without LoRA adapters.
"""

from collections.abc import Mapping
from typing import Any

from flax import nnx

from jax_refvos.errors import InputError
from jax_refvos.methods.virst import model as virst
from jax_refvos.methods.virst.anchor_updater import AnchorConfig
from jax_refvos.methods.virst.fusion_common import InitialSegFusionConfig, SegPrompterConfig
from jax_refvos.model.backbone import lora
from jax_refvos.model.backbone.lm_config import DecoderConfig
from jax_refvos.model.backbone.tome import Tome16Config
from jax_refvos.model.backbone.umt import UmtConfig
from jax_refvos.model.sam2.config import Sam2Config
from jax_refvos.weights.weights_dir import config_dict, dataclass_from_config, num_params

# record name -> (VirstConfig field, config class, Virst attribute)
COMPONENTS = {
    "vision": ("umt", UmtConfig, "vision_tower"),
    "projector": ("tome", Tome16Config, "mm_projector"),
    "lm": ("lm", DecoderConfig, "lm"),
    "sam2": ("sam2", Sam2Config, "seg_model"),
    "initial_seg_fusion": ("isf", InitialSegFusionConfig, "initial_seg_fusion_module"),
    "seg_prompter": ("segprompter", SegPrompterConfig, "seg_prompter"),
}
# VIRST's LoRA (reference/virst.md §2.3): every projection of the LLM's decoder layers.
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def lora_config(rank: int, alpha: float) -> lora.LoraConfig:
    """VIRST's adapters: r `rank`, alpha `alpha` on `LORA_TARGETS` of the decoder layers.

    DEVIATION(VIRST): adapter dropout 0.05 -> 0: the train step is dropout-free.
    """
    return lora.LoraConfig(
        rank=rank, alpha=alpha, target_modules=LORA_TARGETS, include=(r"layers",)
    )


def make_record(cfg: virst.VirstConfig, lora_cfg: lora.LoraConfig | None) -> dict[str, Any]:
    """The record of a model of config `cfg` (LoRA adapters `lora_cfg` on its LLM, or None)."""
    abstract = nnx.eval_shape(lambda: virst.Virst(cfg, rngs=nnx.Rngs(0)))
    components = {
        name: {
            "config": config_dict(getattr(cfg, field)),
            "num_params": num_params(getattr(abstract, attr)),
        }
        for name, (field, _, attr) in COMPONENTS.items()
    }
    method_config = {
        "initial_seg_fusion": bool(cfg.initial_seg_fusion),
        "anchors": config_dict(cfg.anchors),
        "seg_token_id": int(cfg.seg_token_id),
        "num_seg_tokens": int(cfg.num_seg_tokens),
        "lora": None
        if lora_cfg is None
        else {
            "rank": lora_cfg.rank,
            "alpha": lora_cfg.alpha,
            "target_modules": list(lora_cfg.target_modules),
            "include": list(lora_cfg.include),
        },
    }
    return {"components": components, "method_config": method_config}


def component_configs(components: Mapping[str, Any], source: str) -> dict[str, Any]:
    """{VirstConfig field: component config} from a record's `components`."""
    missing = sorted(set(COMPONENTS) - set(components))
    if missing:
        raise InputError(f"{source}: the record has no components {missing}")
    out = {}
    for name, (field, cls, _) in COMPONENTS.items():
        try:
            out[field] = dataclass_from_config(cls, components[name]["config"])
        except (InputError, KeyError, TypeError, ValueError) as e:
            raise InputError(f"{source}: component {name!r}: {e}") from None
    return out


def config_from_record(
    record: Mapping[str, Any], source: str, **overrides
) -> tuple[virst.VirstConfig, lora.LoraConfig | None]:
    """(VirstConfig, LoRA config or None) of a training workdir's record; `overrides` replace
    VirstConfig fields (e.g. `anchors` with `dynamic_update` switched)."""
    if "components" not in record or "method_config" not in record:
        raise InputError(f"{source}: no 'components' / 'method_config' (not a VIRST record)")
    mc = record["method_config"]
    try:
        fields = dict(
            initial_seg_fusion=bool(mc["initial_seg_fusion"]),
            anchors=dataclass_from_config(AnchorConfig, mc["anchors"]),
            seg_token_id=int(mc["seg_token_id"]),
            num_seg_tokens=int(mc["num_seg_tokens"]),
        )
        lr = mc.get("lora")
        lora_cfg = (
            None
            if lr is None
            else lora.LoraConfig(
                rank=int(lr["rank"]),
                alpha=float(lr["alpha"]),
                target_modules=tuple(lr["target_modules"]),
                include=tuple(lr["include"]),
            )
        )
    except (KeyError, TypeError, ValueError) as e:
        raise InputError(f"{source}: bad method_config ({type(e).__name__}: {e})") from None
    cfg = virst.VirstConfig(
        **component_configs(record["components"], source), **{**fields, **overrides}
    )
    return cfg, lora_cfg


def build_model(cfg: virst.VirstConfig, lora_cfg: lora.LoraConfig | None, seed: int) -> virst.Virst:
    """A randomly initialised model of `cfg` (parameters from `nnx.Rngs(seed)`, LoRA adapters
    from `nnx.Rngs(seed + 1)`)."""
    model = virst.Virst(cfg, rngs=nnx.Rngs(seed))
    if lora_cfg is not None:
        lora.apply_lora(model.lm, lora_cfg, rngs=nnx.Rngs(seed + 1))
    return model
