r"""The built-in synthetic RVOS benchmark (MeViS layout) and its union-of-objects baseline.

Variants: `default` (what the quickstart generates: ~300 train videos, 240x320, 12-24 frames),
`tiny` (seconds on a CPU; for smoke tests), `hd` (480x854, 24-48 frames; closer to MeViS).

  refvos synth --config=configs/synth_benchmark.py:variant=tiny --out_dir=data/synth_tiny
  refvos baseline --dataset_root=data/synth_tiny --split=valid_u --pred_dir=runs/union_tiny
  refvos score --dataset_root=data/synth_tiny --split=valid_u --pred_dir=runs/union_tiny
"""

import ml_collections

from jax_refvos import config_lib

VARIANTS = {
    "default": dict(num_videos=300, height=240, width=320, num_frames=24),
    "tiny": dict(num_videos=8, height=64, width=96, num_frames=8),
    "hd": dict(num_videos=1000, height=480, width=854, num_frames=48),
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = config_lib.parse_arg(arg, variant="default", seed=0)
    if arg.variant not in VARIANTS:
        raise ValueError(f"unknown variant {arg.variant!r}; choose from {sorted(VARIANTS)}")
    c = ml_collections.ConfigDict()
    c.seed = arg.seed
    c.synth = dict(VARIANTS[arg.variant], seed=arg.seed)
    return c
