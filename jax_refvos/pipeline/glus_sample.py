"""GLUS sample: one video -> 4 context + 4 query frames, up to 3 expressions, fixed shapes.

Follows `dataset/refer_video_seg_dataset.py::ReferVideoSegDataset.__getitem__` and
`dataset/dataset.py::collate_fn`. Shapes (o = max_expressions, c = 4 context, q = 4 query):

    vlm_frames      uint8[c + q, V, V, 3]   CLIP view, context frames first (model order)
    frame_index     int32[c + q]            video frame indices; query_index int32[q]
    sam_frames      uint8[q, S, S, 3]       SAM2 view of the query frames (the only ones SAM2
                                            decodes; the reference also builds it for context)
    masks           bool[o, q, M, M]        union of the expression's objects on query frames
    input_ids, labels int32[o, l]; text_valid bool[o, l]; seg_index int32[o, q] ([SEG] positions
                                            in the text ids; the model applies the -1 offset)
    + element.common_keys (expr_valid, exp_index, exp_key, obj_key, video_key, ...): the
      object-contrastive loss needs video_key, obj_key, exp_key and query_index.
"""

import numpy as np

from jax_refvos.datasets.example import VideoExample
from jax_refvos.pipeline import augment, element, image_ops, prompts, sampling
from jax_refvos.pipeline.config import PipelineConfig
from jax_refvos.pipeline.tokenizer import IGNORE_INDEX, load_tokenizer


def glus_sample(
    ex: VideoExample, ds_index: int, exp_index: int, rng: np.random.Generator, cfg: PipelineConfig
) -> dict:
    o, c, q = cfg.max_expressions, cfg.context_frames, cfg.query_frames
    exps = element.choose_expressions(ex, exp_index, rng, o)
    if cfg.train:
        ctx, qry = sampling.glus_train_frames(ex.num_frames, rng, context=c, query=q)
    else:
        ctx, qry = sampling.glus_eval_frames(ex.num_frames, context=c, query=q)
    frames = np.concatenate([ctx, qry])
    aug = augment.draw(rng, cfg.hflip_prob, cfg.color_jitter)
    images = image_ops.decode_frames(ex, frames)
    vlm = np.stack([image_ops.vlm_view_clip(images[int(i)], cfg.vlm_size) for i in frames])
    sam = np.stack([image_ops.sam_view(images[int(i)], cfg.sam_size) for i in qry])

    tok = load_tokenizer(cfg.tokenizer_dir, "glus")
    input_ids = np.full((o, cfg.max_text_len), tok.pad_id, np.int32)
    labels = np.full((o, cfg.max_text_len), IGNORE_INDEX, np.int32)
    text_valid = np.zeros((o, cfg.max_text_len), bool)
    seg_index = np.full((o, q), -1, np.int32)
    masks = np.zeros((o, q, cfg.mask_size, cfg.mask_size), bool)
    for j, e in enumerate(exps):
        sent = prompts.glus_text(ex.expressions[e].text)
        if aug["flip"]:
            sent = augment.flip_text(sent)
        t = prompts.glus_tokens(tok, sent, rng, cfg.max_text_len, rounds=q, train=cfg.train)
        input_ids[j], labels[j], text_valid[j], seg_index[j] = (
            t.input_ids,
            t.labels,
            t.valid,
            t.seg_index,
        )
        # DEVIATION(glus): the reference keeps masks at the original resolution (and adds
        # overlapping objects as uint8, giving 2s); we OR them (glus.md 8.1(18)) and resize to
        # the static mask_size, so the model upsamples its logits to mask_size.
        union = element.expression_masks(ex, e, qry)
        masks[j] = image_ops.resize_masks(union, cfg.mask_size)

    out = {
        "vlm_frames": augment.apply_image(vlm, aug),
        "frame_index": frames.astype(np.int32),
        "query_index": qry.astype(np.int32),
        "sam_frames": augment.apply_image(sam, aug),
        "masks": augment.apply_mask(masks, aug),
        "input_ids": input_ids,
        "labels": labels,
        "text_valid": text_valid,
        "seg_index": seg_index,
        **element.common_keys(ex, ds_index, exps, o),
    }
    if cfg.normalize_on_host:
        out["vlm_frames"] = image_ops.normalize_clip(out["vlm_frames"])
        out["sam_frames"] = image_ops.normalize_imagenet(out["sam_frames"])
    return out
