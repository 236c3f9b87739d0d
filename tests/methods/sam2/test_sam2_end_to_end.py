"""SAM 2 through `refvos train` / `import-weights` / `evaluate` (slow: whole compiles).

- tiny: trains from scratch on a small synthetic benchmark, sharded on 8 fake devices
  (data 2 x fsdp 2 x model 2) equal to one device, and evaluates (semi-supervised VOS);
- large path (parity extra): a random-weight official SAM 2.1 checkpoint saved by torch is
  imported and evaluated, and fine-tuned with `variant=large,init=<.pt>`, resumed bitwise.
"""

import json
from pathlib import Path

import numpy as np
import pytest

from jax_refvos.main import convert, evaluate, import_weights, synth, train
from jax_refvos.training.metrics import read_metrics

pytestmark = pytest.mark.slow
CONFIG = str(Path(__file__).resolve().parents[3] / "configs" / "sam2.py")
SMALL = "image_size=64,width=32,frames=4,objects=1,corrections=1,batch=4,log_every=1"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("sam2")
    args = ["--num_videos=4", "--height=48", "--width=64", "--num_frames=5", "--num_workers=1"]
    assert synth.main([f"--out_dir={root / 'synth'}", *args]) == 0
    for split in ("train", "valid_u"):
        out = root / "records" / f"synth_{split}"
        args = ["--dataset=synth", f"--root={root / 'synth'}", f"--split={split}"]
        assert convert.main([*args, f"--out_dir={out}", "--num_workers=0"]) == 0
    return root


def _train(data: Path, workdir: Path, arg: str) -> list[dict]:
    records = data / "records" / "synth_train"
    full = f"{arg},records={records}"
    assert train.main(["--config", f"{CONFIG}:{full}", "--workdir", str(workdir)]) == 0
    return read_metrics(workdir / "metrics.jsonl")


def _evaluate(data: Path, workdir: Path) -> dict:
    args = ["--workdir", str(workdir), "--split", "valid_u"]
    assert evaluate.main([*args, "--dataset_root", str(data / "synth")]) == 0
    return json.loads((workdir / "eval" / "valid_u" / "metrics.json").read_text())


def test_tiny_trains_sharded_like_one_device_and_evaluates(data, tmp_path):
    one = _train(data, tmp_path / "one", f"variant=tiny,steps=2,mesh=1x1x1,{SMALL}")
    eight = _train(data, tmp_path / "eight", f"variant=tiny,steps=2,mesh=2x2x2,{SMALL}")
    np.testing.assert_allclose([m["loss"] for m in eight], [m["loss"] for m in one], rtol=1e-5)
    record = json.loads((tmp_path / "one" / "config.json").read_text())
    assert record["method"] == "sam2" and "sam2" in record["components"]
    metrics = _evaluate(data, tmp_path / "one")
    assert 0 <= metrics["J&F"] <= 100 and metrics["num_expressions"] > 0
    pngs = list((tmp_path / "one" / "eval" / "valid_u" / "pred").rglob("*.png"))
    assert pngs


@pytest.mark.parity
def test_large_path_imports_fine_tunes_and_resumes_bitwise(data, tmp_path):
    import sys

    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "parity"))
    from sam2_reference import build_reference

    ref = build_reference("sam2.1_hiera_t", image_size=128, seed=0, video=False)
    ckpt = tmp_path / "sam2.1_random.pt"
    torch.save({"model": ref.state_dict()}, ckpt)
    weights = tmp_path / "weights"
    args = ["--kind", "sam2", "--src", str(ckpt), "--out_dir", str(weights)]
    opts = ["--option", "model_cfg=sam2.1_hiera_t", "--option", "image_size=128"]
    assert import_weights.main([*args, *opts]) == 0
    assert json.loads((weights / "config.json").read_text())["method"] == "sam2"
    assert 0 <= _evaluate(data, weights)["J&F"] <= 100

    arg = (
        f"variant=large,init={ckpt},model_cfg=sam2.1_hiera_t,image_size=128,frames=3,"
        "objects=1,corrections=1,batch=1,mesh=1x1x1,ckpt_every=1,log_every=1"
    )
    straight = _train(data, tmp_path / "straight", f"{arg},steps=3")
    _train(data, tmp_path / "resumed", f"{arg},steps=2")
    resumed = _train(data, tmp_path / "resumed", f"{arg},steps=3")
    assert [m["loss"] for m in resumed] == [m["loss"] for m in straight]
    assert [m["grad_norm"] for m in resumed] == [m["grad_norm"] for m in straight]
