"""peft LoRA state dicts -> our `model/backbone/lora.py` adapters (names, adapter-only files).

peft saves a LoRA-wrapped Linear as `X.base_layer.weight` + `X.lora_A.default.weight` +
`X.lora_B.default.weight` (peft >= 0.7; older: the base weight at `X.weight`), optionally under
`base_model.model.`; an adapter-only file (`adapter_model.safetensors`) holds just the lora_A/B
tensors. Our `LoraLinear` mirrors those names without the adapter name.
"""

import re
from collections.abc import Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding

from jax_refvos.model.backbone.lora import LoraError, LoraParam
from jax_refvos.weights import torch_names

_ADAPTER_KEY = re.compile(r"^(.*)\.(lora_A|lora_B)\.(?:([^.]+)\.)?weight$")


def peft_to_ours(
    state: Mapping[str, np.ndarray],
    *,
    prefix: str = "base_model.model.",
    adapter_name: str = "default",
) -> dict[str, np.ndarray]:
    """Rename a peft LoRA state dict to our torch-style keys (for `load_torch_state`).

    - strips `prefix` (peft's `PeftModel` wrapper) from keys that have it;
    - `X.lora_A.default.weight` -> `X.lora_A.weight` (also accepts the adapter-file form
      `X.lora_A.weight`); another adapter name is an error;
    - the peft < 0.7 layout (base weight at `X.weight`, next to `X.lora_A...`) becomes
      `X.base_layer.weight` / `X.base_layer.bias`.

    Raises:
        LoraError: keys of another adapter, or LoRA variants we do not implement (DoRA,
        LoRA on embeddings or convs).
    """
    out: dict[str, np.ndarray] = {}
    wrapped: set[str] = set()
    bad = []
    for key, value in state.items():
        key = key.removeprefix(prefix)
        m = _ADAPTER_KEY.match(key)
        if m:
            module, which, name = m.groups()
            if name not in (None, adapter_name):
                bad.append(key)
                continue
            out[f"{module}.{which}.weight"] = value
            wrapped.add(module)
        elif re.search(r"(^|\.)lora_", key):
            bad.append(key)
        else:
            out[key] = value
    if bad:
        raise LoraError(
            f"peft.py: peft keys we cannot map (adapter other than {adapter_name!r}, or an "
            f"unsupported LoRA variant): {', '.join(sorted(bad))}"
        )
    for module in wrapped:
        if f"{module}.base_layer.weight" in out:
            continue
        for leaf in ("weight", "bias"):
            if f"{module}.{leaf}" in out:
                out[f"{module}.base_layer.{leaf}"] = out.pop(f"{module}.{leaf}")
    return out


def load_peft_adapter(
    model: nnx.Module, state: Mapping[str, np.ndarray], *, source: str = "adapter", **kwargs
) -> None:
    """Load only the LoRA weights of a peft state dict (e.g. `adapter_model.safetensors`).

    Every `LoraParam` must get a tensor; base weights in `state` are ignored. `kwargs` go to
    `peft_to_ours`.

    Raises:
        torch_names.WeightMismatchError: missing, unexpected or mis-shaped LoRA tensors.
    """
    given = {k: v for k, v in peft_to_ours(state, **kwargs).items() if ".lora_" in k}
    targets = {
        k: (var, fn)
        for k, (var, fn) in torch_names.torch_key_map(model).items()
        if isinstance(var, LoraParam)
    }
    problems = []
    if missing := sorted(set(targets) - set(given)):
        problems.append(f"missing keys ({len(missing)}): {', '.join(missing)}")
    if unexpected := sorted(set(given) - set(targets)):
        problems.append(f"unexpected keys ({len(unexpected)}): {', '.join(unexpected)}")
    values = {}
    for key in sorted(set(targets) & set(given)):
        var, fn = targets[key]
        values[key] = fn(np.asarray(given[key]))
        if values[key].shape != var.get_value().shape:
            problems.append(f"{key}: shape {values[key].shape}, model {var.get_value().shape}")
    if problems:
        raise torch_names.WeightMismatchError(
            f"{source}: LoRA weights do not fit; " + "; ".join(problems)
        )
    for key, value in values.items():
        var = targets[key][0]
        old = var.get_value()
        new = jnp.asarray(value, dtype=old.dtype)
        if isinstance(getattr(old, "sharding", None), NamedSharding):
            new = jax.device_put(new, old.sharding)
        var.set_value(new)
