"""fileio: atomic writes leave nothing partial, errors name files, modes follow the umask."""

import os
import stat

import pytest

from jax_refvos import fileio
from jax_refvos.errors import InputError


def test_load_json_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"a": [1, 2')
    with pytest.raises(InputError, match=rf"{bad}: malformed JSON \(line 1"):
        fileio.load_json(bad)
    with pytest.raises(InputError, match="file not found"):
        fileio.load_json(tmp_path / "nope.json")


def test_atomic_directory_success_failure_and_overwrite(tmp_path):
    target = tmp_path / "out"
    with pytest.raises(RuntimeError), fileio.atomic_directory(target) as tmp:
        (tmp / "half.txt").write_text("x")
        raise RuntimeError("boom")
    assert os.listdir(tmp_path) == []  # nothing partial, no temp dir left
    with fileio.atomic_directory(target) as tmp:
        (tmp / "a.txt").write_text("1")
    assert (target / "a.txt").read_text() == "1"
    with pytest.raises(InputError, match="already exists"), fileio.atomic_directory(target):
        pass
    with fileio.atomic_directory(target, overwrite=True) as tmp:
        (tmp / "b.txt").write_text("2")
    assert sorted(os.listdir(target)) == ["b.txt"]
    assert sorted(os.listdir(tmp_path)) == ["out"]


def test_permissions_follow_umask(tmp_path):
    old = os.umask(0o022)
    try:
        fileio.atomic_write_json(tmp_path / "m.json", {"a": 1})
        with fileio.atomic_directory(tmp_path / "d"):
            pass
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "m.json").st_mode) == 0o666 & ~fileio._UMASK
    assert stat.S_IMODE(os.stat(tmp_path / "d").st_mode) == 0o777 & ~fileio._UMASK
