"""Every experiment in configs/ builds its `tiny` variant into the components' typed configs."""

from pathlib import Path

import pytest

from jax_refvos import config_lib
from jax_refvos.datasets.synthetic import SynthConfig
from jax_refvos.main import synth
from jax_refvos.methods import registry
from jax_refvos.training import run_config

CONFIGS = sorted((Path(__file__).parents[1] / "configs").glob("*.py"))
# Configs without a `method` (data configs): section -> the frozen dataclass that consumes it. A
# new section must be registered here, so no section goes unvalidated. Training configs are
# checked against the trainer's sections and their method's (`run_config.validate`).
SECTIONS = {"synth": SynthConfig}
SCALARS = {"seed"}


def test_there_are_configs():
    assert CONFIGS


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_builds_tiny(path):
    cfg = config_lib.load(path, "variant=tiny")
    if "method" in cfg:
        run_config.validate(cfg, registry.get(cfg.method), source=path.name)
        assert config_lib.to_json(cfg)
        return
    for key in cfg:
        if key in SCALARS:
            continue
        assert key in SECTIONS, f"{path.name}: section {key!r} has no registered dataclass"
        built = config_lib.to_dataclass(SECTIONS[key], cfg[key])
        if hasattr(built, "validate"):
            built.validate()
    assert config_lib.to_json(cfg)


def test_synth_flags_override_the_config():
    spec = f"{CONFIGS[0].parent / 'synth_benchmark.py'}:variant=tiny"
    fv = synth.flags.FlagValues()
    synth.define_flags(fv)
    fv(["refvos synth", "--out_dir=x", f"--config={spec}", "--seed=5"])
    cfg = synth.synth_config(fv)
    assert (cfg.num_videos, cfg.height, cfg.width, cfg.seed) == (8, 64, 96, 5)
