"""Helpers for tests that run `refvos train` in subprocesses (multi-process, kills)."""

import os
import subprocess
import sys
from pathlib import Path

from jax_refvos.training.metrics import read_metrics

REPO = Path(__file__).resolve().parents[2]
CONFIG = "configs/virst.py"


def train_env(devices: int) -> dict:
    """A subprocess environment with `devices` CPU devices (the conftest's 8 do not carry)."""
    env = dict(os.environ)
    env["JAX_PLATFORMS"] = "cpu"
    flags = [f for f in env.get("XLA_FLAGS", "").split() if "device_count" not in f]
    env["XLA_FLAGS"] = " ".join([*flags, f"--xla_force_host_platform_device_count={devices}"])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
    return env


def train_cmd(arg: str, workdir: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "jax_refvos.main.train",
        "--config",
        f"{CONFIG}:{arg}",
        "--workdir",
        str(workdir),
        *extra,
    ]


def run_train(
    arg: str, workdir: Path, *, devices: int = 1, env: dict | None = None, timeout: float = 900
) -> None:
    proc = subprocess.run(
        train_cmd(arg, workdir),
        env=env or train_env(devices),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


def losses(workdir: Path) -> dict[int, float]:
    return {m["step"]: m["loss"] for m in read_metrics(Path(workdir) / "metrics.jsonl")}
