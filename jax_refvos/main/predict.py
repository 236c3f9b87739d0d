"""refvos predict: segment the object a sentence refers to, through a video, with VIRST.

  refvos predict --workdir W --video frames/ --text "the blue square moving down" --out_dir O
      [--question_template_id 0] [--answer_template_id 0] [--initial_seg_fusion false]

--workdir is a weights directory written by `refvos import-weights --kind virst` (its
`tokenizer/` holds the tokenizer). --video is a folder of JPEG frames, taken sorted by name (by
number when every name is a number); mp4 files are not read yet. The prompt is VIRST's chat
template (`pipeline/prompts.py`): question template --question_template_id of the short list,
or of the long list when the text ends with "?", and answer template --answer_template_id; both
default to 0 ("What is {sent} in the Reference image? ..." / "It is {seg}."), the fixture's.
--initial_seg_fusion defaults to false, as VIRST's released eval.py runs.

Written to --out_dir (it appears complete or not at all): logits.npy = float32[t, h, w], the mask
logits at the frames' own resolution; <frame>.png (0/255) per frame; overlay.gif, the frames with
the mask tinted red, for a person to look at.
"""

import sys
import time
from pathlib import Path

import numpy as np
from absl import flags

from jax_refvos.errors import InputError
from jax_refvos.main import cli

VLM_SIZE = 448  # the UMT tower's input size (the fixture's VLM view)
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], np.float32)
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm")
GIF_MAX_SIDE = 320
GIF_FRAME_MS = 150


def define_flags(fv: flags.FlagValues) -> None:
    flags.DEFINE_string(
        "workdir", None, "Weights dir from `import-weights --kind virst`.", flag_values=fv
    )
    flags.DEFINE_string("video", None, "Folder of JPEG frames.", flag_values=fv)
    flags.DEFINE_string("text", None, "The referring expression.", flag_values=fv)
    flags.DEFINE_string("out_dir", None, "Where logits.npy, PNGs, overlay.gif go.", flag_values=fv)
    flags.DEFINE_integer(
        "question_template_id", 0, "VIRST question template index.", flag_values=fv
    )
    flags.DEFINE_integer("answer_template_id", 0, "VIRST answer template index.", flag_values=fv)
    flags.DEFINE_boolean(
        "initial_seg_fusion", False, "Initial ST-Fusion (off in VIRST's eval).", flag_values=fv
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


def _frame_paths(video: str) -> list[Path]:
    from jax_refvos.model.sam2.video_frames import sorted_frame_paths

    path = Path(video)
    if path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES:
        raise InputError(
            f"{path}: {path.suffix} input needs a video decoder (not supported yet); "
            "pass a JPEG folder (e.g. ffmpeg -i video.mp4 frames/%05d.jpg)"
        )
    paths = sorted_frame_paths(path)
    stems = [p.stem for p in paths]
    if len(set(stems)) != len(stems):
        dup = next(s for s in stems if stems.count(s) > 1)
        raise InputError(f"{path}: two frames named {dup!r} (their masks would clash)")
    return paths


def _views(paths: list[Path], sam_size: int):
    """The three views of the frames, as `tests/model/test_virst_end_to_end_fixture.py`:
    VLM float32[t, 448, 448, 3] (bicubic, ImageNet-normalised, bf16-rounded), STF
    float32[t, S, S, 3] (bilinear, normalised, bf16-rounded), propagation uint8[t, S, S, 3]
    (PIL default resize), and the frames' (height, width) and uint8 originals."""
    import jax.numpy as jnp
    from PIL import Image, UnidentifiedImageError

    def bf16(x):
        return x.astype(jnp.bfloat16).astype(np.float32)

    def norm(x):
        return (x - IMAGENET_MEAN) / IMAGENET_STD

    vlm, stf, prop, orig, size = [], [], [], [], None
    for path in paths:
        try:
            with Image.open(path) as img:
                im = img.convert("RGB")
        except (OSError, UnidentifiedImageError, SyntaxError) as err:
            raise InputError(f"{path}: cannot read the image ({err})") from None
        hw = (im.height, im.width)
        if size is not None and hw != size:
            raise InputError(
                f"{path}: frame size {hw[1]}x{hw[0]} differs from the first frame's "
                f"{size[1]}x{size[0]}"
            )
        size = hw
        small = np.asarray(im.resize((VLM_SIZE,) * 2, Image.Resampling.BICUBIC))
        vlm.append(bf16(norm((small.astype(np.float64) * (1 / 255)).astype(np.float32))))
        big = np.asarray(im.resize((sam_size,) * 2, Image.Resampling.BILINEAR))
        stf.append(bf16(norm(big.astype(np.float32) / 255)))
        prop.append(np.asarray(im.resize((sam_size,) * 2)))
        orig.append(np.asarray(im))
    return np.stack(vlm), np.stack(stf), np.stack(prop), size, orig


def _assemble(workdir: Path, *, initial_seg_fusion: bool, seg_token_id: int):
    """A `model.virst.Virst` from the components `convert.virst.load_virst` rebuilds."""
    from flax import nnx

    from jax_refvos.convert import virst as cvirst
    from jax_refvos.model import virst

    parts = cvirst.load_virst(workdir)
    cfg = virst.VirstConfig(
        umt=parts["vision"].cfg,
        tome=parts["projector"].cfg,
        lm=parts["lm"].cfg,
        sam2=parts["sam2"].cfg,
        isf=parts["initial_seg_fusion"].cfg,
        segprompter=parts["seg_prompter"].cfg,
        initial_seg_fusion=initial_seg_fusion,
        seg_token_id=seg_token_id,
    )
    model = nnx.eval_shape(lambda: virst.Virst(cfg, rngs=nnx.Rngs(0)))
    model.vision_tower = parts["vision"]
    model.mm_projector = parts["projector"]
    model.lm = parts["lm"]
    model.seg_model = parts["sam2"]
    model.initial_seg_fusion_module = parts["initial_seg_fusion"]
    model.seg_prompter = parts["seg_prompter"]
    return model


def _predict(model, vlm, stf, prop, ids, *, video_size, chunk_size) -> np.ndarray:
    """`Virst.predict`, with the VLM view padded to a multiple of the UMT clip length.

    DEVIATION(reference/virst.md §1.1): VIRST samples T_vlm frames with its flex policy; we
    feed every frame, repeating the last one up to a multiple of `clip_frames` (VLM view only;
    the STF and propagation views keep the video's own t frames).
    """
    import jax.numpy as jnp

    from jax_refvos.model import anchor_updater as au
    from jax_refvos.model import virst
    from jax_refvos.model import virst_propagation as vp

    t, clip = len(vlm), model.cfg.umt.clip_frames
    if t % clip == 0:
        return model.predict(vlm, stf, prop, ids, video_size=video_size, chunk_size=chunk_size)
    pad = np.repeat(vlm[-1:], clip - t % clip, axis=0)
    prompts = virst._prompts_jit(
        model,
        jnp.asarray(np.concatenate([vlm, pad]))[None],
        jnp.asarray(stf)[None],
        jnp.asarray(ids)[None],
    )
    anchors = au.eval_anchors_np(t)
    seg_prompts = np.asarray(prompts)[:, :, anchors].transpose(0, 2, 1, 3)
    out = vp.propagate_with_anchors(
        model.seg_model,
        prop,
        anchors,
        np.ones(len(anchors), bool),
        seg_prompts,
        num_frames=t,
        video_size=tuple(video_size),
        chunk_size=chunk_size,
    )
    return out.video_res_logits[:, 0]


def _overlay_gif(path: Path, frames: list[np.ndarray], logits: np.ndarray) -> None:
    from PIL import Image

    images = []
    for frame, lg in zip(frames, logits, strict=True):
        mask = (lg > 0)[..., None]
        tinted = np.where(mask, 0.5 * frame + 0.5 * np.array([255, 0, 0]), frame)
        im = Image.fromarray(tinted.astype(np.uint8))
        im.thumbnail((GIF_MAX_SIDE, GIF_MAX_SIDE))
        images.append(im)
    images[0].save(path, save_all=True, append_images=images[1:], duration=GIF_FRAME_MS, loop=0)


def body(fv: flags.FlagValues) -> None:
    from PIL import Image

    from jax_refvos import fileio
    from jax_refvos.convert import weights_dir
    from jax_refvos.pipeline import prompts
    from jax_refvos.pipeline.tokenizer import SEG_TOKEN, load_tokenizer

    # Cheap checks first (flags, paths), then the tokenizer and frames, then the weights.
    text = fv.text.strip()
    if not text:
        raise InputError("--text is empty")
    q, a = fv.question_template_id, fv.answer_template_id
    _template_ids(text, q, a)
    workdir, out_dir = Path(fv.workdir), Path(fv.out_dir)
    if not (workdir / "config.json").is_file():
        raise InputError(f"{workdir}: not a weights dir (no config.json)")
    if out_dir.exists() and not fv.overwrite:
        raise InputError(f"{out_dir}: already exists (pass --overwrite to replace it)")
    meta = weights_dir.read_meta(workdir)
    if meta.get("kind") != "virst":
        raise InputError(f"{workdir}: weights kind {meta.get('kind')!r}, need 'virst'")
    tok_dir = workdir / meta.get("tokenizer", "tokenizer")
    if not tok_dir.is_dir():
        raise InputError(f"{tok_dir}: tokenizer directory missing")
    paths = _frame_paths(fv.video)

    start = time.perf_counter()
    tok = load_tokenizer(str(tok_dir), "virst")
    ids, _ = prompts.virst_encode(tok, prompts.virst_messages(text, q, a))
    model = _assemble(
        workdir, initial_seg_fusion=fv.initial_seg_fusion, seg_token_id=tok.token_id(SEG_TOKEN)
    )
    vlm, stf, prop, (height, width), originals = _views(paths, model.cfg.sam2.image_size)
    logits = _predict(
        model,
        vlm,
        stf,
        prop,
        np.asarray(ids, np.int32),
        video_size=(height, width),
        chunk_size=fv.chunk_size,
    )
    logits = np.asarray(logits, np.float32)
    with fileio.atomic_directory(out_dir, overwrite=fv.overwrite) as tmp:
        np.save(tmp / "logits.npy", logits)
        for path, frame_logits in zip(paths, logits, strict=True):
            png = ((frame_logits > 0) * 255).astype(np.uint8)
            Image.fromarray(png).save(tmp / f"{path.stem}.png")
        _overlay_gif(tmp / "overlay.gif", originals, logits)
    print(
        f"segmented {text!r} over {len(paths)} frames -> {out_dir} "
        f"({time.perf_counter() - start:.1f} s)"
    )


def main(argv=None) -> int:
    return cli.run_command("predict", __doc__, define_flags, body, argv)


if __name__ == "__main__":
    sys.exit(main())
