"""Whole-video VIRST inference for every expression of a record video, in one vision pass.

`Virst.predict` runs one expression: VLM + SAM2 image features, the LLM, the SegPrompter, then a
SAM2 propagation. All expressions of a video share everything but the text, so `infer_video`:

1. draws the VLM ("flex") and ST-Fusion frames once per video, with `np.random.default_rng(seed)`
   exactly as `refvos predict --seed` does (`sample_frames`);
2. computes the UMT visual tokens and the SAM2 STF features of those frames once
   (`_video_features`);
3. runs the LLM + SegPrompter on the expressions in batches of `expr_batch` (text padded to a
   common length, `text_valid` masking the padding) -> prompts [e, q, T_seg, 256];
4. propagates every expression together: one `iter_propagate_with_anchors` with o = the
   expressions (padded to a power of two by repeating the last one, to bound recompiles), the
   anchors `eval_anchors_np(T_seg)` shared by all, frames decoded from the record's JPEGs chunk by
   chunk, so host memory stays flat in the video length;
5. yields each chunk's (frame indices, logits [n, e, H, W]) at the video's resolution.

DEVIATION(VIRST eval.py): VIRST draws the flex frames, the ST-Fusion frames and the prompt
templates per expression (random); we draw the frames once per video, seeded (`refvos predict`'s
draw for the same seed), and use question / answer template 0 (`predict`'s default) with the
expression normalised as VIRST's eval does (`prompts.virst_text(train=False)`). The result for
one expression equals `Virst.predict` on those frames (tests/eval/test_evaluate.py).

Shapes: `e` expressions of the video, `q` = 10 `[SEG]` prompts, `k` anchors, `S` the SAM2 size.
"""

import dataclasses
from collections.abc import Iterator, Sequence

import jax.numpy as jnp
import numpy as np
from flax import nnx
from jaxtyping import Array, Bool, Float, Int

from jax_refvos import video_io
from jax_refvos.datasets.example import VideoExample
from jax_refvos.errors import InputError
from jax_refvos.methods.virst import anchor_updater as au
from jax_refvos.methods.virst import propagation as vp
from jax_refvos.methods.virst import views
from jax_refvos.methods.virst.model import Virst
from jax_refvos.model.backbone import multimodal
from jax_refvos.pipeline import prompts, sampling

TEXT_PAD_MULTIPLE = 32  # prompt lengths are padded to this (one compile per length bucket)


def sample_frames(
    num_frames: int, seed: int
) -> tuple[Int[np.ndarray, "tv"], Int[np.ndarray, "ts"]]:
    """VLM frames (flex policy) and ST-Fusion frames (video indices), as `refvos predict --seed`."""
    rng = np.random.default_rng(seed)
    vlm_idx = sampling.virst_vlm_indices(num_frames, rng)
    return vlm_idx, vlm_idx[sampling.virst_sam_positions(len(vlm_idx), rng)]


def expression_ids(tok, text: str) -> np.ndarray:
    """int32[l] prompt ids of one expression: normalised text, question 0, answer 0."""
    ids, _ = prompts.virst_encode(
        tok, prompts.virst_messages(prompts.virst_text(text, train=False), 0, 0)
    )
    return np.asarray(ids, np.int32)


def pad_ids(rows: Sequence[np.ndarray], batch: int) -> tuple[np.ndarray, np.ndarray]:
    """int32[batch, L] ids and bool[batch, L] valid: rows left-aligned, L a multiple of
    `TEXT_PAD_MULTIPLE`, missing rows copies of the last (their outputs are dropped)."""
    rows = list(rows) + [rows[-1]] * (batch - len(rows))
    length = -(-max(len(r) for r in rows) // TEXT_PAD_MULTIPLE) * TEXT_PAD_MULTIPLE
    ids = np.zeros((batch, length), np.int32)
    valid = np.zeros((batch, length), bool)
    for j, r in enumerate(rows):
        ids[j, : len(r)], valid[j, : len(r)] = r, True
    return ids, valid


@nnx.jit
def _video_features(
    model: Virst, vlm: Float[Array, "1 tv H W 3"], stf: Float[Array, "1 ts S S 3"]
) -> tuple[Float[Array, "1 v D"], Float[Array, "1 ts h w c"]]:
    """The per-video vision pass: UMT + ToMe visual tokens and SAM2 STF features."""
    return model.visual_tokens(vlm), model.stf_features(stf)


@nnx.jit
def _batch_prompts(
    model: Virst,
    visual: Float[Array, "1 v D"],
    stf_feats: Float[Array, "1 ts h w c"],
    ids: Int[Array, "b l"],
    valid: Bool[Array, "b l"],
) -> Float[Array, "b q ts d"]:
    """LLM `[SEG]` states + SegPrompter for a batch of expressions sharing one video."""
    b = ids.shape[0]
    visual = jnp.broadcast_to(visual, (b, *visual.shape[1:]))
    stf = jnp.broadcast_to(stf_feats, (b, *stf_feats.shape[1:]))
    hidden, spliced, index = model.lm_forward(
        None, ids, valid, stf if model.cfg.initial_seg_fusion else None, visual=visual
    )
    return model.seg_prompts(multimodal.gather_tokens(hidden, spliced.text_to_out, index), stf)


def _next_pow2(n: int) -> int:
    return 1 << max(0, n - 1).bit_length()


@dataclasses.dataclass(frozen=True)
class VideoPlan:
    """What `infer_video` drew and decided for one video (written to eval.json)."""

    vlm_frames: np.ndarray  # int64[tv] video frame indices
    sam_frames: np.ndarray  # int64[ts]
    anchors: np.ndarray  # int64[k] video frame indices of the anchors


def infer_video(
    model: Virst,
    ex: VideoExample,
    expr_ids: Sequence[np.ndarray],
    *,
    seed: int,
    chunk_size: int = 8,
    expr_batch: int = 8,
) -> tuple[VideoPlan, Iterator[tuple[np.ndarray, np.ndarray]]]:
    """All expressions of `ex` -> (plan, iterator of (frame indices int64[n], logits
    float32[n, e, H, W])), frames in increasing order, each once; `expr_ids[j]` are expression
    j's prompt ids (`expression_ids`). The prompts are computed before this returns."""
    e = len(expr_ids)
    if e == 0:
        raise InputError(f"video {ex.video_id!r}: no expressions")
    video, n = video_io.RecordVideo(ex), ex.num_frames
    sam_size = model.cfg.sam2.image_size
    vlm_idx, sam_idx = sample_frames(n, seed)
    vlm, stf = views.frame_views(video, vlm_idx, sam_idx, sam_size, model.cfg.umt.img_size)
    visual, stf_feats = _video_features(model, jnp.asarray(vlm)[None], jnp.asarray(stf)[None])
    del vlm, stf
    b = min(expr_batch, _next_pow2(e))
    out = []
    for lo in range(0, e, b):
        ids, valid = pad_ids(expr_ids[lo : lo + b], b)
        got = _batch_prompts(model, visual, stf_feats, jnp.asarray(ids), jnp.asarray(valid))
        out.append(np.asarray(got)[: min(b, e - lo)])
    del visual, stf_feats
    prompts_all = np.concatenate(out)  # [e, q, ts, d]
    t_seg = len(sam_idx)
    anchors = au.eval_anchors_np(t_seg, frames_per_anchor=model.cfg.anchors.eval_frames_per_anchor)
    video_anchors = sam_idx[anchors]
    # As `Virst.predict`: a video frame reached by two anchors keeps the later anchor's prompt.
    last = [i for i, f in enumerate(video_anchors) if f not in video_anchors[i + 1 :]]
    anchors, video_anchors = anchors[last], video_anchors[last]
    seg_prompts = prompts_all[:, :, anchors].transpose(0, 2, 1, 3)  # [e, k, q, d]
    o = _next_pow2(e)  # objects padded (copies of the last): one compile per power of two
    seg_prompts = np.concatenate([seg_prompts, np.repeat(seg_prompts[-1:], o - e, axis=0)])
    _, chunks = vp.iter_propagate_with_anchors(
        model.seg_model,
        video_io.prop_loader(video, sam_size),
        video_anchors,
        np.ones(len(anchors), bool),
        seg_prompts,
        num_frames=n,
        video_size=video.size,
        chunk_size=chunk_size,
        anchor_cfg=model.cfg.anchors,
        multimask=model.cfg.sam2.multimask_output_in_sam,  # as `Virst.predict`
    )
    plan = VideoPlan(vlm_frames=vlm_idx, sam_frames=sam_idx, anchors=video_anchors)
    return plan, ((c.frame_index, c.video_res_logits[:, :e]) for c in chunks)
