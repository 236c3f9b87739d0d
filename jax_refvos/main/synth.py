"""refvos synth: write the built-in synthetic RVOS benchmark in the MeViS layout.

Splits train (--num_videos videos), valid_u and valid (max(2, round(num_videos / 10)) each), each
with JPEGImages/, meta_expressions.json and mask_dict.json, plus a README.md describing the
generator, the expression families and the measured statistics. The output is deterministic for a
seed (whatever --num_workers). Re-running with the same parameters on a finished dataset does
nothing; a different existing --out_dir needs --overwrite.

Example: refvos synth --out_dir data/synth --num_videos 300 --seed 0
         refvos synth --out_dir data/synth_tiny --config configs/synth_benchmark.py:variant=tiny
(with --config, the config's `synth` section sets the parameters; flags given explicitly win)
"""

import dataclasses
import sys

from absl import flags

from jax_refvos import config_lib
from jax_refvos.datasets.synthetic import SynthConfig, generate_benchmark
from jax_refvos.datasets.synthetic.writer import default_num_workers, summary_lines
from jax_refvos.errors import InputError
from jax_refvos.main import cli

_DEFAULTS = {f.name: f.default for f in dataclasses.fields(SynthConfig)}


def define_flags(fv: flags.FlagValues) -> None:
    flags.DEFINE_string("out_dir", None, "Dataset root to write.", flag_values=fv)
    flags.DEFINE_string(
        "config",
        None,
        "configs/X.py[:arg] whose `synth` section gives the parameters (flags override it).",
        flag_values=fv,
    )
    flags.mark_flag_as_required("out_dir", flag_values=fv)
    flags.DEFINE_integer(
        "num_videos",
        _DEFAULTS["num_videos"],
        "Videos in train; valid_u and valid get max(2, round(N/10)) each.",
        flag_values=fv,
    )
    flags.DEFINE_integer("seed", _DEFAULTS["seed"], "Random seed.", flag_values=fv)
    flags.DEFINE_integer("height", _DEFAULTS["height"], "Frame height (>= 32).", flag_values=fv)
    flags.DEFINE_integer("width", _DEFAULTS["width"], "Frame width (>= 32).", flag_values=fv)
    flags.DEFINE_integer(
        "num_frames", _DEFAULTS["num_frames"], "Maximum frames per video (>= 4).", flag_values=fv
    )
    flags.DEFINE_integer(
        "min_frames",
        _DEFAULTS["min_frames"],
        "Minimum frames per video (default: max(4, ceil(num_frames / 2))).",
        flag_values=fv,
    )
    flags.DEFINE_integer(
        "num_workers",
        None,
        f"Worker processes (default: min(4, CPU count) = {default_num_workers()} here); the output"
        " does not depend on it.",
        flag_values=fv,
    )
    flags.DEFINE_boolean("overwrite", False, "Replace an existing --out_dir.", flag_values=fv)


def synth_config(fv: flags.FlagValues) -> SynthConfig:
    """The config's `synth` section (or the defaults), with explicitly given flags on top."""
    base = SynthConfig()
    if fv.config:
        experiment = config_lib.load(fv.config)
        if "synth" not in experiment:
            raise InputError(f"{fv.config}: the config has no `synth` section")
        base = config_lib.to_dataclass(SynthConfig, experiment.synth, where=f"{fv.config}: synth")
    given = {name: fv[name].value for name in _DEFAULTS if fv[name].present}
    return dataclasses.replace(base, **given)


def run(fv: flags.FlagValues) -> None:
    cfg = synth_config(fv)
    summary = generate_benchmark(
        fv.out_dir, cfg, num_workers=fv.num_workers, overwrite=fv.overwrite
    )
    p = summary["parameters"]
    if summary["up_to_date"]:
        print(f"{fv.out_dir} is up to date (same parameters and generator version); nothing to do")
        return
    print(
        f"wrote the synthetic benchmark to {fv.out_dir} (seed {p['seed']},"
        f" {p['height']}x{p['width']}, {p['min_frames']}-{p['num_frames']} frames per video)"
    )
    for line in summary_lines(summary):
        print(line)


def main(argv=None) -> int:
    return cli.run_command("synth", __doc__, define_flags, run, argv)


if __name__ == "__main__":
    sys.exit(main())
