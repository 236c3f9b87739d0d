"""launch/train_*: each only sets the environment and runs `refvos train` (fake refvos, srun,
gcloud and xpk on PATH record what they were asked to run)."""

import os
import stat
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CONFIG = "configs/virst.py:variant=7b,mesh=-1x8x1"


def _fake_bin(tmp_path: Path) -> dict:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls.txt"
    for name in ("refvos", "srun", "gcloud", "xpk"):
        exe = bin_dir / name
        exe.write_text(f'#!/usr/bin/env bash\nprintf "%s\\n" "{name} $*" >> "{log}"\n')
        exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", HOME=str(tmp_path))
    env.pop("XLA_FLAGS", None)
    return env


@pytest.mark.parametrize(
    "script, args, want",
    [
        ("train_gpu.sh", [CONFIG, "runs/x"], f"refvos train --config {CONFIG} --workdir runs/x"),
        (
            "train_slurm.sbatch",
            [CONFIG, "/shared/x"],
            f"srun --kill-on-bad-exit=1 refvos train --config {CONFIG} --workdir /shared/x",
        ),
        (
            "train_tpu_pod.sh",
            ["tpu1", "zone-a", CONFIG, "/mnt/x"],
            f"refvos train --config '{CONFIG}' --workdir '/mnt/x'",
        ),
        (
            "train_xpk.sh",
            ["c1", "img:1", "v5p-256", CONFIG, "/mnt/x"],
            f"refvos train --config '{CONFIG}' --workdir '/mnt/x'",
        ),
    ],
)
def test_launcher_runs_refvos_train(tmp_path, script, args, want):
    env = _fake_bin(tmp_path)
    proc = subprocess.run(
        ["bash", str(REPO / "launch" / script), *args], env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    calls = (tmp_path / "calls.txt").read_text()
    assert want in calls, calls


def test_launcher_without_arguments_says_how_to_use_it(tmp_path):
    proc = subprocess.run(
        ["bash", str(REPO / "launch" / "train_gpu.sh")],
        env=_fake_bin(tmp_path),
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0 and "usage" in proc.stderr
