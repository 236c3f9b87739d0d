"""LoRA for any Flax NNX model, with peft's semantics and state-dict names.

Follows peft/tuners/lora/layer.py::Linear (peft >= 0.7) as VIRST and GLUS/LISA use it:
`y = base(x) + scale * lora_B(lora_A(dropout(x)))`, `scale = alpha / rank` (or
`alpha / sqrt(rank)` with rsLoRA), lora_A kaiming-uniform (`a=sqrt(5)`, peft's
`init_lora_weights=True`), lora_B zeros, so a fresh adapter leaves the model unchanged.

    VIRST (Qwen2): LoraConfig(rank=64, alpha=16, dropout=0.05, include=(r"layers",),
                   exclude=(r"seg_model",), target_modules=QWEN2_TARGETS)
    GLUS / LISA (LLaMA): LoraConfig(rank=8, alpha=16, dropout=0.05,
                   target_modules=("q_proj", "v_proj"))

Usage: build the model, then `apply_lora(model, cfg, rngs=rngs)` (before or after
`sharding.place_state`: adapters carry logical axes derived from their base kernel); train
`nnx.split(model, LoraParam, ...)`; export with `strip_lora(model)`. peft state dicts load
through `weights/peft.py` (`load_torch_state(model, peft_to_ours(peft_state_dict))`, or
`load_peft_adapter(model, adapter_state)` for an adapter-only file on top of loaded base
weights). Stacked layers (`scan_layers`, kernels [layers, in, out]) get stacked adapters
[layers, in, r], [layers, r, out].

Why not `nnx.LoRA` / `nnx.LoRALinear`: their attribute names (`lora_a`/`lora_b` raw arrays,
`base_module`) do not mirror peft's `base_layer` / `lora_A.default.weight`, they have no
dropout, no alpha scaling, no merge/unmerge, and `nnx.LoRALinear` must be built in place of the
Linear rather than wrapped around an existing (already loaded, already sharded) one.
"""

import dataclasses
import math
import re

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from jaxtyping import Array, Float

from jax_refvos.errors import InputError

QWEN2_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class LoraError(InputError):
    """A LoRA config that matches nothing, or a peft state dict we cannot map."""


class LoraParam(nnx.Param):
    """A LoRA adapter weight: the trainable part under LoRA fine-tuning.

    A subclass of `nnx.Param`, so `nnx.split(model, LoraParam, nnx.Param, ...)` gives
    (adapters, frozen base params, rest) and plain `nnx.Param` filters still see it.
    """


@dataclasses.dataclass(frozen=True, kw_only=True)
class LoraConfig:
    """Which Linears get an adapter, and its shape (peft `LoraConfig` subset).

    A Linear is matched on its torch-style dotted path (`layers.0.self_attn.q_proj`):
    - `target_modules`: the path's last component equals one of them (peft's list form), or
      `target_regex`: the whole path matches it (`re.fullmatch`, peft's str form); exactly one
      of the two is given;
    - and, if `include` is non-empty, some `include` regex is found in the path (`re.search`);
    - and no `exclude` regex is found in the path.
    """

    rank: int
    alpha: float
    dropout: float = 0.0
    target_modules: tuple[str, ...] = ()
    target_regex: str | None = None
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    use_rslora: bool = False

    def __post_init__(self):
        for name in ("target_modules", "include", "exclude"):
            value = getattr(self, name)
            if isinstance(value, str):
                raise LoraError(f"lora.py: LoraConfig.{name} must be a tuple, got str {value!r}")
            object.__setattr__(self, name, tuple(value))
        if self.rank < 1:
            raise LoraError(f"lora.py: LoraConfig.rank must be >= 1, got {self.rank}")
        if not 0.0 <= self.dropout < 1.0:
            raise LoraError(f"lora.py: LoraConfig.dropout must be in [0, 1), got {self.dropout}")
        if bool(self.target_modules) == (self.target_regex is not None):
            raise LoraError("lora.py: give exactly one of target_modules and target_regex")
        for pattern in (*self.include, *self.exclude, self.target_regex or ""):
            re.compile(pattern)

    @property
    def scale(self) -> float:
        """alpha / rank (peft default) or alpha / sqrt(rank) (`use_rslora`)."""
        return self.alpha / (math.sqrt(self.rank) if self.use_rslora else self.rank)

    def matches(self, path: str) -> bool:
        """Whether the Linear at dotted `path` gets an adapter."""
        if self.target_regex is not None:
            hit = re.fullmatch(self.target_regex, path) is not None
        else:
            hit = path.rsplit(".", 1)[-1] in self.target_modules
        if self.include and not any(re.search(p, path) for p in self.include):
            return False
        return hit and not any(re.search(p, path) for p in self.exclude)


def _kaiming_uniform_a_sqrt5(key: jax.Array, shape: tuple[int, ...], dtype) -> jax.Array:
    # torch kaiming_uniform_(a=sqrt(5)) on weight [r, in]: gain sqrt(2 / 6), bound
    # gain * sqrt(3 / fan_in) = 1 / sqrt(fan_in); our kernel is [..., in, r], fan_in = shape[-2].
    bound = 1.0 / math.sqrt(shape[-2])
    return jax.random.uniform(key, shape, dtype, -bound, bound)


def _lora_param(value: jax.Array, base: nnx.Variable, axes: tuple[int | None, ...]):
    """LoraParam for `value`, annotated and placed like the base kernel's dims picked by `axes`.

    `axes[i]` is the base-kernel dim that dim i of `value` follows (None: replicated). The
    logical names become metadata (R7); the value is placed only if the base already is (on a
    mesh), so `sharding.place_state` before or after `apply_lora` gives the same layout.
    """
    logical = base.get_metadata().get("out_sharding")
    if not logical:
        return LoraParam(value)
    out_sharding = tuple(None if a is None else logical[a] for a in axes)
    try:
        concrete = base.get_value().sharding
    except Exception:  # a tracer under jit / eval_shape: metadata only
        concrete = None
    if isinstance(concrete, NamedSharding):
        spec = tuple(concrete.spec) + (None,) * (base.get_value().ndim - len(concrete.spec))
        pspec = P(*(None if a is None else spec[a] for a in axes))
        value = jax.device_put(value, NamedSharding(concrete.mesh, pspec))
    return LoraParam(value, out_sharding=out_sharding, eager_sharding=False)


class LoraLinear(nnx.Module):
    """An `nnx.Linear` plus a low-rank update: `base(x) + scale * B(A(dropout(x)))`.

    Port of peft/tuners/lora/layer.py::Linear (single adapter). Attribute names mirror peft's
    so `q_proj/base_layer/kernel`, `q_proj/lora_A/kernel`, `q_proj/lora_B/kernel` are the torch
    keys `q_proj.base_layer.weight`, `q_proj.lora_A.weight`, `q_proj.lora_B.weight` (peft adds
    the adapter name, `lora_A.default.weight`; `peft_to_ours` drops it).

    Attributes:
        base_layer: the wrapped Linear, kernel [in, out]; frozen by convention (plain Param).
        lora_A: Linear in -> rank, no bias, kernel a `LoraParam` [in, rank].
        lora_B: Linear rank -> out, no bias, kernel a `LoraParam` [rank, out], zeros at init.
        scale: alpha / rank (or alpha / sqrt(rank)).
        merged: whether the update is folded into `base_layer.kernel` (then it is not re-added).
    """

    def __init__(
        self,
        base_layer: nnx.Linear,
        *,
        rank: int,
        alpha: float,
        dropout: float = 0.0,
        use_rslora: bool = False,
        rngs: nnx.Rngs,
    ):
        self.base_layer = base_layer
        self.rank = rank
        self.scale = alpha / (math.sqrt(rank) if use_rslora else rank)
        self.merged = False
        d_in, d_out = base_layer.in_features, base_layer.out_features
        dtype, param_dtype = base_layer.dtype, base_layer.param_dtype
        zeros = nnx.initializers.zeros
        self.lora_A = nnx.Linear(
            d_in,
            rank,
            use_bias=False,
            dtype=dtype,
            param_dtype=param_dtype,
            kernel_init=zeros,
            rngs=rngs,
        )
        self.lora_B = nnx.Linear(
            rank,
            d_out,
            use_bias=False,
            dtype=dtype,
            param_dtype=param_dtype,
            kernel_init=zeros,
            rngs=rngs,
        )
        # A stacked base (scan_layers: kernel [layers, in, out]) gets stacked adapters.
        lead = base_layer.kernel.get_value().shape[:-2]
        keep = tuple(range(len(lead)))
        a = _kaiming_uniform_a_sqrt5(rngs.params(), (*lead, d_in, rank), param_dtype)
        self.lora_A.kernel = _lora_param(a, base_layer.kernel, (*keep, len(lead), None))
        b = jnp.zeros((*lead, rank, d_out), param_dtype)
        self.lora_B.kernel = _lora_param(b, base_layer.kernel, (*keep, None, len(lead) + 1))
        self.lora_dropout = nnx.Dropout(dropout)

    @property
    def in_features(self) -> int:
        return self.base_layer.in_features

    @property
    def out_features(self) -> int:
        return self.base_layer.out_features

    def delta(self) -> Float[Array, "*n i o"]:
        """The kernel update `scale * A @ B`, [(layers,) in, out], in the base kernel's dtype."""
        a, b = self.lora_A.kernel.get_value(), self.lora_B.kernel.get_value()
        return (self.scale * (a @ b)).astype(self.base_layer.kernel.get_value().dtype)

    def __call__(
        self, x: Float[Array, "*b i"], *, rngs: nnx.Rngs | None = None, out_sharding=None
    ) -> Float[Array, "*b o"]:
        """Args: x [..., in]; rngs: enables LoRA dropout (None = deterministic)."""
        y = self.base_layer(x, out_sharding=out_sharding)
        if self.merged:
            return y
        h = self.lora_dropout(x, deterministic=rngs is None, rngs=rngs)
        return y + self.scale * self.lora_B(self.lora_A(h), out_sharding=out_sharding)


def call_linear(layer: nnx.Module, x: jax.Array, *, rngs: nnx.Rngs | None = None) -> jax.Array:
    """`layer(x)`, passing `rngs` (LoRA dropout) only when `layer` is a `LoraLinear`.

    Lets model code written against plain `nnx.Linear` reach LoRA dropout when training.
    """
    return layer(x, rngs=rngs) if isinstance(layer, LoraLinear) else layer(x)


def _dotted(path: tuple) -> str:
    return ".".join(str(p) for p in path)


def _replace(nodes: dict, path: tuple, new) -> None:
    parent, key = nodes[path[:-1]], path[-1]
    if isinstance(parent, nnx.List | list | nnx.Dict | dict):
        parent[key] = new
    else:
        setattr(parent, key, new)


def _find(model: nnx.Module, cls: type) -> tuple[dict, list[tuple]]:
    nodes = dict(nnx.iter_graph(model))
    return nodes, sorted((p for p, n in nodes.items() if isinstance(n, cls) and p), key=_dotted)


def apply_lora(model: nnx.Module, cfg: LoraConfig, *, rngs: nnx.Rngs) -> list[str]:
    """Wrap every `nnx.Linear` that `cfg` matches in a `LoraLinear`, in place.

    Linears inside an existing `LoraLinear` are never matched. Adapter kernels get logical
    axes (lora_A: base in-axis, None; lora_B: None, base out-axis) when the base kernel has them,
    and the base's placement when it is already on a mesh.

    Returns:
        The dotted paths of the wrapped Linears, sorted.

    Raises:
        LoraError: nothing matched, or a matched layer already has an adapter.
    """
    nodes, wrapped = _find(model, LoraLinear)
    already = [_dotted(p) for p in wrapped]
    if any(cfg.matches(p) for p in already):
        raise LoraError(
            f"lora.py: LoRA is already applied at {[p for p in already if cfg.matches(p)]}"
        )
    targets = [
        path
        for path, node in nodes.items()
        if isinstance(node, nnx.Linear)
        and path
        and not any(_dotted(path).startswith(p + ".") for p in already)
        and cfg.matches(_dotted(path))
    ]
    if not targets:
        raise LoraError(f"lora.py: no nnx.Linear matches {cfg}")
    targets.sort(key=_dotted)
    for path in targets:
        layer = LoraLinear(
            nodes[path],
            rank=cfg.rank,
            alpha=cfg.alpha,
            dropout=cfg.dropout,
            use_rslora=cfg.use_rslora,
            rngs=rngs,
        )
        _replace(nodes, path, layer)
    return [_dotted(p) for p in targets]


def _fold(model: nnx.Module, merge: bool) -> list[str]:
    nodes, paths = _find(model, LoraLinear)
    done = []
    for path in paths:
        layer = nodes[path]
        if layer.merged != merge:
            kernel, delta = layer.base_layer.kernel, layer.delta()
            kernel.set_value(kernel.get_value() + (delta if merge else -delta))
            layer.merged = merge
            done.append(_dotted(path))
    return done


def merge_lora(model: nnx.Module) -> list[str]:
    """Fold each adapter into its base kernel (`kernel += scale * A @ B`), in place.

    Already merged layers are left alone. Returns the paths merged now.
    """
    return _fold(model, merge=True)


def unmerge_lora(model: nnx.Module) -> list[str]:
    """Undo `merge_lora` (`kernel -= scale * A @ B`), in place; returns the paths unmerged."""
    return _fold(model, merge=False)


def strip_lora(model: nnx.Module) -> list[str]:
    """Merge, then replace every `LoraLinear` by its base `nnx.Linear` (export / inference)."""
    merge_lora(model)
    nodes, paths = _find(model, LoraLinear)
    for path in paths:
        _replace(nodes, path, nodes[path].base_layer)
    return [_dotted(p) for p in paths]


def split_lora(model: nnx.Module) -> tuple[nnx.GraphDef, nnx.State, nnx.State]:
    """(graphdef, LoRA weights, everything else): differentiate only the middle one."""
    return nnx.split(model, LoraParam, ...)
