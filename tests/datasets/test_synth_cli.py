"""`refvos synth` on the command line: writes, is idempotent, never clobbers, bad flags."""

import json
import math
from pathlib import Path

import pytest
from absl import flags
from mevis_reader import read_mevis_split, tree_hash

from jax_refvos.datasets.synthetic import SynthConfig, generate_benchmark
from jax_refvos.errors import InputError
from jax_refvos.main import synth

SPLITS = ("train", "valid_u", "valid")
SMALL_ARGS = ["--num_videos=3", "--height=48", "--width=64", "--num_frames=6", "--num_workers=1"]


def _mtimes(root: Path) -> dict:
    return {p: p.stat().st_mtime_ns for p in root.rglob("*")}


def test_cli_writes_then_is_up_to_date(tmp_path, capsys):
    out = tmp_path / "synth"
    assert synth.main([f"--out_dir={out}", *SMALL_ARGS]) == 0
    for s in SPLITS:
        for name in ("JPEGImages", "meta_expressions.json", "mask_dict.json"):
            assert (out / s / name).exists()
    read_mevis_split(out / "valid", 48, 64)
    before = _mtimes(out)
    capsys.readouterr()
    assert synth.main([f"--out_dir={out}", *SMALL_ARGS[:-1], "--num_workers=2"]) == 0
    assert "up to date" in capsys.readouterr().out
    assert _mtimes(out) == before


def test_cli_refuses_to_replace_without_overwrite(tmp_path, capsys):
    out = tmp_path / "synth"
    assert synth.main([f"--out_dir={out}", *SMALL_ARGS]) == 0
    digest = tree_hash(out)
    capsys.readouterr()
    assert synth.main([f"--out_dir={out}", *SMALL_ARGS, "--seed=1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "--overwrite" in err and "seed" in err
    assert "Traceback" not in err
    assert tree_hash(out) == digest

    (out / "marker.txt").write_text("x")  # an old file must not survive a regeneration
    assert synth.main([f"--out_dir={out}", *SMALL_ARGS, "--seed=1", "--overwrite"]) == 0
    assert not (out / "marker.txt").exists()
    assert tree_hash(out) != digest
    assert json.loads((out / "synth_config.json").read_text())["parameters"]["seed"] == 1


def test_cli_refuses_a_foreign_directory(tmp_path, capsys):
    out = tmp_path / "not_a_dataset"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert synth.main([f"--out_dir={out}", *SMALL_ARGS]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


@pytest.mark.parametrize(
    "bad, flag",
    [
        (["--height=5"], "--height"),
        (["--width=0"], "--width"),
        (["--num_videos=0"], "--num_videos"),
        (["--num_frames=3"], "--num_frames"),
        (["--num_frames=8", "--min_frames=9"], "--min_frames"),
        (["--seed=-1"], "--seed"),
        (["--num_workers=0"], "--num_workers"),
        (["--height=abc"], "height"),
    ],
)
def test_cli_bad_flags(tmp_path, capsys, bad, flag):
    out = tmp_path / "synth"
    assert synth.main([f"--out_dir={out}", "--num_videos=2", *bad]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and flag in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # nothing created, not even a temporary directory


def test_cli_requires_out_dir(capsys):
    assert synth.main(["--num_videos=2"]) == 2
    assert "out_dir" in capsys.readouterr().err


def test_flag_defaults_come_from_config():
    fv = flags.FlagValues()
    synth.define_flags(fv)
    defaults = SynthConfig()
    for name in ("num_videos", "seed", "height", "width", "num_frames", "min_frames"):
        assert fv[name].default == getattr(defaults, name)
    assert defaults.resolved_min_frames == math.ceil(defaults.num_frames / 2)


def test_api_validates(tmp_path):
    with pytest.raises(InputError, match="--height"):
        generate_benchmark(tmp_path / "x", SynthConfig(height=5), progress=False)
    assert not (tmp_path / "x").exists()
