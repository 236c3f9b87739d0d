"""What a training run writes beside its checkpoints: metrics.jsonl, TensorBoard, config.json.

    <workdir>/config.json       the experiment config (`write_config`)
    <workdir>/metrics.jsonl     one JSON object per logged step: {"step": 100, "loss": 0.52, ...}
    <workdir>/tensorboard/      scalar events (tensorboardX: no TensorFlow needed)

Resuming: a run restarted from the checkpoint at step s re-runs steps s+1, s+2, ...; the lines
the killed run logged after s are dropped when the logger opens (`start_step=s`), so the file never
holds a step twice, and TensorBoard is told to hide the killed run's events after s (`purge_step`).
"""

import json
import math
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import ml_collections
import numpy as np

from jax_refvos import config_lib
from jax_refvos.console import progress
from jax_refvos.errors import InputError
from jax_refvos.fileio import atomic_write_text

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"
CONFIG_FILE = "config.json"


def _to_python(name: str, value: Any) -> float | int:
    """A scalar metric as a Python number: floats stay floats, integers stay ints."""
    arr = np.asarray(value)
    if arr.size != 1:
        raise ValueError(f"metric {name!r} is not a scalar (shape {arr.shape})")
    item = arr.reshape(()).item()
    if isinstance(item, bool) or not isinstance(item, int | float):
        item = float(item)
    return item


def _format_line(step: int, metrics: Mapping[str, Any]) -> str:
    if "step" in metrics:
        raise ValueError("metrics must not contain a 'step' key (it is the `step` argument)")
    # One device->host transfer for all jax arrays of the step, not one per metric.
    host = jax.device_get(dict(metrics))
    # Keys in the caller's order (device_get returns a dict with sorted keys).
    record = {"step": int(step)} | {k: _to_python(k, host[k]) for k in metrics}
    # NaN/inf are written as the bare tokens NaN/Infinity (Python's json reads them back): a
    # diverged loss should stay visible in the file rather than fail the run.
    return json.dumps(record)


def read_metrics(path: str | os.PathLike) -> list[dict]:
    """Parses a metrics.jsonl file.

    A truncated last line (a run killed mid-write: no trailing newline and not valid JSON) is
    skipped; any other bad line raises `InputError` naming the file and the line number.

    Returns:
        The records in file order, each a dict with an int "step" first.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not UTF-8 text ({e.reason})") from None
    lines = text.split("\n")
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        is_unterminated_last = number == len(lines)
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            if is_unterminated_last:
                break
            raise InputError(f"{path}: line {number}: malformed JSON ({e.msg})") from None
        if not isinstance(record, dict):
            raise InputError(f"{path}: line {number}: not a JSON object")
        if not isinstance(record.get("step"), int) or isinstance(record["step"], bool):
            raise InputError(f"{path}: line {number}: no integer 'step'")
        records.append(record)
    return records


def write_config(workdir: str | os.PathLike, config: Any) -> Path:
    """Writes `<workdir>/config.json` atomically (temporary file + rename) and returns its path.

    Args:
        workdir: the run directory (created if missing).
        config: an `ml_collections.ConfigDict` (FieldReferences resolved) or a mapping;
            values JSON cannot hold (tuples become lists) are written as their `str`.
    """
    if isinstance(config, ml_collections.ConfigDict):
        text = config_lib.to_json(config)
    elif isinstance(config, Mapping):
        text = json.dumps(dict(config), indent=2, sort_keys=True, default=str)
    else:
        raise TypeError(f"config must be a ConfigDict or a mapping, got {type(config).__name__}")
    path = Path(workdir) / CONFIG_FILE
    atomic_write_text(path, text + "\n")
    return path


class MetricsLogger:
    """metrics.jsonl (append; one JSON object per call with "step" first, floats as Python floats),
    TensorBoard scalar events under <workdir>/tensorboard/, and a tqdm progress bar (total steps,
    starting at start_step, postfix with the latest loss). Only process 0 writes (enable=False
    elsewhere).

    Args:
        workdir: the run directory (created if missing).
        total_steps: the length of the progress bar.
        start_step: the step the run resumes from: the restored checkpoint's step, 0 for a fresh
            run. On opening, metrics.jsonl keeps only the lines with `step <= start_step` (none at
            all when `start_step == 0`: nothing of an earlier run was restored).
        enable: False makes every method a no-op (processes other than 0).

        logger = MetricsLogger(workdir, total_steps=1000, start_step=restored_step)
        for step in range(restored_step + 1, 1001):
            ...
            logger.advance()
            if step % log_every == 0:
                logger.log(step, {"loss": loss, "lr": lr})
        logger.close()
    """

    def __init__(
        self,
        workdir: str | os.PathLike,
        *,
        total_steps: int,
        start_step: int = 0,
        enable: bool = True,
    ):
        self.workdir = Path(workdir)
        self.path = self.workdir / METRICS_FILE
        self.enabled = enable
        self._file = self._writer = self._bar = None
        if not enable:
            return
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.truncate_after(self._first_dropped_step(start_step) - 1)
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
        # Imported here: the writer is only needed on process 0, and tensorboardX imports torch
        # when torch is installed (~1 s).
        from tensorboardX import SummaryWriter

        self._writer = SummaryWriter(
            str(self.workdir / TENSORBOARD_DIR),
            # TensorBoard hides earlier files' events from this step on, as the jsonl drops them.
            purge_step=self._first_dropped_step(start_step),
            flush_secs=30,
            # tensorboardX names files by the second and opens them with "wb": without a unique
            # suffix, a restart within the same second would overwrite the earlier run's events.
            filename_suffix=f".{time.time_ns()}",
        )
        self._bar = progress(total=total_steps, initial=start_step, unit="step", desc="train")

    @staticmethod
    def _first_dropped_step(start_step: int) -> int:
        # A fresh run (start_step 0) restored nothing, so nothing of an earlier run is kept.
        return start_step + 1 if start_step > 0 else 0

    def truncate_after(self, step: int) -> int:
        """Rewrites metrics.jsonl atomically, keeping only the lines with `step <= step`.

        A truncated last line is dropped too. Returns how many lines were removed.
        """
        if not self.enabled or not self.path.exists():
            return 0
        records = read_metrics(self.path)
        kept = [r for r in records if r["step"] <= step]
        text = "".join(json.dumps(r) + "\n" for r in kept)
        if text != self.path.read_text(encoding="utf-8"):
            atomic_write_text(self.path, text)
            if self._file is not None:
                # The rename gave the path a new inode; the old append handle would write into
                # the unlinked file.
                self._file.close()
                self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
        return len(records) - len(kept)

    def log(self, step: int, metrics: Mapping[str, float | jax.Array]) -> None:
        """Appends `{"step": step, **metrics}` to metrics.jsonl and writes TensorBoard scalars.

        Args:
            step: the number of optimizer updates done.
            metrics: scalar floats, ints or 0-d/size-1 arrays (jax arrays are fetched in one
                transfer), e.g. {"loss": ..., "lr": ..., "grad_norm": ...}.
        """
        if not self.enabled:
            return
        line = _format_line(step, metrics)
        self._file.write(line + "\n")
        self._file.flush()
        record = json.loads(line)
        for name, value in record.items():
            if name != "step":
                self._writer.add_scalar(name, value, global_step=step)
        self._writer.flush()
        if "loss" in record:
            loss = record["loss"]
            self._bar.set_postfix(loss=f"{loss:.4g}" if math.isfinite(loss) else str(loss))

    def advance(self, n: int = 1) -> None:
        """Moves the progress bar `n` steps on."""
        if self.enabled:
            self._bar.update(n)

    def close(self) -> None:
        """Flushes and closes the file, the event writer and the progress bar."""
        for closable in (self._file, self._writer, self._bar):
            if closable is not None:
                closable.close()
        self._file = self._writer = self._bar = None
        self.enabled = False

    def __enter__(self) -> "MetricsLogger":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
