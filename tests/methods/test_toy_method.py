"""A method plugs in with one registry line (issue 17): the toy method of tests/toy_methods.py,
which no file of the package names, trains with `refvos train` (8 fake devices, sharded, equal to
one device; resumed, its method state carried), evaluates with `refvos evaluate` and predicts with
`refvos predict`, through `methods.registry.METHODS["toy"] = "toy_methods"` alone.
"""

import json
from pathlib import Path

import numpy as np
import pytest

from jax_refvos.main import convert, evaluate, predict, synth, train
from jax_refvos.methods import registry
from jax_refvos.training import loop
from jax_refvos.training.metrics import read_metrics

PACKAGE = Path(__file__).resolve().parents[2] / "jax_refvos"
CONFIG = """
import ml_collections
from jax_refvos import config_lib


def get_config(arg=None):
    arg = config_lib.parse_arg(arg, steps=4, mesh="auto", records="")
    c = ml_collections.ConfigDict()
    c.method = "toy"
    c.seed, c.steps, c.log_every, c.ckpt_every, c.keep_checkpoints = 0, arg.steps, 1, 2, 2
    sizes = [int(s) for s in arg.mesh.split("x")] if arg.mesh != "auto" else [0, 0, 0]
    c.mesh = dict(zip(("data", "fsdp", "model"), sizes))
    c.optim = dict(lr=0.05, schedule="constant", clip_norm=1.0)
    c.model = dict(width=8, size=32)
    c.data = dict(train_records=arg.records, batch_size=2, frames=4)
    return c
"""


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    args = ["--num_videos=4", "--height=48", "--width=64", "--num_frames=4", "--num_workers=1"]
    assert synth.main([f"--out_dir={root / 'synth'}", *args]) == 0
    for split in ("train", "valid_u"):
        out = root / "records" / f"synth_{split}"
        args = ["--dataset=synth", f"--root={root / 'synth'}", f"--split={split}"]
        assert convert.main([*args, f"--out_dir={out}", "--num_workers=0"]) == 0
    (root / "toy.py").write_text(CONFIG)
    return root


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.setitem(registry.METHODS, "toy", "toy_methods")  # the one registry line


def _train(data: Path, workdir: Path, **args) -> list[dict]:
    arg = ",".join(
        [f"records={data / 'records' / 'synth_train'}"] + [f"{k}={v}" for k, v in args.items()]
    )
    assert train.main(["--config", f"{data / 'toy.py'}:{arg}", "--workdir", str(workdir)]) == 0
    return read_metrics(workdir / "metrics.jsonl")


def test_import_weights_offers_the_toy_kind_which_has_no_importer(toy, tmp_path, capsys):
    from jax_refvos.main import import_weights

    args = ["--kind", "toy", "--src", str(tmp_path), "--out_dir", str(tmp_path / "w")]
    assert import_weights.main(args) == 2
    assert "method 'toy' has no checkpoint importer" in capsys.readouterr().err
    assert not (tmp_path / "w").exists()


def test_no_file_of_trainer_evaluator_or_cli_names_the_toy():
    for folder in ("training", "eval", "main"):
        for path in (PACKAGE / folder).rglob("*.py"):
            assert "toy" not in path.read_text().lower(), path


def test_toy_trains_sharded_equal_to_one_device_and_resumes(data, toy, tmp_path):
    sharded = _train(data, tmp_path / "sharded", steps=4)  # mesh auto on 8 devices: 2 x 1 x 4
    single = _train(data, tmp_path / "single", steps=4, mesh="1x1x1")
    a = np.array([m["loss"] for m in sharded])
    b = np.array([m["loss"] for m in single])
    assert [m["step"] for m in sharded] == [1, 2, 3, 4] and np.all(np.isfinite(a))
    np.testing.assert_allclose(a, b, rtol=1e-5)
    assert a[-1] < a[0]  # it learns
    config = json.loads((tmp_path / "sharded" / "config.json").read_text())
    assert config["method"] == "toy" and config["components"]["toy"]["config"]["width"] == 8
    assert config["components"]["toy"]["num_params"] > 0
    # resume to step 6: the method state counted every batch of both runs
    more = _train(data, tmp_path / "single", steps=6, mesh="1x1x1")
    assert [m["step"] for m in more] == [1, 2, 3, 4, 5, 6]
    _, state = loop.restore_checkpoint(tmp_path / "single")
    assert int(state["step"]) == 6 and int(state["method_state"]["batches_seen"]) == 6


def test_toy_evaluates_and_predicts(data, toy, tmp_path):
    work = tmp_path / "run"
    _train(data, work, steps=2, mesh="1x1x1")
    rec = data / "records" / "synth_valid_u"
    args = ["--workdir", str(work), "--split", "valid_u", "--records", str(rec)]
    assert evaluate.main([*args, "--num_workers", "0"]) == 0
    metrics = json.loads((work / "eval" / "valid_u" / "metrics.json").read_text())
    assert 0 <= metrics["J&F"] <= 100 and metrics["num_expressions"] > 0
    settings = json.loads((work / "eval" / "valid_u" / "eval.json").read_text())
    assert settings["method"] == "toy" and settings["toy_width"] == 8
    # VIRST's option flags are refused for this method, before anything is written
    before = (work / "eval" / "valid_u" / "metrics.json").read_bytes()
    assert evaluate.main([*args, "--expr_batch", "2", "--overwrite"]) == 2
    assert (work / "eval" / "valid_u" / "metrics.json").read_bytes() == before
    video = sorted((data / "synth" / "valid_u" / "JPEGImages").iterdir())[0]
    out = tmp_path / "pred"
    args = ["--workdir", str(work), "--video", str(video), "--text", "the red square"]
    assert predict.main([*args, "--out_dir", str(out), "--overlay", "gif"]) == 0
    logits = np.load(out / "logits.npy")
    assert logits.shape == (len(list(video.iterdir())), 48, 64)
    meta = json.loads((out / "predict.json").read_text())
    assert meta["method"] == "toy" and meta["toy"] and len(meta["frames"]) == logits.shape[0]
    assert (out / "overlay.gif").is_file()
