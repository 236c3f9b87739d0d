"""refvos predict: segment the object a sentence refers to, through a video.

  refvos predict --workdir W --video frames/|clip.mp4 --text "the blue square moving down"
      --out_dir O [--question_template_id 0] [--answer_template_id 0] [--initial_seg_fusion false]
      [--seed 42] [--dynamic_anchors] [--option KEY=VALUE ...] [--overlay auto|mp4|gif]
      [--chunk_size 8] [--overwrite]

--workdir is a weights directory written by `refvos import-weights` of a method (`--kind
virst`; its `tokenizer/` holds the tokenizer) or a `refvos train` workdir (its newest
checkpoint); the directory's recorded method runs (`methods/registry.py`). The template, ISF and
dynamic-anchor flags are VIRST's; --option KEY=VALUE passes any method's option.
--video is a folder of JPEG frames, taken sorted by name (by
number when every name is a number), or a video file (.mp4, .avi, .mov, .mkv, .webm) decoded
with PyAV (`pip install 'jax_refvos[video]'`), whose frames are named 00000, 00001, ... The
prompt is VIRST's chat template (`pipeline/prompts.py`): question template
--question_template_id of the short list, or of the long list when the text ends with "?", and
answer template --answer_template_id; both default to 0 ("What is {sent} in the Reference
image? ..." / "It is {seg}."), the fixture's. --initial_seg_fusion (weights dirs; a training
workdir keeps the setting it trained with) defaults to false, as VIRST's released eval.py runs.

Frames (reference/virst.md §1.1), for a video of L frames: the VLM sees the T_vlm frames of the
"flex" policy (every frame up to 64 frames, else one drawn in each of 64 equal segments; fewer
than 8 frames are padded by repeating the last), the ST-Fusion min(32, T_vlm) of those, drawn;
the eval anchors are taken among the ST-Fusion frames, and SAM2 propagates over all L frames.
VIRST draws at random; --seed (default 42) makes the draw reproducible.

Written to --out_dir (it appears complete or not at all): logits.npy = float32[L, h, w], the mask
logits at the frames' own resolution, in frame order; <frame>.png (0/255) per frame; the frames
with the mask tinted red, for a person to look at: overlay.mp4 (at most 640 px) with PyAV, else
overlay.gif (at most 320 px) (--overlay picks); predict.json: the frame names (the rows of
logits.npy), the method and what it sampled (VIRST: the VLM / ST-Fusion frames, the templates
and the switches the model ran with). Frames are decoded when needed and results written chunk by
chunk, so memory does not grow with L.
"""

import json
import sys
import time
from pathlib import Path

import numpy as np
from absl import flags
from PIL import Image

from jax_refvos import video_io
from jax_refvos.errors import InputError
from jax_refvos.main import cli


def define_flags(fv: flags.FlagValues) -> None:
    flags.DEFINE_string(
        "workdir",
        None,
        "Weights dir (`import-weights --kind virst`) or training workdir.",
        flag_values=fv,
    )
    flags.DEFINE_string("video", None, "Folder of JPEG frames, or a video file.", flag_values=fv)
    flags.DEFINE_string("text", None, "The referring expression.", flag_values=fv)
    flags.DEFINE_string("out_dir", None, "Where logits.npy, PNGs, the overlay go.", flag_values=fv)
    flags.DEFINE_integer(
        "question_template_id", 0, "VIRST question template index.", flag_values=fv
    )
    flags.DEFINE_integer("answer_template_id", 0, "VIRST answer template index.", flag_values=fv)
    flags.DEFINE_boolean(
        "initial_seg_fusion",
        False,
        "VIRST, weights dirs: Initial ST-Fusion (off in its eval; training workdirs keep theirs).",
        flag_values=fv,
    )
    flags.DEFINE_boolean(
        "dynamic_anchors",
        False,
        "The paper's dynamic anchor update (not in VIRST's released code; docs/virst.md).",
        flag_values=fv,
    )
    flags.DEFINE_integer(
        "seed", 42, "Seed of the VLM / ST-Fusion frame draw (random in VIRST).", flag_values=fv
    )
    flags.DEFINE_enum(
        "overlay", "auto", ["auto", "mp4", "gif"], "Overlay (auto: mp4 with PyAV).", flag_values=fv
    )
    flags.DEFINE_integer(
        "chunk_size", 8, "Frames per compiled propagation chunk.", lower_bound=1, flag_values=fv
    )
    flags.DEFINE_multi_string(
        "option", [], "A method option KEY=VALUE (repeatable).", flag_values=fv
    )
    flags.DEFINE_boolean("overwrite", False, "Replace an existing --out_dir.", flag_values=fv)
    for name in ("workdir", "video", "text", "out_dir"):
        flags.mark_flag_as_required(name, flag_values=fv)


# Flags that are method options (`Method.load_options`): passed on only when given.
METHOD_OPTIONS = (
    "question_template_id",
    "answer_template_id",
    "initial_seg_fusion",
    "dynamic_anchors",
)


# ----------------------------------------------------------------------------- command
def body(fv: flags.FlagValues) -> None:
    from jax_refvos import fileio
    from jax_refvos.methods import registry
    from jax_refvos.methods.base import resolve_options

    # Cheap checks first (flags, paths, frame headers), then the weights.
    text = fv.text.strip()
    if not text:
        raise InputError("--text is empty")
    workdir, out_dir = Path(fv.workdir), Path(fv.out_dir)
    method, kind = registry.open_workdir(workdir)
    options = resolve_options(method, cli.method_options(fv, METHOD_OPTIONS), "refvos predict")
    method.check_predict(text, options)
    if out_dir.exists() and not fv.overwrite:
        raise InputError(f"{out_dir}: already exists (pass --overwrite to replace it)")
    overlay = fv.overlay
    if overlay != "gif":
        try:
            import av  # noqa: F401
        except ImportError:
            if overlay == "mp4":
                raise InputError(f"--overlay mp4 {video_io.NEED_AV}") from None
            overlay = "gif"
    video = video_io.Video(Path(fv.video))
    try:
        start = time.perf_counter()
        predictor = method.load(workdir, kind, options)
        n = len(video)
        with fileio.atomic_directory(out_dir, overwrite=fv.overwrite) as tmp:
            facts, chunks = predictor.predict(video, text, seed=fv.seed, chunk_size=fv.chunk_size)
            logits = video_io.LogitsFile(tmp / "logits.npy", (n, *video.size))
            try:
                for index, chunk in chunks:  # [m, 1, H, W]
                    logits.write(index, chunk[:, 0])
                    for i, lg in zip(index, chunk[:, 0], strict=True):
                        png = Image.fromarray(((lg > 0) * 255).astype(np.uint8))
                        png.save(tmp / f"{video.names[i]}.png")
                video_io.write_overlay(tmp, video, logits, overlay)
            finally:
                logits.close()
            meta = {
                "method": method.name,
                "frames": video.names,
                "seed": fv.seed,
                "text": text,
                **facts,
            }
            (tmp / "predict.json").write_text(json.dumps(meta, indent=1) + "\n")
    finally:
        video.close()
    print(f"segmented {text!r} over {n} frames -> {out_dir} ({time.perf_counter() - start:.1f} s)")


def main(argv=None) -> int:
    return cli.run_command("predict", __doc__, define_flags, body, argv)


if __name__ == "__main__":
    sys.exit(main())
