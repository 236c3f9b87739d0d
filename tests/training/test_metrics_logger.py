"""MetricsLogger (metrics.jsonl, TensorBoard events, progress bar), read_metrics, write_config.

(Named test_metrics_logger.py: tests/eval/test_metrics.py already owns the module name
`test_metrics` in pytest's rootdir-relative import mode.)
"""

import json
import math
import os

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jax_refvos.datasets.tfrecord import read_records
from jax_refvos.errors import InputError
from jax_refvos.training.metrics import MetricsLogger, read_metrics, write_config


def _tensorboard_events(workdir) -> list[list]:
    """The Event protos of each event file (in name order), read with CRC-checked framing."""
    event_pb2 = pytest.importorskip("tensorboardX.proto.event_pb2")
    files = sorted((workdir / "tensorboard").glob("events.out.tfevents.*"))
    assert files, "no TensorBoard event file"
    return [[event_pb2.Event.FromString(r) for r in read_records(path)] for path in files]


def _tensorboard_scalars(workdir) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value), ...]} over all event files."""
    scalars: dict[str, list[tuple[int, float]]] = {}
    for events in _tensorboard_events(workdir):
        for event in events:
            for value in event.summary.value:
                scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
    return scalars


def test_log_writes_jsonl_tensorboard_and_progress(tmp_path):
    with MetricsLogger(tmp_path, total_steps=10) as logger:
        logger.advance(2)
        logger.log(2, {"loss": jnp.float32(0.75), "lr": 1e-3, "examples": np.int32(16)})
        logger.advance()
        logger.log(3, {"loss": jnp.asarray([0.5], jnp.bfloat16), "lr": 2e-3, "examples": 24})
        assert (logger._bar.n, logger._bar.total) == (3, 10)
        assert logger._bar.postfix == "loss=0.5"

    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert list(json.loads(lines[0])) == ["step", "loss", "lr", "examples"]
    records = read_metrics(tmp_path / "metrics.jsonl")
    assert records == [
        {"step": 2, "loss": 0.75, "lr": 1e-3, "examples": 16},
        {"step": 3, "loss": 0.5, "lr": 2e-3, "examples": 24},
    ]
    assert type(records[0]["loss"]) is float and type(records[0]["examples"]) is int

    scalars = _tensorboard_scalars(tmp_path)
    assert scalars["loss"] == [(2, 0.75), (3, 0.5)]
    assert [s for s, _ in scalars["lr"]] == [2, 3]
    np.testing.assert_allclose([v for _, v in scalars["lr"]], [1e-3, 2e-3], rtol=1e-6)


def test_nan_loss_is_kept_visible(tmp_path):
    with MetricsLogger(tmp_path, total_steps=2) as logger:
        logger.log(1, {"loss": float("nan")})
        assert logger._bar.postfix == "loss=nan"
    assert math.isnan(read_metrics(tmp_path / "metrics.jsonl")[0]["loss"])


def test_bad_metrics_are_rejected(tmp_path):
    with MetricsLogger(tmp_path, total_steps=2) as logger:
        with pytest.raises(ValueError, match="'loss' is not a scalar"):
            logger.log(1, {"loss": jnp.ones(2)})
        with pytest.raises(ValueError, match="'step' key"):
            logger.log(1, {"step": 1})
    assert read_metrics(tmp_path / "metrics.jsonl") == []


def test_resume_drops_lines_after_the_restored_step(tmp_path):
    with MetricsLogger(tmp_path, total_steps=10) as logger:
        for step in range(1, 6):
            logger.log(step, {"loss": 1.0 / step})
    with open(tmp_path / "metrics.jsonl", "a") as f:
        f.write('{"step": 6, "lo')  # killed mid-write

    # Restart from the checkpoint at step 3: steps 4, 5 (and the torn 6) are re-run.
    with MetricsLogger(tmp_path, total_steps=10, start_step=3) as logger:
        assert logger._bar.n == 3
        assert [r["step"] for r in read_metrics(logger.path)] == [1, 2, 3]
        for step in range(4, 7):
            logger.log(step, {"loss": 2.0})
    records = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert [r["loss"] for r in records] == [1.0, 0.5, 1.0 / 3, 2.0, 2.0, 2.0]
    # TensorBoard: both runs' files are kept; the second one starts with a session START at
    # step 4, which tells TensorBoard to hide the first run's events from step 4 on.
    first, second = _tensorboard_events(tmp_path)
    assert [e.step for e in first if e.summary.value] == [1, 2, 3, 4, 5]
    sessions = [(e.step, e.session_log.status) for e in second if e.HasField("session_log")]
    assert sessions == [(4, second[0].session_log.START)]
    assert _tensorboard_scalars(tmp_path)["loss"][-3:] == [(4, 2.0), (5, 2.0), (6, 2.0)]


def test_fresh_start_discards_an_earlier_runs_metrics(tmp_path):
    with MetricsLogger(tmp_path, total_steps=4) as logger:
        logger.log(1, {"loss": 1.0})
    with MetricsLogger(tmp_path, total_steps=4, start_step=0) as logger:
        logger.log(1, {"loss": 3.0})
    assert read_metrics(tmp_path / "metrics.jsonl") == [{"step": 1, "loss": 3.0}]
    second = _tensorboard_events(tmp_path)[1]
    sessions = [(e.step, e.session_log.status) for e in second if e.HasField("session_log")]
    assert sessions == [(0, second[0].session_log.START)]  # hides all of the first run


def test_truncate_after(tmp_path):
    with MetricsLogger(tmp_path, total_steps=9) as logger:
        for step in (2, 4, 6, 8):
            logger.log(step, {"loss": float(step)})
        assert logger.truncate_after(5) == 2
        assert [r["step"] for r in read_metrics(logger.path)] == [2, 4]
        logger.log(6, {"loss": 0.0})  # the append handle still writes to the rewritten file
    assert [r["step"] for r in read_metrics(tmp_path / "metrics.jsonl")] == [2, 4, 6]


def test_disabled_logger_writes_nothing(tmp_path):
    logger = MetricsLogger(tmp_path / "run", total_steps=3, enable=False)
    logger.log(1, {"loss": 1.0})
    logger.advance()
    logger.close()
    assert not (tmp_path / "run").exists()


def test_read_metrics_errors_name_file_and_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "loss": 1.0}\n{"step": 2, "lo\n{"step": 3, "loss": 1.0}\n')
    with pytest.raises(InputError, match=rf"{path}: line 2: malformed JSON"):
        read_metrics(path)
    path.write_text('{"step": 1}\n[1, 2]\n')
    with pytest.raises(InputError, match=rf"{path}: line 2: not a JSON object"):
        read_metrics(path)
    path.write_text('{"loss": 1.0}\n')
    with pytest.raises(InputError, match=rf"{path}: line 1: no integer 'step'"):
        read_metrics(path)
    # A torn last line is what a killed run leaves: skipped, not an error.
    path.write_text('{"step": 1}\n{"step": 2, "lo')
    assert read_metrics(path) == [{"step": 1}]
    with pytest.raises(InputError, match="file not found"):
        read_metrics(tmp_path / "missing.jsonl")


def test_write_config_from_configdict_and_dict(tmp_path):
    cfg = ml_collections.ConfigDict({"total_steps": 100, "optim": {"lr": 1e-4}})
    cfg.optim.decay_steps = cfg.get_ref("total_steps") - 10
    path = write_config(tmp_path / "run", cfg)
    assert path == tmp_path / "run" / "config.json"
    assert json.loads(path.read_text()) == {
        "optim": {"decay_steps": 90, "lr": 1e-4},
        "total_steps": 100,
    }
    write_config(tmp_path / "run", {"mesh": (1, 2), "name": "tiny"})
    assert json.loads(path.read_text()) == {"mesh": [1, 2], "name": "tiny"}
    with pytest.raises(TypeError):
        write_config(tmp_path / "run", [1, 2])


def test_write_config_is_atomic(tmp_path, monkeypatch):
    path = write_config(tmp_path, {"a": 1})

    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        write_config(tmp_path, {"a": 2})
    monkeypatch.undo()
    assert json.loads(path.read_text()) == {"a": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]
