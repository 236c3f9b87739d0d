"""The `refvos` dispatcher: help, unknown commands, flag errors, no tracebacks."""

import subprocess
import sys

import pytest

from jax_refvos.main import cli


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for name in cli.COMMANDS:
        assert name in out


def test_unknown_command_and_bad_flags_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["frobnicate"])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        cli.main(["score", "--split=valid_u"])  # required flags missing
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "unknown command 'frobnicate'" in err and "dataset_root" in err


def test_command_help(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["score", "--help"])
    assert e.value.code == 0
    assert "--pred_dir" in capsys.readouterr().out


def test_console_entry_point_reports_without_traceback(tmp_path):
    """Through a real process, as a user runs it."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "jax_refvos.main.cli",
            "score",
            f"--dataset_root={tmp_path}",
            "--split=valid_u",
            f"--pred_dir={tmp_path}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and "Traceback" not in proc.stderr
    assert "no such split directory" in proc.stderr
