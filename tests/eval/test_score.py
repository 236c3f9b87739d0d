"""`refvos score` end to end: equals the official scoring, parallel == serial, bad input."""

import json
import shutil

import davis_reference as davis
import numpy as np
import pytest
import tiny_mevis
from PIL import Image

from jax_refvos.eval import baselines, score
from jax_refvos.main import score as score_cli


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("mevis")
    gt = tiny_mevis.make_split(root, "valid_u")
    pred = root / "pred"
    tiny_mevis.make_predictions(root, "valid_u", pred, gt)
    return root, pred


@pytest.fixture
def copy(dataset, tmp_path):
    """A private copy of the dataset and predictions, for tests that break them."""
    root, pred = dataset
    shutil.copytree(root, tmp_path / "d")
    return tmp_path / "d", tmp_path / "d" / "pred"


@pytest.mark.parametrize("num_workers", [0, 2])
def test_equals_official(dataset, num_workers):
    root, pred = dataset
    result = score.score_split(root, "valid_u", pred, num_workers=num_workers, progress=False)
    want = davis.expression_scores(root, "valid_u", pred)
    assert result.per_expression.keys() == want.keys()
    for key, (j, f) in want.items():
        assert result.per_expression[key] == pytest.approx((100 * j, 100 * f), abs=1e-9), key
    j, f, jf = davis.split_scores(want)
    assert (result.j, result.f, result.jf) == pytest.approx((j, f, jf), abs=1e-6)
    assert 0 < result.jf < 100  # the perturbations make this a non-trivial score


@pytest.mark.parametrize("kind", ["oracle", "empty", "union", "first_mask"])
def test_baselines_score_as_official(dataset, tmp_path, kind):
    root, _ = dataset
    pred = tmp_path / kind
    n = baselines.write_baseline(root, "valid_u", pred, kind, progress=False)
    assert n == 16
    result = score.score_split(root, "valid_u", pred, num_workers=0, progress=False)
    if kind == "oracle":
        assert (result.j, result.f) == (100.0, 100.0)
    if kind == "first_mask":  # exact on each object's first frame, stale after it
        assert 0 < result.jf < 100
    j, f, _ = davis.split_scores(davis.expression_scores(root, "valid_u", pred))
    assert (result.j, result.f) == pytest.approx((j, f), abs=1e-6)


def test_cli_writes_metrics_json(dataset, tmp_path, capsys):
    root, pred = dataset
    out = tmp_path / "m" / "metrics.json"
    rc = score_cli.main(
        [
            f"--dataset_root={root}",
            "--split=valid_u",
            f"--pred_dir={pred}",
            f"--out={out}",
            "--num_workers=0",
        ]
    )
    assert rc == 0
    m = json.loads(out.read_text())
    assert set(m) == {"J", "F", "J&F", "num_expressions", "per_expression"}
    assert m["num_expressions"] == len(m["per_expression"]) == 16
    assert m["J&F"] == pytest.approx((m["J"] + m["F"]) / 2)
    assert set(m["per_expression"]["vid_odd/0"]) == {"J", "F"}
    assert f"{m['J&F']:.2f}" in capsys.readouterr().out


def test_missing_predictions_error_then_allow(copy, tmp_path, capsys):
    root, pred = copy
    shutil.rmtree(pred / "vid_thin")  # a whole video, as the official code tolerates
    (pred / "vid_odd" / "2" / "00003.png").unlink()  # one frame
    out = tmp_path / "metrics.json"
    args = [
        f"--dataset_root={root}",
        "--split=valid_u",
        f"--pred_dir={pred}",
        f"--out={out}",
        "--num_workers=0",
    ]
    assert score_cli.main(args) == 2
    err = capsys.readouterr().err
    assert "vid_odd/2/: 1 missing (00003.png)" in err and "vid_thin/0/" in err
    assert "--allow_missing" in err and not out.exists()

    assert score_cli.main([*args, "--allow_missing"]) == 0
    m = json.loads(out.read_text())
    assert m["per_expression"]["vid_odd/2"] == {"J": 0.0, "F": 0.0}
    assert m["per_expression"]["vid_thin/3"] == {"J": 0.0, "F": 0.0}
    # The official code scores the expressions of a missing video [0, 0], as we do.
    want = davis.expression_scores(root, "valid_u", pred, zero={"vid_odd/2"})
    assert m["J"] == pytest.approx(davis.split_scores(want)[0], abs=1e-6)


def _break_json(root, pred):
    (root / "valid_u" / "mask_dict.json").write_text('{"0": [')


def _bad_rle(root, pred):
    p = root / "valid_u" / "mask_dict.json"
    d = json.loads(p.read_text())
    d["0"][0] = {"size": [37, 53], "counts": "\x7f\x7f"}
    p.write_text(json.dumps(d))


def _rle_wrong_size(root, pred):
    p = root / "valid_u" / "mask_dict.json"
    d = json.loads(p.read_text())
    d["0"][0]["size"] = [53, 37]
    p.write_text(json.dumps(d))


def _missing_frame(root, pred):
    (root / "valid_u" / "JPEGImages" / "vid_thin" / "00002.jpg").unlink()


def _pred_wrong_size(root, pred):
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(pred / "vid_multi" / "1" / "00004.png")


def _pred_rgb(root, pred):
    Image.fromarray(np.zeros((64, 48, 3), np.uint8)).save(pred / "vid_multi" / "1" / "00004.png")


def _unknown_anno(root, pred):
    p = root / "valid_u" / "meta_expressions.json"
    d = json.loads(p.read_text())
    d["videos"]["vid_odd"]["expressions"]["0"]["anno_id"] = [999]
    p.write_text(json.dumps(d))


@pytest.mark.parametrize(
    ("breaker", "needle"),
    [
        (_break_json, "mask_dict.json: malformed JSON"),
        (_bad_rle, "mask_dict.json: anno_id 0, frame '00000': RLE does not decode"),
        (_rle_wrong_size, "RLE size [53, 37] differs from the frame size [37, 53]"),
        (_missing_frame, "vid_thin: 1 listed frame(s) missing on disk: 00002.jpg"),
        (_pred_wrong_size, "00004.png: prediction is 10x10 (h x w), but the frame is 64x48"),
        (_pred_rgb, "expected a single-channel mask PNG, got mode RGB"),
        (_unknown_anno, "anno_id 999 is referenced but not present"),
    ],
)
def test_bad_input_is_one_clear_error(copy, tmp_path, capsys, breaker, needle):
    root, pred = copy
    breaker(root, pred)
    out = tmp_path / "metrics.json"
    rc = score_cli.main(
        [
            f"--dataset_root={root}",
            "--split=valid_u",
            f"--pred_dir={pred}",
            f"--out={out}",
            "--num_workers=2",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2
    lines = [line for line in err.replace("\r", "\n").splitlines() if line.strip()]
    assert [line for line in lines if line.startswith("error: ")] == [lines[-1]]
    assert needle in lines[-1] and "Traceback" not in err
    assert not out.exists() and not list(tmp_path.glob(".metrics.json*"))


def test_unknown_split_names_the_available_ones(dataset, capsys):
    root, pred = dataset
    assert score_cli.main([f"--dataset_root={root}", "--split=valid", f"--pred_dir={pred}"]) == 2
    assert "no such split directory (found: pred, valid_u)" in capsys.readouterr().err
