"""Configuration of the decoder-only causal LM (Qwen2 and LLaMA families).

`DecoderConfig` is the frozen, hashable component config of `decoder_lm.DecoderLM`;
`DecoderConfig.from_hf(config_dict)` reads a HF `config.json` dict (model_type `qwen2` or `llama`,
transformers 4 style `rope_theta`/`rope_scaling` or transformers 5 style `rope_parameters`).
RoPE scaling is a `RopeScaling` dataclass (a dict is accepted and converted) so that the config
stays hashable: NNX keeps it in the module's graphdef, which `jax.jit` hashes.
"""

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp

from jax_refvos.errors import InputError

ROPE_TYPES = ("default", "linear", "dynamic", "llama3", "yarn")


class ConfigError(InputError):
    """A HF config.json that we cannot map onto `DecoderConfig`."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class RopeScaling:
    """RoPE scaling parameters, as HF's `rope_parameters` / `rope_scaling` dict names them.

    Only the fields the variant uses matter: linear/dynamic: `factor`; llama3: `factor`,
    `low_freq_factor`, `high_freq_factor`, `original_max_position_embeddings`; yarn: `factor`,
    `original_max_position_embeddings`, `beta_fast`, `beta_slow`, `attention_factor`, `mscale`,
    `mscale_all_dim`, `truncate`.
    """

    rope_type: str = "default"
    factor: float | None = None
    low_freq_factor: float | None = None
    high_freq_factor: float | None = None
    original_max_position_embeddings: int | None = None
    beta_fast: float | None = None
    beta_slow: float | None = None
    attention_factor: float | None = None
    mscale: float | None = None
    mscale_all_dim: float | None = None
    truncate: bool = True

    def __post_init__(self):
        if self.rope_type not in ROPE_TYPES:
            raise ConfigError(f"unsupported rope_type {self.rope_type!r}; supported: {ROPE_TYPES}")
        needs = {
            "linear": ("factor",),
            "dynamic": ("factor",),
            "llama3": ("factor", "low_freq_factor", "high_freq_factor"),
            "yarn": (),
        }.get(self.rope_type, ())
        missing = [n for n in needs if getattr(self, n) is None]
        if missing:
            raise ConfigError(f"rope_type {self.rope_type!r} needs {missing}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, max_position_embeddings: int) -> "RopeScaling":
        """From a HF dict (`type` or `rope_type`; `rope_theta` and unknown keys are ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k in names and v is not None}
        kw["rope_type"] = d.get("rope_type", d.get("type", "default"))
        if kw["rope_type"] in ("llama3", "yarn"):
            # HF standardize_rope_params: the pretraining length defaults to max positions.
            kw.setdefault("original_max_position_embeddings", max_position_embeddings)
        return cls(**kw)


@dataclasses.dataclass(frozen=True, kw_only=True)
class DecoderConfig:
    """Decoder-only LM hyper-parameters (HF `Qwen2Config` / `LlamaConfig` names).

    `attention_bias` puts biases on q/k/v; `o_proj_bias` on o_proj (LLaMA uses `attention_bias`
    for both, Qwen2 has q/k/v bias and no o_proj bias). `head_dim=None` means
    hidden_size // num_attention_heads (resolved at construction, so `dataclasses.replace` of
    hidden_size or heads keeps the old head_dim unless head_dim=None is passed too).
    `scan_layers` stacks the layers on a leading axis and runs them with `lax.scan` (LoRA
    wrapping is not supported then); `remat` checkpoints each layer. `dtype` is the compute
    dtype, `param_dtype` the storage dtype.
    """

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int | None = None
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: RopeScaling | None = None
    attention_bias: bool = False
    o_proj_bias: bool = False
    mlp_bias: bool = False
    tie_word_embeddings: bool = False
    max_position_embeddings: int = 4096
    scan_layers: bool = False
    remat: bool = False
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32

    def __post_init__(self):
        # Frozen dataclass: normalise fields in place with object.__setattr__.
        if self.head_dim is None:
            object.__setattr__(self, "head_dim", self.hidden_size // self.num_attention_heads)
        if isinstance(self.rope_scaling, Mapping):
            scaling = RopeScaling.from_dict(
                self.rope_scaling, max_position_embeddings=self.max_position_embeddings
            )
            object.__setattr__(self, "rope_scaling", scaling)
        if self.rope_scaling is not None and self.rope_scaling.rope_type == "default":
            object.__setattr__(self, "rope_scaling", None)
        object.__setattr__(self, "dtype", jnp.dtype(self.dtype))
        object.__setattr__(self, "param_dtype", jnp.dtype(self.param_dtype))
        if self.num_attention_heads % self.num_key_value_heads:
            raise ConfigError(
                f"num_attention_heads {self.num_attention_heads} is not a multiple of "
                f"num_key_value_heads {self.num_key_value_heads}"
            )

    @property
    def rope_type(self) -> str:
        return "default" if self.rope_scaling is None else self.rope_scaling.rope_type

    @classmethod
    def from_hf(cls, config: Mapping[str, Any], *, source: str = "config.json", **overrides):
        """From a HF `config.json` dict (model_type qwen2 or llama); `overrides` replace fields.

        Raises:
            ConfigError: unknown model_type, an unsupported activation, sliding-window attention
                or RoPE variant, naming `source`.
        """
        model_type = config.get("model_type")
        if model_type not in ("qwen2", "llama"):
            raise ConfigError(f"{source}: model_type {model_type!r} is not qwen2 or llama")
        if config.get("hidden_act", "silu") != "silu":
            raise ConfigError(f"{source}: hidden_act {config['hidden_act']!r} is not silu")
        if model_type == "qwen2" and config.get("use_sliding_window", False):
            raise ConfigError(f"{source}: use_sliding_window=true is not supported")
        try:
            max_pos = int(config.get("max_position_embeddings", 4096))
            rope = dict(config.get("rope_parameters") or config.get("rope_scaling") or {})
            theta = rope.get("rope_theta", config.get("rope_theta", 10000.0))
            scaling = None
            if rope.get("rope_type", rope.get("type", "default")) != "default":
                scaling = RopeScaling.from_dict(rope, max_position_embeddings=max_pos)
            heads = int(config["num_attention_heads"])
            if model_type == "qwen2":
                qkv_bias, o_bias, mlp_bias = True, False, False
            else:
                qkv_bias = o_bias = bool(config.get("attention_bias", False))
                mlp_bias = bool(config.get("mlp_bias", False))
            kw = dict(
                vocab_size=int(config["vocab_size"]),
                hidden_size=int(config["hidden_size"]),
                intermediate_size=int(config["intermediate_size"]),
                num_hidden_layers=int(config["num_hidden_layers"]),
                num_attention_heads=heads,
                num_key_value_heads=int(config.get("num_key_value_heads") or heads),
                head_dim=config.get("head_dim"),
                rms_norm_eps=float(config.get("rms_norm_eps", 1e-6)),
                rope_theta=float(theta),
                rope_scaling=scaling,
                attention_bias=qkv_bias,
                o_proj_bias=o_bias,
                mlp_bias=mlp_bias,
                tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
                max_position_embeddings=max_pos,
            )
        except KeyError as e:
            raise ConfigError(f"{source}: missing key {e.args[0]!r}") from None
        kw.update(overrides)
        return cls(**kw)


def qwen2_7b(**overrides) -> DecoderConfig:
    """Qwen2-7B as VIRST uses it (vocab resized to 151647, untied, q/k/v bias)."""
    kw = dict(
        vocab_size=151647,
        hidden_size=3584,
        intermediate_size=18944,
        num_hidden_layers=28,
        num_attention_heads=28,
        num_key_value_heads=4,
        rms_norm_eps=1e-6,
        rope_theta=1e6,
        attention_bias=True,
        tie_word_embeddings=False,
        max_position_embeddings=32768,
    )
    return DecoderConfig(**(kw | overrides))


def llama_7b(**overrides) -> DecoderConfig:
    """LLaMA-7B as LISA-7B-v1 / GLUS use it (MHA, vocab 32004, untied, no biases)."""
    kw = dict(
        vocab_size=32004,
        hidden_size=4096,
        intermediate_size=11008,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=32,
        rms_norm_eps=1e-6,
        rope_theta=1e4,
        tie_word_embeddings=False,
        max_position_embeddings=2048,
    )
    return DecoderConfig(**(kw | overrides))


def tiny_qwen2(**overrides) -> DecoderConfig:
    """A test-size Qwen2 (GQA 4/2, q/k/v bias; odd sizes so a wrong axis cannot broadcast)."""
    kw = dict(
        vocab_size=97,
        hidden_size=32,
        intermediate_size=44,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        rope_theta=1e6,
        attention_bias=True,
        max_position_embeddings=64,
    )
    return DecoderConfig(**(kw | overrides))


def tiny_llama(**overrides) -> DecoderConfig:
    """A test-size LLaMA (MHA, no biases)."""
    kw = dict(
        vocab_size=89,
        hidden_size=32,
        intermediate_size=52,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        rope_theta=1e4,
        max_position_embeddings=64,
    )
    return DecoderConfig(**(kw | overrides))
