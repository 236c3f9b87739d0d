"""VIRST behind the evaluator's and `refvos predict`'s `Predictor` interface.

Options (`refvos evaluate` / `refvos predict` flags, given or defaulted):

    initial_seg_fusion    Initial ST-Fusion, for weights dirs (False: VIRST's released eval); a
                          training workdir keeps the setting it trained with
    dynamic_anchors       the paper's dynamic anchor update (docs/virst.md), default False
    expr_batch            expressions per LLM batch in `infer_video`, default 8
    question_template_id, answer_template_id
                          `predict`'s prompt templates, default 0 / 0 (the fixture's)
"""

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from jax_refvos.errors import InputError
from jax_refvos.methods.base import LogitsChunk, Predictor
from jax_refvos.methods.virst import inference, views
from jax_refvos.pipeline import prompts

OPTIONS = {
    "initial_seg_fusion": False,
    "dynamic_anchors": False,
    "expr_batch": 8,
    "question_template_id": 0,
    "answer_template_id": 0,
}


def check_templates(text: str, q: int, a: int) -> None:
    """InputError unless `q` / `a` index VIRST's question (short, or long for a text ending in
    "?") and answer templates."""
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


class VirstPredictor(Predictor):
    """A loaded `Virst` + tokenizer (`methods/virst/workdir.py`) running whole videos."""

    def __init__(self, model, tok, options: Mapping[str, Any]):
        self.model, self.tok = model, tok
        self.expr_batch = int(options.get("expr_batch", 8))
        self.question = int(options.get("question_template_id", 0))
        self.answer = int(options.get("answer_template_id", 0))
        if self.expr_batch < 1:
            raise InputError(f"--expr_batch {self.expr_batch}: must be >= 1")

    def settings(self) -> dict[str, Any]:
        cfg = self.model.cfg
        return {
            # What the model ran with: a training workdir keeps the setting it trained with.
            "initial_seg_fusion": bool(cfg.initial_seg_fusion),
            "dynamic_anchors": bool(cfg.anchors.dynamic_update),
            "expr_batch": self.expr_batch,
        }

    def infer_video(
        self, example, *, seed: int, chunk_size: int
    ) -> tuple[dict[str, Any], Iterator[LogitsChunk]]:
        ids = [inference.expression_ids(self.tok, x.text) for x in example.expressions]
        plan, chunks = inference.infer_video(
            self.model, example, ids, seed=seed, chunk_size=chunk_size, expr_batch=self.expr_batch
        )
        facts = {
            "vlm_frames": plan.vlm_frames.tolist(),
            "sam_frames": plan.sam_frames.tolist(),
            "anchors": plan.anchors.tolist(),
        }
        return facts, chunks

    def predict(
        self, video, text: str, *, seed: int, chunk_size: int
    ) -> tuple[dict[str, Any], Iterator[LogitsChunk]]:
        """VIRST's frame sampling (docs/virst.md, `refvos predict`), then `Virst.predict`."""
        from jax_refvos import video_io

        check_templates(text, self.question, self.answer)
        model = self.model
        ids, _ = prompts.virst_encode(
            self.tok, prompts.virst_messages(text, self.question, self.answer)
        )
        sam_size, n = model.cfg.sam2.image_size, len(video)
        vlm_idx, sam_idx = inference.sample_frames(n, seed)
        vlm, stf = views.frame_views(video, vlm_idx, sam_idx, sam_size, model.cfg.umt.img_size)
        chunks = model.predict(
            vlm,
            stf,
            video_io.prop_loader(video, sam_size),
            np.asarray(ids, np.int32),
            video_size=video.size,
            num_frames=n,
            sam_frame_ids=sam_idx,
            chunk_size=chunk_size,
            stream=True,
        )  # the prompts are computed here: only chunks of frames from now on
        facts = {
            "vlm_frames": vlm_idx.tolist(),
            "sam_frames": sam_idx.tolist(),
            "question_template_id": self.question,
            "answer_template_id": self.answer,
            "initial_seg_fusion": bool(model.cfg.initial_seg_fusion),
            "dynamic_anchors": bool(model.cfg.anchors.dynamic_update),
        }
        return facts, ((index, logits[:, None]) for index, logits in chunks)
