"""refvos predict: segment the object a sentence refers to, through a video, with VIRST.

  refvos predict --workdir W --video frames/|clip.mp4 --text "the blue square moving down"
      --out_dir O [--question_template_id 0] [--answer_template_id 0] [--initial_seg_fusion false]
      [--seed 42] [--dynamic_anchors] [--overlay auto|mp4|gif] [--chunk_size 8] [--overwrite]

--workdir is a weights directory written by `refvos import-weights --kind virst` (its
`tokenizer/` holds the tokenizer) or a `refvos train` workdir (its newest checkpoint).
--video is a folder of JPEG frames, taken sorted by name (by
number when every name is a number), or a video file (.mp4, .avi, .mov, .mkv, .webm) decoded
with PyAV (`pip install 'jax_refvos[video]'`), whose frames are named 00000, 00001, ... The
prompt is VIRST's chat template (`pipeline/prompts.py`): question template
--question_template_id of the short list, or of the long list when the text ends with "?", and
answer template --answer_template_id; both default to 0 ("What is {sent} in the Reference
image? ..." / "It is {seg}."), the fixture's. --initial_seg_fusion defaults to false, as VIRST's
released eval.py runs.

Frames (reference/virst.md §1.1), for a video of L frames: the VLM sees the T_vlm frames of the
"flex" policy (every frame up to 64 frames, else one drawn in each of 64 equal segments; fewer
than 8 frames are padded by repeating the last), the ST-Fusion min(32, T_vlm) of those, drawn;
the eval anchors are taken among the ST-Fusion frames, and SAM2 propagates over all L frames.
VIRST draws at random; --seed (default 42) makes the draw reproducible.

Written to --out_dir (it appears complete or not at all): logits.npy = float32[L, h, w], the mask
logits at the frames' own resolution, in frame order; <frame>.png (0/255) per frame; the frames
with the mask tinted red, for a person to look at: overlay.mp4 (at most 640 px) with PyAV, else
overlay.gif (at most 320 px) (--overlay picks); predict.json: the frame names (the rows of
logits.npy) and the sampled frames. Frames are decoded when needed and results written chunk by
chunk, so memory does not grow with L.
"""

import json
import sys
import time
from pathlib import Path

import numpy as np
from absl import flags
from PIL import Image

from jax_refvos.errors import InputError
from jax_refvos.main import cli, video_io, virst_workdir


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
        "initial_seg_fusion", False, "Initial ST-Fusion (off in VIRST's eval).", flag_values=fv
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
    flags.DEFINE_boolean("overwrite", False, "Replace an existing --out_dir.", flag_values=fv)
    for name in ("workdir", "video", "text", "out_dir"):
        flags.mark_flag_as_required(name, flag_values=fv)


def _template_ids(text: str, q: int, a: int) -> None:
    from jax_refvos.pipeline import prompts

    long = text.endswith("?")
    questions = prompts.VIRST_LONG_QUESTIONS if long else prompts.VIRST_SHORT_QUESTIONS
    if not 0 <= q < len(questions):
        kind = "long (text ends with '?')" if long else "short"
        raise InputError(
            f"--question_template_id {q}: the {kind} questions are 0..{len(questions) - 1}"
        )
    if not 0 <= a < len(prompts.VIRST_ANSWERS):
        raise InputError(
            f"--answer_template_id {a}: the answers are 0..{len(prompts.VIRST_ANSWERS) - 1}"
        )


# ----------------------------------------------------------------------------- command
def body(fv: flags.FlagValues) -> None:
    from jax_refvos import fileio
    from jax_refvos.pipeline import prompts, sampling

    # Cheap checks first (flags, paths, frame headers), then the tokenizer, then the weights.
    text = fv.text.strip()
    if not text:
        raise InputError("--text is empty")
    q, a = fv.question_template_id, fv.answer_template_id
    _template_ids(text, q, a)
    workdir, out_dir = Path(fv.workdir), Path(fv.out_dir)
    virst_workdir.check_workdir(workdir)
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
        model, tok = virst_workdir.load_model(
            workdir, initial_seg_fusion=fv.initial_seg_fusion, dynamic_anchors=fv.dynamic_anchors
        )
        ids, _ = prompts.virst_encode(tok, prompts.virst_messages(text, q, a))
        sam_size, n = model.cfg.sam2.image_size, len(video)
        rng = np.random.default_rng(fv.seed)
        vlm_idx = sampling.virst_vlm_indices(n, rng)
        sam_idx = vlm_idx[sampling.virst_sam_positions(len(vlm_idx), rng)]
        vlm, stf = video_io.views(video, vlm_idx, sam_idx, sam_size, model.cfg.umt.img_size)
        with fileio.atomic_directory(out_dir, overwrite=fv.overwrite) as tmp:
            chunks = model.predict(
                vlm,
                stf,
                video_io.prop_loader(video, sam_size),
                np.asarray(ids, np.int32),
                video_size=video.size,
                num_frames=n,
                sam_frame_ids=sam_idx,
                chunk_size=fv.chunk_size,
                stream=True,
            )
            del vlm, stf  # the prompts are computed: only chunks of frames from here on
            logits = video_io.LogitsFile(tmp / "logits.npy", (n, *video.size))
            try:
                for index, chunk in chunks:
                    logits.write(index, chunk)
                    for i, lg in zip(index, chunk, strict=True):
                        png = Image.fromarray(((lg > 0) * 255).astype(np.uint8))
                        png.save(tmp / f"{video.names[i]}.png")
                video_io.write_overlay(tmp, video, logits, overlay)
            finally:
                logits.close()
            meta = {
                "frames": video.names,
                "vlm_frames": vlm_idx.tolist(),
                "sam_frames": sam_idx.tolist(),
                "seed": fv.seed,
                "text": text,
                "question_template_id": q,
                "answer_template_id": a,
                "initial_seg_fusion": fv.initial_seg_fusion,
                "dynamic_anchors": fv.dynamic_anchors,
            }
            (tmp / "predict.json").write_text(json.dumps(meta, indent=1) + "\n")
    finally:
        video.close()
    print(f"segmented {text!r} over {n} frames -> {out_dir} ({time.perf_counter() - start:.1f} s)")


def main(argv=None) -> int:
    return cli.run_command("predict", __doc__, define_flags, body, argv)


if __name__ == "__main__":
    sys.exit(main())
