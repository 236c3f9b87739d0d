"""The trainer's part of an experiment config, and the check of the whole config against it and
its method's part.

Every training config (`configs/*.py`) names its `method` (a key of `methods.registry.METHODS`)
and holds the trainer's keys below; the method owns the rest (`Method.sections` /
`Method.scalars`). `validate` builds every section's frozen dataclass (`config_lib.to_dataclass`):
an unknown, missing or mistyped key is an InputError naming the section.
"""

import dataclasses

import ml_collections

from jax_refvos import config_lib
from jax_refvos.errors import InputError
from jax_refvos.training.optim import OptimConfig


@dataclasses.dataclass(frozen=True, kw_only=True)
class MeshSection:
    """Device counts per mesh axis; -1 = the rest; all 0 = automatic (`training.mesh`)."""

    data: int = -1
    fsdp: int = 1
    model: int = 1


# The trainer's sections -> the dataclass that consumes each.
SECTIONS = {"mesh": MeshSection, "optim": OptimConfig}
# The trainer's scalars. `data.batch_size` (videos per process and step) is the one key the
# trainer reads from a method's section: every method's `data` section has it.
SCALARS = frozenset(
    {
        "method",
        "seed",
        "steps",
        "log_every",
        "ckpt_every",
        "keep_checkpoints",
        "skip_nonfinite",
        "peak_flops",
    }
)
REQUIRED = ("method", "seed", "steps", "log_every", "ckpt_every", "keep_checkpoints")


def validate(c: ml_collections.ConfigDict, method, source: str = "config") -> None:
    """Every section builds its dataclass; every key belongs to the trainer or to `method`."""
    sections = {**SECTIONS, **method.sections}
    scalars = SCALARS | method.scalars
    for key in REQUIRED:
        if key not in c:
            raise InputError(f"{source}: missing key {key!r}")
    for key in c:
        if key in scalars:
            continue
        if key not in sections:
            raise InputError(
                f"{source}: unknown key {key!r} for method {method.name!r} "
                f"(sections: {sorted(sections)}; scalars: {sorted(scalars)})"
            )
        config_lib.to_dataclass(sections[key], c[key], where=f"{source}: {key}")
    if "data" not in c or "batch_size" not in c.data:
        raise InputError(f"{source}: data.batch_size (videos per process and step) is missing")
    for key in ("steps", "log_every", "ckpt_every", "keep_checkpoints"):
        if int(c[key]) < 1:
            raise InputError(f"{source}: {key} must be >= 1, got {c[key]}")
