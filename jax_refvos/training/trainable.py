"""Which parameters train: path regexes over the model's variable paths.

A parameter's path is its attribute path joined by "/", e.g. `vision_tower/blocks/0/attn/qkv/
kernel` or `lm/model/layers/3/self_attn/q_proj/lora_A/kernel`. A parameter trains when it
matches one `trainable` pattern and no `frozen` pattern (`re.search`). A method names its rule
(`Method.trainable`; VIRST's paper recipe is `methods/virst/config.py::VIRST_PAPER`).
"""

import dataclasses
import re
from collections.abc import Sequence

import jax
from flax import nnx


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainableSpec:
    """Regex lists over "/"-joined parameter paths (frozen wins over trainable)."""

    trainable: tuple[str, ...] = (".*",)
    frozen: tuple[str, ...] = ()

    def matches(self, path: Sequence) -> bool:
        text = path_text(path)
        if any(re.search(p, text) for p in self.frozen):
            return False
        return any(re.search(p, text) for p in self.trainable)

    def filter(self):
        """An NNX filter: `nnx.Param` variables whose path trains."""
        return nnx.All(nnx.Param, lambda path, _: self.matches(path))


def path_text(path: Sequence) -> str:
    return "/".join(str(getattr(p, "key", p)) for p in path)


def param_counts(model: nnx.Module, spec: TrainableSpec) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    train = sum(x.size for x in jax.tree.leaves(nnx.state(model, spec.filter())))
    return int(train), int(total)


# Everything trains (from scratch). Methods define their recipes beside their configs.
EVERYTHING = TrainableSpec()
