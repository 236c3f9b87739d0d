"""`refvos train` with a bad config: one `error:` line naming the problem, exit status 2, no
traceback, and nothing written (the workdir is not even created)."""

import pytest

from jax_refvos.main import train

CONFIG = "configs/virst.py"
BAD = """
from configs_virst import get_config as base


def get_config(arg=None):
    c = base("variant=tiny")
    c.unlock()
    c[arg.split("=")[0]] = arg.split("=")[1]
    return c
"""


@pytest.mark.parametrize(
    "arg, says",
    [
        ("variant=huge", "unknown variant 'huge'"),
        ("mesh=2x2", "mesh must be data x fsdp x model"),
        ("no_such_key=1", "config arg 'no_such_key' is unknown"),
        ("mesh=2x2x4", "needs 16 devices"),  # the tests run on 8 fake devices
        ("mesh=1x3x1", "does not divide over data x fsdp = 3"),
        ("variant=7b", "data.train_records is empty: pass records=DIR"),
        ("variant=7b,records=/nonexistent/records", "no manifest"),
        ("variant=tiny,init=/nonexistent/weights", "/nonexistent/weights"),
        ("steps=0", "steps must be >= 1"),
        ("vlm_frames=6", "not a multiple of 4"),
        ("batch=0", "must be >= 1"),
    ],
)
def test_bad_config_is_one_error_line_and_writes_nothing(arg, says, tmp_path, capsys):
    work = tmp_path / "run"
    assert train.main(["--config", f"{CONFIG}:{arg}", "--workdir", str(work)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and len(err.splitlines()) == 1, err
    assert says in err and "Traceback" not in err
    assert not work.exists()


@pytest.mark.parametrize(
    "edit, says",
    [
        ("no_such_section=1", "unknown key 'no_such_section' for method 'virst'"),
        ("method=nope", "unknown method 'nope' (registered: virst"),
    ],
)
def test_bad_config_file_is_one_error_line(edit, says, tmp_path, capsys, monkeypatch):
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("configs_virst", CONFIG)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setitem(sys.modules, "configs_virst", module)
    path = tmp_path / "bad.py"
    path.write_text(BAD)
    work = tmp_path / "run"
    assert train.main(["--config", f"{path}:{edit}", "--workdir", str(work)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and says in err, err
    assert len(err.splitlines()) == 1 and not work.exists()


def test_a_workdir_of_an_older_version_or_another_model_is_refused(tmp_path, capsys):
    import json

    import ml_collections

    from jax_refvos.errors import InputError
    from jax_refvos.training import loop

    c = ml_collections.ConfigDict({"method": "virst"})
    record = {"components": {"lm": {"config": {"width": 1e-6}}}, "method_config": {"isf": True}}
    loop.check_resumable(tmp_path / "new", c, record)  # a new workdir: fine
    work = tmp_path / "run"
    work.mkdir()
    (work / "config.json").write_text(json.dumps({"method": "virst", **record}))
    loop.check_resumable(work, c, record)  # the same model: resumed
    other = {**record, "method_config": {"isf": False}}
    with pytest.raises(InputError, match="trained another model .method_config differ"):
        loop.check_resumable(work, c, other)
    old = json.dumps({"seed": 0, "model": {"preset": "tiny"}})
    (work / "config.json").write_text(old)
    # through the command: one error line, the old workdir left as it was
    assert train.main(["--config", f"{CONFIG}:variant=tiny", "--workdir", str(work)]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err.startswith("error:") and "by an older jax_refvos" in err and len(err.splitlines()) == 1
    )
    assert (work / "config.json").read_text() == old and sorted(work.iterdir()) == [
        work / "config.json"
    ]
