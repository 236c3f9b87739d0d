"""`refvos predict` on the tiny VIRST fixture: weights dir + JPEGs + sentence -> mask logits.

The fixture (`shared/fixtures/virst_tiny_dev`) is imported with `import-weights --kind virst`;
`predict` then runs from the raw JPEG folder and the sentence, with the template ids that give
`prompt.json`'s text (short question 0, answer 0) and Initial ST-Fusion off (the released
eval), and must give `eval_video_res_logits`: relative error max|Δ| / max|ref| <= 1e-3 per frame
(the model test measures <= 1.3e-6 for the same path), PNGs = (logits > 0) * 255, a GIF.
"""

import json

import numpy as np
import pytest
from PIL import Image
from shared_paths import VIRST_FIXTURE as FIXTURE
from shared_paths import shared_dir

from jax_refvos.main import import_weights, predict
from jax_refvos.pipeline import prompts
from jax_refvos.pipeline.tokenizer import load_tokenizer

TOKENIZER = (shared_dir() or FIXTURE) / "tokenizers" / "videochat_flash_qwen2"
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


def test_templates_0_0_give_the_fixture_prompt():
    prompt = json.loads((FIXTURE / "prompt.json").read_text())
    tok = load_tokenizer(str(TOKENIZER), "virst")
    ids, _ = prompts.virst_encode(tok, prompts.virst_messages(TEXT, 0, 0))
    assert ids == prompt["input_ids"]


def test_predict_matches_eval_logits(workdir, tmp_path):
    out = tmp_path / "pred"
    args = ["--workdir", str(workdir), "--video", str(VIDEO), "--text", TEXT]
    args += ["--out_dir", str(out), "--question_template_id", "0", "--answer_template_id", "0"]
    assert predict.main([*args, "--initial_seg_fusion=false", "--chunk_size", "5"]) == 0
    logits = np.load(out / "logits.npy")
    ref = np.load(FIXTURE / "activations.npz")["eval_video_res_logits"]
    assert logits.dtype == np.float32 and logits.shape == ref.shape == (12, 72, 112)
    per_frame = [rel_err(o, r) for o, r in zip(logits, ref, strict=True)]
    print({"per_frame_rel_max": f"{max(per_frame):.1e}"})
    assert max(per_frame) <= REL_TOL, per_frame
    frames = sorted(p.stem for p in VIDEO.glob("*.jpg"))
    for stem, lg in zip(frames, logits, strict=True):
        png = np.asarray(Image.open(out / f"{stem}.png"))
        np.testing.assert_array_equal(png, ((lg > 0) * 255).astype(np.uint8))
    with Image.open(out / "overlay.gif") as gif:
        assert gif.format == "GIF" and gif.n_frames == 12


def test_bad_inputs_exit_2_and_write_nothing(workdir, tmp_path, capsys):
    out = tmp_path / "pred"
    base = ["--video", str(VIDEO), "--text", TEXT, "--out_dir", str(out)]
    assert predict.main(["--workdir", str(tmp_path / "nope"), *base]) == 2
    assert "no config.json" in capsys.readouterr().err
    assert predict.main(["--workdir", str(workdir), *base, "--question_template_id", "99"]) == 2
    assert "--question_template_id 99" in capsys.readouterr().err
    mp4 = tmp_path / "clip.mp4"
    mp4.write_bytes(b"\0")
    args = ["--workdir", str(workdir), "--video", str(mp4), "--text", TEXT, "--out_dir", str(out)]
    assert predict.main(args) == 2
    assert "pass a JPEG folder" in capsys.readouterr().err
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]


@pytest.mark.slow  # a second compile (~30 s): 10 frames, VLM view padded to 12 (last repeated)
def test_predict_pads_the_vlm_view(workdir, tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    for p in sorted(VIDEO.glob("*.jpg"))[:10]:
        (frames / p.name).write_bytes(p.read_bytes())
    out = tmp_path / "pred"
    args = ["--workdir", str(workdir), "--video", str(frames), "--text", TEXT]
    assert predict.main([*args, "--out_dir", str(out), "--chunk_size", "5"]) == 0
    logits = np.load(out / "logits.npy")
    assert logits.shape == (10, 72, 112) and np.isfinite(logits).all()
    assert len(list(out.glob("*.png"))) == 10
