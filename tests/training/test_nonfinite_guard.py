"""The non-finite guard (issue 8): a NaN/Inf loss or gradient norm stops the run with one error
naming the step and the last good checkpoint, or is skipped with `skip_nonfinite`."""

import logging
import math
import subprocess

import ml_collections
import numpy as np
import pytest
from train_runs import REPO, losses, train_cmd, train_env

from jax_refvos.checkpoint import Checkpointer
from jax_refvos.training import loop


def _config(skip: bool) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict({"skip_nonfinite": skip})


def test_finite_metrics_pass(tmp_path):
    ckpt = Checkpointer(tmp_path / "checkpoints", save_every=1)
    loop._check_finite(_config(False), 3, {"loss": 1.0, "grad_norm": 2.0}, ckpt)
    ckpt.close()


def test_nan_stops_naming_the_step_and_the_last_good_checkpoint(tmp_path):
    ckpt = Checkpointer(tmp_path / "checkpoints", save_every=1)
    ckpt.save(4, {"w": np.ones(3, np.float32)})
    metrics = {"loss": np.float32(np.nan), "grad_norm": np.float32(1.0)}
    with pytest.raises(loop.NonFiniteError) as e:
        loop._check_finite(_config(False), 5, metrics, ckpt)
    ckpt.close()
    text = str(e.value)
    assert "step 5: loss nan" in text and "grad_norm" not in text.split(";")[0]
    assert str(tmp_path / "checkpoints" / "4") in text


def test_inf_without_any_checkpoint_says_so(tmp_path):
    ckpt = Checkpointer(tmp_path / "checkpoints", save_every=1)
    with pytest.raises(loop.NonFiniteError, match="none .nothing was saved"):
        loop._check_finite(_config(False), 1, {"loss": 1.0, "grad_norm": math.inf}, ckpt)
    ckpt.close()


def test_skip_mode_warns_and_goes_on(tmp_path, caplog):
    ckpt = Checkpointer(tmp_path / "checkpoints", save_every=1)
    with caplog.at_level(logging.WARNING):
        loop._check_finite(_config(True), 2, {"loss": math.nan, "grad_norm": 1.0}, ckpt)
    ckpt.close()
    assert "step 2" in caplog.text and "skipped" in caplog.text


@pytest.mark.slow  # two short tiny runs (~3 min)
def test_diverging_run_stops_or_skips(tmp_path):
    """lr 1e30 blows the parameters up after the first update: the next loss is not finite."""
    data = tmp_path / "data"
    arg = f"variant=tiny,steps=4,log_every=1,ckpt_every=1,synth=tiny,data_dir={data},lr=1e30"
    env = train_env(1)
    env["JAX_COMPILATION_CACHE_DIR"] = str(tmp_path / "xla_cache")
    proc = subprocess.run(
        train_cmd(arg, tmp_path / "stop"), env=env, cwd=REPO, capture_output=True, text=True
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    error = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(error) == 1 and "training stopped" in error[0], proc.stderr[-3000:]
    assert "Last good checkpoint: " in error[0]
    cfg = tmp_path / "skip.py"
    cfg.write_text(
        "from configs import virst\n"
        "def get_config(arg=None):\n"
        "    c = virst.get_config(arg)\n"
        "    c.skip_nonfinite = True\n"
        "    return c\n"
    )
    cmd = train_cmd(arg, tmp_path / "skip")
    cmd[cmd.index("--config") + 1] = f"{cfg}:{arg}"
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "skipped" in proc.stderr
    assert len(losses(tmp_path / "skip")) == 4
