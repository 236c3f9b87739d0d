"""The synthetic benchmark as a tiny run's training data: generated and converted when missing."""

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jax_refvos import config_lib

log = logging.getLogger(__name__)


def ensure_synthetic_records(synth_root: str, train_records: str, synth: Mapping[str, Any]) -> None:
    """Make `train_records` from the synthetic benchmark at `synth_root` (generated first with
    the `synth` settings, a `SynthConfig` dict, when its train split is missing). Nothing
    happens when the records exist or `synth_root` is empty."""
    records = Path(train_records)
    if (records / "manifest.json").is_file() or not synth_root:
        return
    from jax_refvos.datasets.convert import convert_dataset
    from jax_refvos.datasets.synthetic import SynthConfig, generate_benchmark

    root = Path(synth_root)
    if not (root / "train").is_dir():
        log.info("creating the synthetic benchmark in %s", root)
        generate_benchmark(root, config_lib.to_dataclass(SynthConfig, synth, where="synth"))
    log.info("converting %s/train to %s", root, records)
    convert_dataset("synth", root, "train", records)
