"""`refvos evaluate`: batched whole-video inference over a converted split, scored.

Fast tests run the command with the oracle method (tests/eval/oracle_method.py, registered for
the test: +-1 logits from the ground truth must score J&F = 100) and check the records-based
scorer against `refvos score` (exactly equal per expression on tiny_mevis's hard cases). With
the tiny VIRST fixture (skipped when absent), one real run on 1 synthetic video of 4 frames with
2 expressions checks the layout and metrics.json; the slow test checks that the one-pass,
all-expressions result equals `Virst.predict` per expression on the same sampled frames
(relative logit error <= 1e-5; we measure ~1e-6) and the PNGs equal (logits > 0) * 255.
"""

import dataclasses
import json
import zipfile

import numpy as np
import oracle_method
import pytest
import tiny_mevis
from PIL import Image
from shared_paths import QWEN2_TOKENIZER
from shared_paths import VIRST_FIXTURE as FIXTURE

from jax_refvos.datasets import records
from jax_refvos.datasets.example import Track
from jax_refvos.eval import baselines, records_scoring, runner, score
from jax_refvos.main import convert, evaluate, import_weights, synth
from jax_refvos.methods import registry
from jax_refvos.methods.virst import inference as virst_inference
from jax_refvos.methods.virst import views
from jax_refvos.methods.virst import workdir as virst_workdir

TOKENIZER = QWEN2_TOKENIZER
HAVE_FIXTURE = (FIXTURE / "virst_tiny.safetensors").exists() and TOKENIZER.is_dir()
needs_fixture = pytest.mark.skipif(not HAVE_FIXTURE, reason="VIRST tiny fixture not present")
LOGIT_REL_TOL = 1e-5


# ----------------------------------------------------------------------------- data
@pytest.fixture(scope="module")
def synth_split(tmp_path_factory):
    """data/synth + data/records/synth_valid_u for 2 videos of 4 frames, 48x64 (~1 s)."""
    root = tmp_path_factory.mktemp("data")
    args = ["--num_videos=2", "--height=48", "--width=64", "--num_frames=4", "--num_workers=1"]
    assert synth.main([f"--out_dir={root / 'synth'}", *args]) == 0
    rec = root / "records" / "synth_valid_u"
    args = ["--dataset=synth", f"--root={root / 'synth'}", "--split=valid_u"]
    assert convert.main([*args, f"--out_dir={rec}", "--num_workers=0"]) == 0
    return root / "synth", rec


def _records(tmp_path, examples, dataset="synth", split="valid_u"):
    out = tmp_path / f"records_{dataset}_{split}"
    records.write_records(examples, out, dataset=dataset, split=split)
    return out


def _fake_workdir(tmp_path):
    return oracle_method.oracle_workdir(tmp_path / "w")


@pytest.fixture
def stub_model(monkeypatch):
    """The command without a model: the oracle method (one registry entry)."""
    monkeypatch.setitem(registry.METHODS, "oracle", "oracle_method")


# ----------------------------------------------------------------------------- fast
def test_default_records_follow_the_quickstart_naming():
    assert runner.default_records("data/synth", "valid_u").as_posix() == (
        "data/records/synth_valid_u"
    )


def test_pad_ids_left_aligned_with_copies():
    ids, valid = virst_inference.pad_ids([np.arange(1, 4), np.arange(1, 40)], 4)
    assert ids.shape == valid.shape == (4, 64)
    assert valid.sum(1).tolist() == [3, 39, 39, 39]
    assert (ids[~valid] == 0).all() and (ids[3] == ids[1]).all()


def test_sample_frames_are_predicts_draw():
    vlm, sam = virst_inference.sample_frames(100, 42)
    rng = np.random.default_rng(42)
    from jax_refvos.pipeline import sampling

    want = sampling.virst_vlm_indices(100, rng)
    np.testing.assert_array_equal(vlm, want)
    np.testing.assert_array_equal(sam, want[sampling.virst_sam_positions(len(want), rng)])
    assert len(vlm) == 64 and len(sam) == 32


def test_records_scoring_equals_refvos_score(tmp_path):
    """GT from the records == GT from mask_dict.json, on tiny_mevis's hard cases."""
    gt = tiny_mevis.make_split(tmp_path, "valid_u")
    pred = tmp_path / "pred"
    tiny_mevis.make_predictions(tmp_path, "valid_u", pred, gt)
    rec = tmp_path / "rec"
    args = ["--dataset=mevis", f"--root={tmp_path}", "--split=valid_u", f"--out_dir={rec}"]
    assert convert.main([*args, "--num_workers=0"]) == 0
    want = score.score_split(tmp_path, "valid_u", pred, num_workers=0, progress=False)
    tasks, kinds = records_scoring.score_tasks(records.open_records(rec), pred, str(rec))
    got, out = records_scoring.metrics(tasks, kinds, "mevis", num_workers=0)
    assert got.per_expression == want.per_expression
    assert (got.j, got.f) == pytest.approx((want.j, want.f), abs=1e-12)
    assert "by_kind" not in out and out["J&F"] == pytest.approx(want.jf, abs=1e-12)


def test_revos_metrics_by_kind(synth_split, tmp_path):
    root, rec = synth_split
    pred = tmp_path / "pred"
    baselines.write_baseline(root, "valid_u", pred, "union", progress=False)
    tasks, kinds = records_scoring.score_tasks(records.open_records(rec), pred, str(rec))
    keys = sorted(kinds)
    for i, k in enumerate(keys):  # pretend: a ReVOS split with all three kinds
        kinds[k] = ("referring", "reasoning", "no_target")[i % 3]
    result, out = records_scoring.metrics(tasks, kinds, "revos", num_workers=0)
    by = out["by_kind"]
    assert set(by) == {"referring", "reasoning", "no_target"}
    for kind, m in by.items():
        scores = [result.per_expression[k] for k in keys if kinds[k] == kind]
        assert m["num_expressions"] == len(scores)
        assert m["J"] == pytest.approx(np.mean([s[0] for s in scores]))
    assert out["overall"]["J&F"] == pytest.approx(
        (by["referring"]["J&F"] + by["reasoning"]["J&F"]) / 2
    )


def test_cli_with_oracle_model_scores_100(synth_split, tmp_path, stub_model, capsys):
    root, rec = synth_split
    w = _fake_workdir(tmp_path)
    args = ["--workdir", str(w), "--split", "valid_u", "--dataset_root", str(root)]
    args += ["--records", str(rec), "--chunk_size", "3", "--num_workers", "0"]
    assert evaluate.main(args) == 0
    out = w / "eval" / "valid_u"
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"J", "F", "J&F", "num_expressions", "per_expression"} <= set(metrics)
    assert metrics["J&F"] == pytest.approx(100.0)
    halves = [h for part in metrics["breakdown"].values() for h in part.values()]
    assert set(metrics["breakdown"]) == {"occlusion", "leave_and_return"} and halves
    assert all(h["J&F"] == pytest.approx(100.0) for h in halves)
    for part in metrics["breakdown"].values():
        assert sum(h["num_expressions"] for h in part.values()) == metrics["num_expressions"]
    meta = json.loads((root / "valid_u" / "meta_expressions.json").read_text())["videos"]
    pngs = sorted(p.relative_to(out / "pred").as_posix() for p in out.rglob("*.png"))
    want = sorted(
        f"{v}/{e}/{f}.png" for v, m in meta.items() for e in m["expressions"] for f in m["frames"]
    )
    assert pngs == want
    with Image.open(out / "pred" / want[0]) as im:
        assert im.mode == "L" and im.size == (64, 48)
    assert not (out / "submission.zip").exists()
    settings = json.loads((out / "eval.json").read_text())
    assert (settings["dataset"], settings["method"], settings["oracle"]) == (
        "synth",
        "oracle",
        True,
    )
    printed = capsys.readouterr().out
    assert "100.00" in printed and "occlusion" in printed and "leave_and_return" in printed
    # the result is also what `refvos score` computes from the raw split
    raw = score.score_split(root, "valid_u", out / "pred", num_workers=0, progress=False)
    assert raw.jf == pytest.approx(100.0)
    # rerunning without --overwrite refuses and leaves the result alone
    before = (out / "metrics.json").read_bytes()
    assert evaluate.main(args) == 2
    assert (out / "metrics.json").read_bytes() == before
    assert evaluate.main([*args, "--max_videos", "1", "--overwrite"]) == 0
    assert len(json.loads((out / "eval.json").read_text())["videos"]) == 1


def test_cli_without_ground_truth_writes_a_submission_zip(synth_split, tmp_path, stub_model):
    _, rec = synth_split
    no_gt = [
        dataclasses.replace(
            ex, has_masks=False, tracks=tuple(Track(t.key, t.object_id, ()) for t in ex.tracks)
        )
        for ex in records.open_records(rec)
    ]
    rec_ytvos = _records(tmp_path, no_gt, dataset="refytvos", split="valid")
    w = _fake_workdir(tmp_path)
    args = ["--workdir", str(w), "--split", "valid", "--records", str(rec_ytvos)]
    assert evaluate.main(args) == 0
    out = w / "eval" / "valid"
    assert not (out / "metrics.json").exists()
    with zipfile.ZipFile(out / "submission.zip") as z:
        names = z.namelist()
    pngs = sorted(p.relative_to(out / "pred").as_posix() for p in out.rglob("*.png"))
    assert sorted(names) == [f"Annotations/{p}" for p in pngs]
    assert len(pngs) == sum(len(ex.expressions) * ex.num_frames for ex in no_gt)


def test_mevis_submission_has_folders_at_the_root(tmp_path):
    pred = tmp_path / "pred" / "vid" / "0"
    pred.mkdir(parents=True)
    (pred / "00000.png").write_bytes(b"png")
    assert records_scoring.write_submission(tmp_path / "pred", tmp_path / "s.zip", "mevis") == 1
    with zipfile.ZipFile(tmp_path / "s.zip") as z:
        assert z.namelist() == ["vid/0/00000.png"]


def test_bad_workdir_exits_2_and_writes_nothing(synth_split, tmp_path, capsys, monkeypatch):
    _, rec = synth_split
    w = tmp_path / "w"
    w.mkdir()
    (w / "notes.txt").write_text("not weights")
    assert evaluate.main(["--workdir", str(w), "--split", "valid_u", "--records", str(rec)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "not a weights dir or training workdir" in err
    assert sorted(p.name for p in w.iterdir()) == ["notes.txt"]
    # a method option the workdir's method does not take is one error too, before any output
    o = _fake_workdir(tmp_path / "o")
    monkeypatch.setitem(registry.METHODS, "oracle", "oracle_method")
    args = ["--workdir", str(o), "--split", "valid_u", "--records", str(rec)]
    assert evaluate.main([*args, "--expr_batch", "2"]) == 2
    assert evaluate.main([*args, "--option", "nope=1"]) == 2
    err = capsys.readouterr().err
    assert "method 'oracle' takes no ['expr_batch']" in err and "takes no ['nope']" in err
    assert not (o / "eval").exists()


# ----------------------------------------------------------------------------- real model
@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    if not HAVE_FIXTURE:
        pytest.skip("VIRST tiny fixture not present")
    out = tmp_path_factory.mktemp("virst") / "w"
    args = ["--kind", "virst", "--src", str(FIXTURE / "virst_tiny.safetensors")]
    args += ["--out_dir", str(out), "--config", str(FIXTURE / "config_llm_virst.json")]
    args += ["--sam2_config", str(FIXTURE / "sam2.1_hiera_tiny_virst_fixture.yaml")]
    args += ["--vision_config", str(FIXTURE / "config_umt_tiny.json")]
    assert import_weights.main([*args, "--tokenizer", str(TOKENIZER)]) == 0
    return out


@needs_fixture
def test_missing_records_exits_2_and_writes_nothing(weights, tmp_path, capsys):
    args = ["--workdir", str(weights), "--split", "other", "--records", str(tmp_path / "nope")]
    assert evaluate.main(args) == 2
    assert "no manifest" in capsys.readouterr().err
    assert not (weights / "eval" / "other").exists() and not (tmp_path / "nope").exists()


@pytest.fixture(scope="module")
def real_run(weights, synth_split, tmp_path_factory):
    """The command on 1 video (4 frames) with 2 of its expressions: ~30 s on 2 CPU cores."""
    root, rec = synth_split
    ex = next(records.open_records(rec))
    ex = dataclasses.replace(ex, expressions=ex.expressions[1:3])
    rec2 = _records(tmp_path_factory.mktemp("rec"), [ex])
    args = ["--workdir", str(weights), "--split", "valid_u", "--records", str(rec2)]
    assert evaluate.main([*args, "--chunk_size", "3", "--num_workers", "0"]) == 0
    return ex, weights / "eval" / "valid_u"


@needs_fixture
def test_real_model_layout_and_metrics(real_run):
    ex, out = real_run
    for e in ex.expressions:
        folder = out / "pred" / ex.video_id / e.exp_id
        assert sorted(p.stem for p in folder.iterdir()) == list(ex.frame_names)
        for p in folder.iterdir():
            png = np.asarray(Image.open(p))
            assert png.shape == (48, 64) and set(np.unique(png)) <= {0, 255}
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_expressions"] == 2 and 0 <= metrics["J&F"] <= 100
    keys = {f"{ex.video_id}/{e.exp_id}" for e in ex.expressions}
    assert set(metrics["per_expression"]) == keys
    plan = json.loads((out / "eval.json").read_text())["videos"][ex.video_id]
    assert plan["vlm_frames"] == [0, 1, 2, 3, 3, 3, 3, 3] and plan["anchors"] == [0, 3]


@needs_fixture
@pytest.mark.slow  # ~60 s: the batched pass again plus Virst.predict per expression
def test_one_pass_equals_predict_per_expression(real_run, weights):
    from jax_refvos import video_io

    ex, out = real_run
    model, tok = virst_workdir.load_weights_dir(weights)
    ids = [virst_inference.expression_ids(tok, e.text) for e in ex.expressions]
    plan, chunks = virst_inference.infer_video(model, ex, ids, seed=42, chunk_size=3)
    got = np.zeros((ex.num_frames, len(ids), ex.height, ex.width), np.float32)
    for index, logits in chunks:
        got[index] = logits
    video = video_io.RecordVideo(ex)
    size = model.cfg.sam2.image_size
    vlm, stf = views.frame_views(video, plan.vlm_frames, plan.sam_frames, size)
    for j, e in enumerate(ex.expressions):
        want = model.predict(
            vlm,
            stf,
            video_io.prop_loader(video, size),
            ids[j],
            video_size=video.size,
            num_frames=ex.num_frames,
            sam_frame_ids=plan.sam_frames,
        )
        rel = float(np.abs(got[:, j] - want).max() / np.abs(want).max())
        print({"expression": e.exp_id, "rel_max": f"{rel:.1e}"})
        assert rel <= LOGIT_REL_TOL
        for i, name in enumerate(ex.frame_names):
            png = np.asarray(Image.open(out / "pred" / ex.video_id / e.exp_id / f"{name}.png"))
            np.testing.assert_array_equal(png, ((want[i] > 0) * 255).astype(np.uint8))
