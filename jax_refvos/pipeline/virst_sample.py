"""VIRST sample: one video -> fixed-shape arrays (VLM frames, SAM frames, anchors, masks, tokens).

Follows `data/rvos_dataset.py::RVOSDataset` (`sample_data` / `sample_data_eval` with the "flex"
policy, `_get_item`) and `model/VIRST.py::select_keyframes`. Shapes (o = max_expressions):

    vlm_frames      uint8[tv, V, V, 3]   tv = vlm_frames (64); valid prefix is a multiple of 4
    vlm_frame_valid bool[tv]             vlm_frame_index int32[tv] (video frame, -1 pad)
    sam_frames      uint8[ts, S, S, 3]   ts = sam_frames (32)
    sam_frame_valid bool[ts]             sam_frame_index int32[ts]; sam_to_vlm int32[ts]
    anchor_index    int32[o, k]          SAM-frame indices; anchor_valid bool[o, k]
    window_valid    bool[o, ts]          frames SAM2 rolls out over (train: anchors + windows)
    masks           bool[o, ts, M, M]    union of the expression's objects, resized
    input_ids, labels int32[o, l]; text_valid bool[o, l]; seg_index int32[o, 10]
    + element.common_keys (expr_valid, exp_index, exp_key, obj_key, video_key, ...)
"""

import numpy as np

from jax_refvos.datasets.example import VideoExample
from jax_refvos.pipeline import augment, element, image_ops, prompts, sampling
from jax_refvos.pipeline.config import PipelineConfig
from jax_refvos.pipeline.tokenizer import IGNORE_INDEX, load_tokenizer


def virst_sample(
    ex: VideoExample, ds_index: int, exp_index: int, rng: np.random.Generator, cfg: PipelineConfig
) -> dict:
    o, ts, k = cfg.max_expressions, cfg.sam_frames, cfg.num_anchors
    exps = element.choose_expressions(ex, exp_index, rng, o)
    vlm_idx = sampling.virst_vlm_indices(
        ex.num_frames, rng, max_frames=cfg.vlm_frames, min_frames=cfg.vlm_min_frames
    )
    sam_pos = sampling.virst_sam_positions(len(vlm_idx), rng, max_frames=ts)
    sam_idx = vlm_idx[sam_pos]
    aug = augment.draw(rng, cfg.hflip_prob, cfg.color_jitter)
    images = image_ops.decode_frames(ex, vlm_idx)

    tv = cfg.vlm_frames
    vlm = np.zeros((tv, cfg.vlm_size, cfg.vlm_size, 3), np.uint8)
    for j, i in enumerate(vlm_idx):
        vlm[j] = image_ops.vlm_view_virst(images[int(i)], cfg.vlm_size)
    sam = np.zeros((ts, cfg.sam_size, cfg.sam_size, 3), np.uint8)
    for j, i in enumerate(sam_idx):
        sam[j] = image_ops.sam_view(images[int(i)], cfg.sam_size)
    n_sam = len(sam_idx)

    tok = load_tokenizer(cfg.tokenizer_dir, "virst")
    input_ids = np.full((o, cfg.max_text_len), tok.pad_id, np.int32)
    labels = np.full((o, cfg.max_text_len), IGNORE_INDEX, np.int32)
    text_valid = np.zeros((o, cfg.max_text_len), bool)
    seg_index = np.full((o, prompts.VIRST_NUM_SEG), -1, np.int32)
    masks = np.zeros((o, ts, cfg.mask_size, cfg.mask_size), bool)
    anchor_index = np.zeros((o, k), np.int32)
    anchor_valid = np.zeros((o, k), bool)
    window_valid = np.zeros((o, ts), bool)
    for j, e in enumerate(exps):
        expr = ex.expressions[e]
        sent = prompts.virst_text(expr.text, train=cfg.train, dataset=ex.dataset)
        if aug["flip"]:
            sent = augment.flip_text(sent)
        t = prompts.virst_tokens(tok, sent, rng, cfg.max_text_len)
        input_ids[j], labels[j], text_valid[j], seg_index[j] = (
            t.input_ids,
            t.labels,
            t.valid,
            t.seg_index,
        )
        masks[j, :n_sam] = _union_masks(ex, e, sam_idx, cfg.mask_size)
        if cfg.train:
            anchors, window = sampling.virst_train_anchors(n_sam, rng)
        else:
            anchors, window = sampling.virst_eval_anchors(n_sam), np.ones(n_sam, bool)
        anchor_index[j, : len(anchors)] = anchors
        anchor_valid[j, : len(anchors)] = True
        window_valid[j, :n_sam] = window

    out = {
        "vlm_frames": augment.apply_image(vlm, aug),
        "vlm_frame_valid": np.arange(tv) < len(vlm_idx),
        "vlm_frame_index": _pad(vlm_idx, tv),
        "sam_frames": augment.apply_image(sam, aug),
        "sam_frame_valid": np.arange(ts) < n_sam,
        "sam_frame_index": _pad(sam_idx, ts),
        "sam_to_vlm": _pad(sam_pos, ts),
        "anchor_index": anchor_index,
        "anchor_valid": anchor_valid,
        "window_valid": window_valid,
        "masks": augment.apply_mask(masks, aug),
        "input_ids": input_ids,
        "labels": labels,
        "text_valid": text_valid,
        "seg_index": seg_index,
        **element.common_keys(ex, ds_index, exps, o),
    }
    if cfg.normalize_on_host:
        out["vlm_frames"] = image_ops.normalize_imagenet(out["vlm_frames"])
        out["sam_frames"] = image_ops.normalize_imagenet(out["sam_frames"])
    return out


def _pad(x: np.ndarray, n: int) -> np.ndarray:
    out = np.full(n, -1, np.int32)
    out[: len(x)] = x
    return out


def _union_masks(ex: VideoExample, exp: int, indices: np.ndarray, size: int) -> np.ndarray:
    """Each target object resized separately, then OR-ed (`_get_item`: resize, then `.any(0)`)."""
    targets = ex.expressions[exp].targets
    out = np.zeros((len(indices), size, size), bool)
    if not ex.has_masks:
        return out
    for track in targets:
        out |= image_ops.resize_masks(ex.track_masks(track, indices), size)
    return out
