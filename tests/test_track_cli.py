"""`refvos track` without torch: every bad input is one `error:` line, exit 2, nothing written.

No torch-free SAM2 checkpoint exists, so the failing runs pass a garbage `.pt`: the CLI checks the
flags, the output folder, the frames and the prompt before it loads the checkpoint, and each case
must fail on its own problem, not on the checkpoint. The output path is `results/masks` under a
fresh folder, so "nothing written" means `results/` (where the masks and the temporary folder
would go) never appears. The success path runs with a stub predictor (the CLI's bookkeeping:
prompt hand-off, file names, thresholding, -1024 before the prompted frame, all-or-nothing
output); tests/parity/test_parity_sam2_track_cli.py runs it with real weights against `sam2`.
"""

import pickle
import zipfile

import numpy as np
import pytest
from PIL import Image

from jax_refvos.main import track
from jax_refvos.weights import sam2_torch

H, W, T = 24, 32, 3


@pytest.fixture
def inputs(tmp_path):
    """frames/00000..00002.jpg (24x32), mask.png, a garbage ckpt.pt; returns a dict of paths."""
    frames = tmp_path / "frames"
    frames.mkdir()
    rng = np.random.default_rng(0)
    for i in range(T):
        image = rng.integers(0, 255, (H, W, 3), dtype=np.uint8)
        Image.fromarray(image).save(frames / f"{i:05d}.jpg")
    mask = np.zeros((H, W), np.uint8)
    mask[5:15, 8:20] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    (tmp_path / "ckpt.pt").write_bytes(b"not a checkpoint\x00" * 8)
    return {
        "root": tmp_path,
        "frames": frames,
        "mask": tmp_path / "mask.png",
        "ckpt": tmp_path / "ckpt.pt",
        "out": tmp_path / "results" / "masks",
    }


def track_args(p, *extra, ckpt=None, frames=None, prompt=None):
    args = [
        f"--checkpoint={ckpt or p['ckpt']}",
        f"--frames_dir={frames or p['frames']}",
        f"--out_dir={p['out']}",
    ]
    return args + (prompt if prompt is not None else [f"--mask_png={p['mask']}"]) + list(extra)


def assert_fails(capsys, p, rc, *needles):
    """Exit 2, exactly one `error:` line containing every needle, no traceback, nothing written."""
    err = capsys.readouterr().err
    assert rc == 2, err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert "Traceback" not in err
    assert not (p["root"] / "results").exists()


def test_help_exits_0_and_lists_the_flags(capsys):
    assert track.main(["--help"]) == 0
    out = capsys.readouterr().out
    for flag in ("checkpoint", "model_cfg", "frames_dir", "out_dir", "mask_png", "mask_frame"):
        assert f"--{flag}" in out
    for flag in ("points", "box", "image_size", "chunk_size"):
        assert f"--{flag}" in out
    assert "logits.npy" in out  # the docstring's output contract


def test_required_flag_missing(capsys, inputs):
    rc = track.main([f"--checkpoint={inputs['ckpt']}", f"--out_dir={inputs['out']}"])
    assert_fails(capsys, inputs, rc, "frames_dir")


@pytest.mark.parametrize(
    ("prompt", "needles"),
    [
        ([], ("exactly one of --mask_png, --points, --box", "got none")),
        (["--points=10,12,1", "--box=1,2,20,22"], ("exactly one", "--points and --box")),
        (["--points=10,12"], ("--points '10,12'", "3 comma-separated numbers")),
        (["--points=10,12,1;x,3,0"], ("--points", "expected numbers")),
        (["--points="], ("--points ''", "3 comma-separated")),
        (["--points=10,12,1;4,5,2"], ("--points", "labels must be 1 (object) or 0")),
        (["--box=1,2,3"], ("--box '1,2,3'", "4 comma-separated numbers")),
        (["--box=1,2,3,4;5,6,7,8"], ("--box '1,2,3,4;5,6,7,8'", "one box")),
    ],
    ids=["none", "two", "points-2", "points-text", "points-empty", "label", "box-3", "box-2"],
)
def test_bad_prompt_flags(capsys, inputs, prompt, needles):
    assert_fails(capsys, inputs, track.main(track_args(inputs, prompt=prompt)), *needles)


def test_bad_mask_png(capsys, inputs):
    bad = inputs["root"] / "bad.png"
    bad.write_bytes(b"\x89PNG garbage")
    rc = track.main(track_args(inputs, prompt=[f"--mask_png={bad}"]))
    assert_fails(capsys, inputs, rc, "bad.png", "cannot read the mask PNG")
    rc = track.main(track_args(inputs, prompt=[f"--mask_png={inputs['root'] / 'nope.png'}"]))
    assert_fails(capsys, inputs, rc, "nope.png", "cannot read the mask PNG")


def test_mask_png_of_the_wrong_size(capsys, inputs):
    small = inputs["root"] / "small.png"
    Image.fromarray(np.full((H, W - 1), 255, np.uint8)).save(small)
    rc = track.main(track_args(inputs, prompt=[f"--mask_png={small}"]))
    assert_fails(capsys, inputs, rc, "small.png", f"mask size {W - 1}x{H}", f"{W}x{H}")


def test_mask_frame_beyond_the_video(capsys, inputs):
    rc = track.main(track_args(inputs, f"--mask_frame={T}"))
    assert_fails(capsys, inputs, rc, f"--mask_frame {T}", f"has {T} frames")
    rc = track.main(track_args(inputs, "--mask_frame=-1"))  # absl's lower bound
    assert_fails(capsys, inputs, rc, "mask_frame")


def test_out_dir_exists_and_is_not_empty(capsys, inputs):
    out = inputs["out"]
    out.mkdir(parents=True)
    (out / "keep.txt").write_text("mine")
    rc = track.main(track_args(inputs))
    err = capsys.readouterr().err
    assert rc == 2 and f"error: {out}: exists and is not an empty directory" in err
    assert sorted(p.name for p in out.parent.iterdir()) == ["masks"]  # no temporary folder
    assert [p.name for p in out.iterdir()] == ["keep.txt"] and (out / "keep.txt").read_text()


def test_out_dir_under_a_file(capsys, inputs):
    (inputs["root"] / "results").write_text("a file")
    rc = track.main(track_args(inputs))
    err = capsys.readouterr().err
    assert rc == 2 and "error: " in err and "results is not a directory" in err
    assert (inputs["root"] / "results").read_text() == "a file"


def test_frames_dir_missing_or_empty(capsys, inputs):
    missing = inputs["root"] / "nowhere"
    rc = track.main(track_args(inputs, frames=missing))
    assert_fails(capsys, inputs, rc, "nowhere", "not a directory")
    empty = inputs["root"] / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no frames here")
    rc = track.main(track_args(inputs, frames=empty))
    assert_fails(capsys, inputs, rc, "empty", "no JPEG frames")


def test_unreadable_jpeg(capsys, inputs):
    (inputs["frames"] / "00001.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    rc = track.main(track_args(inputs))
    assert_fails(capsys, inputs, rc, "00001.jpg", "cannot read the image")


def test_frames_of_different_sizes_or_clashing_names(capsys, inputs):
    Image.new("RGB", (W, H + 2)).save(inputs["frames"] / "00003.jpg")
    rc = track.main(track_args(inputs))
    assert_fails(capsys, inputs, rc, "00003.jpg", "differs from the first frame")
    Image.new("RGB", (W, H)).save(inputs["frames"] / "00003.jpg")
    Image.new("RGB", (W, H)).save(inputs["frames"] / "00003.jpeg")
    rc = track.main(track_args(inputs))
    assert_fails(capsys, inputs, rc, "two frames named '00003'")


def test_bad_model_cfg_or_image_size(capsys, inputs):
    rc = track.main(track_args(inputs, "--model_cfg=sam2.1_hiera_xxl"))
    assert_fails(capsys, inputs, rc, "unknown SAM2 model config 'sam2.1_hiera_xxl'")
    rc = track.main(track_args(inputs, "--image_size=100"))
    assert_fails(capsys, inputs, rc, "multiple of 32", "100")


def test_missing_checkpoint(capsys, inputs):
    rc = track.main(track_args(inputs, ckpt=inputs["root"] / "absent.pt"))
    assert_fails(capsys, inputs, rc, "absent.pt", "not found")


def test_garbage_checkpoints(capsys, inputs):
    """Everything else valid: the checkpoint is the problem, found after the frames are read."""
    rc = track.main(track_args(inputs))
    assert_fails(capsys, inputs, rc, "ckpt.pt", "not a PyTorch checkpoint")
    # A well-formed torch.save-style zip whose "model" holds no tensors.
    fake = inputs["root"] / "fake.pt"
    with zipfile.ZipFile(fake, "w") as zf:
        zf.writestr("archive/data.pkl", pickle.dumps({"model": {"w": 1}}, protocol=2))
    rc = track.main(track_args(inputs, ckpt=fake))
    assert_fails(capsys, inputs, rc, "fake.pt", "not a state dict")


# ---------------------------------------------------------------- success path (stub predictor)
class StubPredictor:
    """Records the prompt; propagation yields logits = frame index - 1.5 + a fixed ramp."""

    def __init__(self, fail_at=None):
        self.calls = []
        self.fail_at = fail_at

    def add_new_mask(self, state, frame_idx, obj_id, mask):
        self.calls.append(("mask", frame_idx, obj_id, np.asarray(mask)))

    def add_new_points_or_box(self, state, frame_idx, obj_id, points=None, labels=None, box=None):
        value = box if box is not None else (np.asarray(points), np.asarray(labels))
        self.calls.append(("box" if box is not None else "points", frame_idx, obj_id, value))

    def propagate_in_video(self, state):
        start = self.calls[0][1]
        ramp = np.linspace(-1, 1, state.video_width, dtype=np.float32)
        for t in range(start, state.num_frames):
            if t == self.fail_at:
                raise KeyboardInterrupt
            logits = np.broadcast_to(ramp + (t - 1.5), (state.video_height, state.video_width))
            yield t, [1], logits[None, None].copy()


@pytest.fixture
def stub(monkeypatch):
    holder = {"predictor": StubPredictor(), "kwargs": None}

    def load_video_predictor(path, model_cfg, **kwargs):
        holder["kwargs"] = dict(path=path, model_cfg=model_cfg, **kwargs)
        return holder["predictor"]

    monkeypatch.setattr(sam2_torch, "load_video_predictor", load_video_predictor)
    return holder


def expected_logits(start):
    ramp = np.linspace(-1, 1, W, dtype=np.float32)
    want = np.full((T, H, W), -1024.0, np.float32)
    for t in range(start, T):
        want[t] = ramp + (t - 1.5)
    return want


@pytest.mark.parametrize("mask_frame", [0, 1])
def test_outputs_with_a_stub_predictor(capsys, inputs, stub, mask_frame):
    inputs["out"].mkdir(parents=True)  # an existing empty folder is fine
    rc = track.main(track_args(inputs, f"--mask_frame={mask_frame}", "--image_size=64"))
    assert rc == 0, capsys.readouterr().err
    assert stub["kwargs"]["image_size"] == 64 and stub["kwargs"]["model_cfg"] == "sam2.1_hiera_t"
    ((kind, frame, obj_id, mask),) = stub["predictor"].calls
    assert (kind, frame, obj_id) == ("mask", mask_frame, 1)
    np.testing.assert_array_equal(mask, np.pad(np.ones((10, 12), bool), ((5, 9), (8, 12))))
    out = inputs["out"]
    names = sorted(p.name for p in out.iterdir())
    assert names == ["00000.png", "00001.png", "00002.png", "logits.npy"]
    logits = np.load(out / "logits.npy")
    assert logits.dtype == np.float32
    np.testing.assert_array_equal(logits, expected_logits(mask_frame))
    for t in range(T):
        png = np.asarray(Image.open(out / f"{t:05d}.png"))
        assert png.dtype == np.uint8
        np.testing.assert_array_equal(png, (logits[t] > 0) * 255)
    assert 0 < np.mean(logits > 0) < 1  # the thresholding was exercised both ways
    assert sorted(p.name for p in out.parent.iterdir()) == ["masks"]  # no temporary folder


def test_points_and_box_reach_the_predictor_in_pixels(inputs, stub):
    rc = track.main(track_args(inputs, prompt=["--points=10,12.5,1; 3,4,0"]))
    assert rc == 0
    kind, frame, _, (points, labels) = stub["predictor"].calls[0]
    assert kind == "points" and frame == 0
    np.testing.assert_array_equal(points, [[10, 12.5], [3, 4]])
    np.testing.assert_array_equal(labels, [1, 0])
    stub["predictor"] = StubPredictor()
    inputs["out"] = inputs["root"] / "box_out"
    assert track.main(track_args(inputs, prompt=["--box=1,2,20,22"])) == 0
    kind, _, _, box = stub["predictor"].calls[0]
    assert kind == "box"
    np.testing.assert_array_equal(box, [1, 2, 20, 22])
    assert (inputs["root"] / "box_out" / "logits.npy").is_file()


def test_interrupted_run_leaves_nothing(capsys, inputs, stub, monkeypatch):
    stub["predictor"] = StubPredictor(fail_at=2)
    assert track.main(track_args(inputs)) == 130
    assert not (inputs["root"] / "results").exists()

    def broken_save(*args, **kwargs):
        raise OSError("disk full")

    stub["predictor"] = StubPredictor()
    monkeypatch.setattr(np, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        track.main(track_args(inputs))
    # The temporary folder is gone; only the (created) parent remains, empty.
    assert list((inputs["root"] / "results").iterdir()) == []
