"""refvos track: segment one object through a folder of JPEG frames with SAM 2 / SAM 2.1.

  refvos track --checkpoint sam2.1_hiera_tiny.pt --model_cfg sam2.1_hiera_t \
      --frames_dir video/ --out_dir masks/ --points "210,350,1;250,220,0"
  refvos track --checkpoint ckpt.pt --model_cfg sam2.1_hiera_l --frames_dir video/ \
      --out_dir masks/ --mask_png first_mask.png --mask_frame 0 --image_size 512

Object 1 is prompted on frame --mask_frame (default 0) of the frames sorted by name (by number
when every name is a number), with exactly one of --mask_png (non-zero pixels are the object),
--points ("x,y,label" in frame pixels, label 1 foreground / 0 background, ";"-separated) or
--box ("x0,y0,x1,y1"). It is then propagated forward to the last frame. Written to --out_dir:
<frame>.png (0/255) for every frame and logits.npy = float32[t, h, w], the mask logits at the
frames' own resolution before thresholding (frames before the prompted one hold -1024, "no
object"). The output directory appears complete or not at all.
"""

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from absl import flags

from jax_refvos.errors import InputError
from jax_refvos.main import cli


def define_flags(fv: flags.FlagValues) -> None:
    flags.DEFINE_string("checkpoint", None, "Official SAM2/SAM2.1 .pt checkpoint.", flag_values=fv)
    flags.DEFINE_string(
        "model_cfg", "sam2.1_hiera_t", "sam2.1_hiera_{t,s,b+,l} or sam2_hiera_*.", flag_values=fv
    )
    flags.DEFINE_string("frames_dir", None, "Folder of JPEG frames.", flag_values=fv)
    flags.DEFINE_string("out_dir", None, "Where the masks and logits.npy go.", flag_values=fv)
    flags.DEFINE_string("mask_png", None, "Mask prompt (non-zero = object).", flag_values=fv)
    flags.DEFINE_integer(
        "mask_frame", 0, "Frame index the prompt is on.", lower_bound=0, flag_values=fv
    )
    flags.DEFINE_string("points", None, 'Clicks "x,y,label;x,y,label".', flag_values=fv)
    flags.DEFINE_string("box", None, 'Box "x0,y0,x1,y1" in pixels.', flag_values=fv)
    flags.DEFINE_integer(
        "image_size",
        None,
        "Model input size (default: the config's 1024).",
        lower_bound=32,
        flag_values=fv,
    )
    flags.DEFINE_integer(
        "chunk_size", 8, "Frames per compiled scan chunk.", lower_bound=1, flag_values=fv
    )
    for name in ("checkpoint", "frames_dir", "out_dir"):
        flags.mark_flag_as_required(name, flag_values=fv)


def _numbers(text: str, flag: str, group: int) -> np.ndarray:
    try:
        rows = [[float(v) for v in part.split(",")] for part in text.split(";") if part.strip()]
    except ValueError:
        raise InputError(f"--{flag} {text!r}: expected numbers separated by ',' and ';'") from None
    if not rows or any(len(r) != group for r in rows):
        raise InputError(f"--{flag} {text!r}: each item needs {group} comma-separated numbers")
    return np.asarray(rows, np.float32)


def _read_mask(path: str) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as img:
            return (
                np.asarray(img) != 0
                if img.mode in ("P", "L", "1")
                else (np.asarray(img.convert("L")) != 0)
            )
    except (OSError, SyntaxError) as err:
        raise InputError(f"{path}: cannot read the mask PNG ({err})") from None


def _parse_prompt(fv: flags.FlagValues) -> tuple[str, np.ndarray]:
    """("mask", bool[H, W]) | ("points", float32[n, 3]) | ("box", float32[4]) from the flags."""
    given = [f"--{n}" for n in ("mask_png", "points", "box") if fv[n].value is not None]
    if len(given) != 1:
        got = " and ".join(given) if given else "none"
        raise InputError(f"give exactly one of --mask_png, --points, --box (got {got})")
    if fv.mask_png is not None:
        mask = _read_mask(fv.mask_png)
        return "mask", mask[..., 0] if mask.ndim == 3 else mask
    if fv.points is not None:
        rows = _numbers(fv.points, "points", 3)
        if not np.isin(rows[:, 2], (0, 1)).all():
            raise InputError(f"--points {fv.points!r}: labels must be 1 (object) or 0 (background)")
        return "points", rows
    boxes = _numbers(fv.box, "box", 4)
    if len(boxes) != 1:
        raise InputError(f"--box {fv.box!r}: give one box")
    return "box", boxes[0]


def _add_prompt(predictor, state, frame_idx: int, kind: str, value: np.ndarray) -> None:
    if kind == "mask":
        predictor.add_new_mask(state, frame_idx, 1, value)
    elif kind == "points":
        predictor.add_new_points_or_box(
            state, frame_idx, 1, points=value[:, :2], labels=value[:, 2]
        )
    else:
        predictor.add_new_points_or_box(state, frame_idx, 1, box=value)


def run(fv: flags.FlagValues) -> None:
    from PIL import Image
    from tqdm import tqdm

    from jax_refvos.model.sam2.config import from_name
    from jax_refvos.model.sam2.video_frames import load_video_frames
    from jax_refvos.model.sam2.video_predictor import InferenceState
    from jax_refvos.weights import sam2_torch

    # Cheap checks first (flags, files), then the frames, then the checkpoint (slow to load).
    kind, value = _parse_prompt(fv)
    out_dir = Path(fv.out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise InputError(f"{out_dir}: exists and is not an empty directory")
    parent = next(p for p in out_dir.absolute().parents if p.exists())
    if not parent.is_dir():
        raise InputError(f"{out_dir}: cannot be created, {parent} is not a directory")
    if not Path(fv.checkpoint).is_file():
        raise InputError(f"{fv.checkpoint}: checkpoint file not found")
    try:
        image_size = from_name(fv.model_cfg, image_size=fv.image_size).image_size
    except ValueError as err:
        raise InputError(str(err)) from None  # unknown --model_cfg, bad --image_size
    start = time.perf_counter()
    images, (height, width), paths = load_video_frames(fv.frames_dir, image_size, progress=True)
    stems = [p.stem for p in paths]
    if len(set(stems)) != len(stems):
        dup = next(s for s in stems if stems.count(s) > 1)
        raise InputError(f"{fv.frames_dir}: two frames named {dup!r} (their masks would clash)")
    k = fv.mask_frame
    if k >= len(paths):
        raise InputError(f"--mask_frame {k}: {fv.frames_dir} has {len(paths)} frames")
    if kind == "mask" and value.shape != (height, width):
        raise InputError(
            f"{fv.mask_png}: mask size {value.shape[1]}x{value.shape[0]} differs "
            f"from the frames' {width}x{height}"
        )
    predictor = sam2_torch.load_video_predictor(
        fv.checkpoint, fv.model_cfg, image_size=fv.image_size, chunk_size=fv.chunk_size
    )
    state = InferenceState(images=images, video_height=height, video_width=width)
    _add_prompt(predictor, state, k, kind, value)
    logits = np.full((state.num_frames, height, width), -1024.0, np.float32)
    frames = tqdm(
        predictor.propagate_in_video(state),
        total=state.num_frames - k,
        desc="propagate",
        unit="frame",
    )
    for frame_idx, _, masks in frames:
        logits[frame_idx] = masks[0, 0]
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        for path, frame_logits in zip(paths, logits, strict=True):
            png = ((frame_logits > 0) * 255).astype(np.uint8)
            Image.fromarray(png).save(tmp / f"{path.stem}.png")
        np.save(tmp / "logits.npy", logits)
        if out_dir.exists():
            out_dir.rmdir()
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print(
        f"tracked object 1 over {state.num_frames} frames -> {out_dir} "
        f"({time.perf_counter() - start:.1f} s)"
    )


def main(argv=None) -> int:
    return cli.run_command("track", __doc__, define_flags, run, argv)


if __name__ == "__main__":
    sys.exit(main())
