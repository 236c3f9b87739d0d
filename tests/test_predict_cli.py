"""`refvos predict` on the tiny VIRST fixture: weights dir + video + sentence -> mask logits.

The fixture (`shared/fixtures/virst_tiny_dev`) is imported with `import-weights --kind virst`;
`predict` then runs from the raw JPEG folder and the sentence, with the template ids that give
`prompt.json`'s text (short question 0, answer 0) and Initial ST-Fusion off (the released
eval), and must give `eval_video_res_logits`: relative error max|Δ| / max|ref| <= 1e-3 per frame
(the model test measures <= 1.3e-6 for the same path), PNGs = (logits > 0) * 255, an overlay.
12 frames: the flex policy keeps all 12 for the VLM and all 12 for the ST-Fusion, whatever the
seed. The same frames losslessly in an mp4 (H.264 RGB, crf 0, made with PyAV) give the same
logits; the mp4 tests skip without PyAV.
"""

import json

import numpy as np
import pytest
from PIL import Image
from shared_paths import QWEN2_TOKENIZER
from shared_paths import VIRST_FIXTURE as FIXTURE

from jax_refvos import video_io
from jax_refvos.main import import_weights, predict
from jax_refvos.pipeline import prompts
from jax_refvos.pipeline.tokenizer import load_tokenizer

TOKENIZER = QWEN2_TOKENIZER
SAFETENSORS = FIXTURE / "virst_tiny.safetensors"
VIDEO = FIXTURE / "video" / "vid0"
TEXT = "the blue square moving down"
REL_TOL = 1e-3

pytestmark = pytest.mark.skipif(
    not (SAFETENSORS.exists() and TOKENIZER.is_dir()), reason="VIRST tiny fixture not present"
)


def rel_err(got, want) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.abs(got - want).max() / np.abs(want).max())


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    out = tmp_path_factory.mktemp("virst") / "w"
    args = ["--kind", "virst", "--src", str(SAFETENSORS), "--out_dir", str(out)]
    args += ["--config", str(FIXTURE / "config_llm_virst.json")]
    args += ["--sam2_config", str(FIXTURE / "sam2.1_hiera_tiny_virst_fixture.yaml")]
    args += ["--vision_config", str(FIXTURE / "config_umt_tiny.json")]
    assert import_weights.main([*args, "--tokenizer", str(TOKENIZER)]) == 0
    return out


def _check_outputs(out, names: list[str], ref_key: str = "eval_video_res_logits") -> np.ndarray:
    """logits.npy against the fixture, PNGs against the logits; returns the logits."""
    logits = np.load(out / "logits.npy")
    ref = np.load(FIXTURE / "activations.npz")[ref_key]
    assert logits.dtype == np.float32 and logits.shape == ref.shape == (12, 72, 112)
    per_frame = [rel_err(o, r) for o, r in zip(logits, ref, strict=True)]
    print({"per_frame_rel_max": f"{max(per_frame):.1e}"})
    assert max(per_frame) <= REL_TOL, per_frame
    for stem, lg in zip(names, logits, strict=True):
        png = np.asarray(Image.open(out / f"{stem}.png"))
        np.testing.assert_array_equal(png, ((lg > 0) * 255).astype(np.uint8))
    meta = json.loads((out / "predict.json").read_text())
    assert meta["frames"] == names and meta["seed"] == 42
    assert meta["vlm_frames"] == meta["sam_frames"] == list(range(12))
    return logits


def test_templates_0_0_give_the_fixture_prompt():
    prompt = json.loads((FIXTURE / "prompt.json").read_text())
    tok = load_tokenizer(str(TOKENIZER), "virst")
    ids, _ = prompts.virst_encode(tok, prompts.virst_messages(TEXT, 0, 0))
    assert ids == prompt["input_ids"]


def test_predict_matches_eval_logits(workdir, tmp_path, monkeypatch):
    written = []

    class Recording(video_io.LogitsFile):
        def write(self, index, rows):
            written.append(list(index))
            super().write(index, rows)

    monkeypatch.setattr(video_io, "LogitsFile", Recording)
    out = tmp_path / "pred"
    args = ["--workdir", str(workdir), "--video", str(VIDEO), "--text", TEXT]
    args += ["--out_dir", str(out), "--question_template_id", "0", "--answer_template_id", "0"]
    args += ["--initial_seg_fusion=false", "--chunk_size", "5", "--overlay", "gif"]
    assert predict.main(args) == 0
    # Streamed: anchors 0, 6, 11; tracked 1..5 | 7..10, each chunk with the anchors before it.
    assert written == [[0, 1, 2, 3, 4, 5], [6, 7, 8, 9, 10], [11]]
    _check_outputs(out, sorted(p.stem for p in VIDEO.glob("*.jpg")))
    with Image.open(out / "overlay.gif") as ov:
        assert ov.format == "GIF" and ov.n_frames == 12


@pytest.mark.slow  # a second full run (~70 s)
def test_predict_isf_matches_isf_logits(workdir, tmp_path):
    """With --initial_seg_fusion: the paper's path, `isf_video_res_logits`."""
    out = tmp_path / "isf"
    args = ["--workdir", str(workdir), "--video", str(VIDEO), "--text", TEXT]
    args += ["--out_dir", str(out), "--initial_seg_fusion", "--overlay", "gif"]
    assert predict.main(args) == 0
    _check_outputs(out, sorted(p.stem for p in VIDEO.glob("*.jpg")), "isf_video_res_logits")
    assert json.loads((out / "predict.json").read_text())["initial_seg_fusion"] is True


def _mp4(path, frames: list[np.ndarray]) -> bool:
    """Writes `frames` with PyAV; True when lossless (libx264rgb, crf 0)."""
    import av

    lossless = "libx264rgb" in av.codecs_available
    codec, opts = ("libx264rgb", {"crf": "0"}) if lossless else ("mpeg4", {"qscale": "1"})
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=6, options=opts)
        h, w = frames[0].shape[:2]
        stream.width, stream.height = w, h
        stream.pix_fmt = "rgb24" if lossless else "yuv420p"
        for f in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        container.mux(stream.encode(None))
    return lossless


def test_predict_mp4(workdir, tmp_path):
    av = pytest.importorskip("av")
    frames = [np.asarray(Image.open(p).convert("RGB")) for p in sorted(VIDEO.glob("*.jpg"))]
    lossless = _mp4(tmp_path / "clip.mp4", frames)
    out = tmp_path / "pred"
    args = ["--workdir", str(workdir), "--video", str(tmp_path / "clip.mp4"), "--text", TEXT]
    assert predict.main([*args, "--out_dir", str(out), "--chunk_size", "5"]) == 0
    names = [f"{i:05d}" for i in range(12)]
    if lossless:
        _check_outputs(out, names)
    else:  # lossy codec: outputs only
        assert np.load(out / "logits.npy").shape == (12, 72, 112)
        assert sorted(p.stem for p in out.glob("*.png")) == names
    with av.open(str(out / "overlay.mp4")) as container:
        stream = container.streams.video[0]
        assert (stream.width, stream.height) == (112, 72)
        assert sum(1 for _ in container.decode(stream)) == 12


def test_bad_inputs_exit_2_and_write_nothing(workdir, tmp_path, capsys):
    out = tmp_path / "pred"
    base = ["--video", str(VIDEO), "--text", TEXT, "--out_dir", str(out)]
    assert predict.main(["--workdir", str(tmp_path / "nope"), *base]) == 2
    assert "nope: directory does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert predict.main(["--workdir", str(tmp_path / "empty"), *base]) == 2
    assert "not a weights dir or training workdir (no config.json)" in capsys.readouterr().err
    assert predict.main(["--workdir", str(workdir), *base, "--question_template_id", "99"]) == 2
    assert "--question_template_id 99" in capsys.readouterr().err

    def run(video) -> str:
        args = ["--workdir", str(workdir), "--video", str(video), "--text", TEXT]
        assert predict.main([*args, "--out_dir", str(out)]) == 2
        return capsys.readouterr().err

    mp4 = tmp_path / "clip.mp4"
    mp4.write_bytes(b"\0")
    try:
        import av  # noqa: F401

        assert f"{mp4}: cannot decode the video" in run(mp4)
    except ImportError:
        assert f"{mp4}: reading a .mp4 video needs PyAV" in run(mp4)
    frames = tmp_path / "frames"
    frames.mkdir()
    for p in sorted(VIDEO.glob("*.jpg"))[:3]:
        (frames / p.name).write_bytes(p.read_bytes())
    Image.new("RGB", (64, 48)).save(frames / "00003.jpg")
    assert f"{frames / '00003.jpg'}: frame size 64x48 differs" in run(frames)
    (frames / "00003.jpg").write_bytes(b"not a jpeg")
    assert f"{frames / '00003.jpg'}: cannot read the image" in run(frames)
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4", "empty", "frames"]


@pytest.mark.slow  # two more compiles (~60 s): 10 frames (flex draws 8) and 1 frame (padded to 8)
@pytest.mark.parametrize("num_frames", [10, 1])
def test_predict_samples_vlm_frames(workdir, tmp_path, num_frames):
    frames = tmp_path / "frames"
    frames.mkdir()
    for p in sorted(VIDEO.glob("*.jpg"))[:num_frames]:
        (frames / p.name).write_bytes(p.read_bytes())
    args = ["--workdir", str(workdir), "--video", str(frames), "--text", TEXT, "--seed", "7"]
    assert predict.main([*args, "--out_dir", str(tmp_path / "pred"), "--chunk_size", "5"]) == 0
    logits = np.load(tmp_path / "pred" / "logits.npy")
    assert logits.shape == (num_frames, 72, 112) and np.isfinite(logits).all()
    assert len(list((tmp_path / "pred").glob("*.png"))) == num_frames
    meta = json.loads((tmp_path / "pred" / "predict.json").read_text())
    vlm = meta["vlm_frames"]
    assert len(vlm) == 8 and vlm == sorted(vlm) and meta["sam_frames"] == vlm
    if num_frames == 10:  # one frame per segment of linspace(0, 10, 9).astype(int)
        bounds = [0, 1, 2, 3, 5, 6, 7, 8, 10]
        assert all(lo <= v < hi for v, lo, hi in zip(vlm, bounds[:-1], bounds[1:], strict=True))
    else:
        assert vlm == [0] * 8
