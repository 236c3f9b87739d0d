"""SAM 2 behind the evaluator's `Predictor` interface: semi-supervised VOS.

For a record video, every object an expression refers to is given by its ground-truth mask on
the first frame where it appears (`add_new_mask`, as the official `tools/vos_inference.py`),
and all of them are tracked to the end as the objects of one memory bank (one compiled scan
per chunk of frames, objects batched). An object exists from its first frame on: before it its
output is "no object" (`propagation.propagate_chunk(obj_start=...)`). An expression's
prediction is the union of its objects (the maximum of their logits). `refvos predict` asks
for a text prompt, which SAM 2 has no use for: it is refused (`refvos track` prompts SAM 2).
"""

from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jax_refvos.errors import InputError
from jax_refvos.methods.base import LogitsChunk, Predictor
from jax_refvos.model.sam2 import memory_bank as mb
from jax_refvos.model.sam2 import propagation as prop
from jax_refvos.model.sam2.resize import resize_bilinear
from jax_refvos.model.sam2.sam2_model import NO_OBJ_SCORE, Sam2Model
from jax_refvos.model.sam2.video_frames import resize_frame


def refuse_text() -> None:
    """SAM 2 has no text input: `refvos predict` is refused with one InputError."""
    raise InputError(
        "SAM 2 segments from prompts (masks, clicks, boxes), not from text: use "
        "`refvos track` to prompt it, `refvos evaluate` for semi-supervised VOS"
    )


def _padded(n: int) -> int:
    """Object slots compiled for n objects: the next power of two (few shapes to compile)."""
    return max(1, 1 << (n - 1).bit_length())


class Sam2VosPredictor(Predictor):
    def __init__(self, model: Sam2Model):
        self.model = model
        self._graphdef, self._params = nnx.split(model)
        self._jit_prompt = jax.jit(self._prompt_fn)

    def settings(self) -> dict[str, Any]:
        return {"task": "semi-supervised VOS", "prompt": "GT mask on each object's first frame"}

    def _prompt_fn(self, params, images, masks):
        """Each object's first frame with its mask as the output -> (cond outputs, memory)."""
        model = nnx.merge(self._graphdef, params)
        feats = model.forward_image(prop.normalize_frames(images))
        out = model.use_mask_as_output(feats, masks)
        mem = prop.cond_frame_memory(model, feats, out.low_res_masks, out.object_score_logits)
        return out.low_res_masks, out.object_score_logits, out.obj_ptr, mem

    def infer_video(self, example, *, seed: int, chunk_size: int):
        del seed  # deterministic
        n_frames = example.num_frames
        exprs = example.expressions
        objects = sorted({k for e in exprs for k in e.targets})
        first, prompts = {}, {}
        for k in objects:
            masks = example.track_masks(k)
            seen = np.flatnonzero(masks.reshape(n_frames, -1).any(-1))
            if len(seen):
                first[k] = int(seen[0])
                prompts[k] = masks[seen[0]]
        tracked = sorted(first)
        facts = {"objects": len(objects), "first_frames": [first[k] for k in tracked]}
        return facts, self._chunks(example, tracked, first, prompts, chunk_size)

    def _chunks(self, example, tracked, first, prompts, chunk_size) -> Iterator[LogitsChunk]:
        model, size = self.model, self.model.cfg.image_size
        n, (h, w) = example.num_frames, (example.height, example.width)
        exprs = example.expressions
        slot = {k: i for i, k in enumerate(tracked)}
        e_objs = [[slot[k] for k in e.targets if k in slot] for e in exprs]
        start = min(first.values()) if first else n
        if start > 0:  # nothing is prompted before the first object appears
            for lo in range(0, start, chunk_size):
                idx = np.arange(lo, min(lo + chunk_size, start))
                yield idx, np.full((len(idx), len(exprs), h, w), NO_OBJ_SCORE, np.float32)
        if not tracked:
            return
        o = _padded(len(tracked))
        images = np.zeros((o, size, size, 3), np.uint8)
        masks = np.zeros((o, 1, size, size), np.float32)
        starts = np.full(o, n, np.int32)
        for k, i in slot.items():
            images[i] = resize_frame(example.frame(first[k]), size)
            m = jnp.asarray(prompts[k], jnp.float32)[None, None]
            masks[i] = np.asarray(resize_bilinear(m, (size, size), antialias=True) >= 0.5)[0]
            starts[i] = first[k]
        low, score, ptr, mem = self._jit_prompt(self._params, images, masks)
        valid = jnp.asarray(starts < n)
        bank = mb.MemoryBank.empty(b=o, c=1, **model.memory_dims())
        bank = bank.add_cond(0, mem, ptr, jnp.asarray(starts), valid)
        cond = prop.CondFrames(
            frame=jnp.asarray(starts)[:, None],
            valid=valid[:, None],
            low_res_masks=low[:, None],
            object_score_logits=score,
        )
        obj_video = jnp.zeros((o,), jnp.int32)
        obj_start = jnp.asarray(starts)
        for lo in range(start, n, chunk_size):
            idx = np.arange(lo, min(lo + chunk_size, n))
            frames = np.zeros((chunk_size, 1, size, size, 3), np.uint8)
            for j, i in enumerate(idx):
                frames[j, 0] = resize_frame(example.frame(int(i)), size)
            frame_idx = np.full(chunk_size, n, np.int32)
            frame_idx[: len(idx)] = idx
            bank, out = prop.propagate_chunk_jit(
                model,
                bank,
                cond,
                jnp.asarray(frames),
                jnp.asarray(frame_idx),
                jnp.asarray(np.arange(chunk_size) < len(idx)),
                obj_video,
                jnp.int32(n),
                video_size=(h, w),
                reverse=False,
                obj_start=obj_start,
            )
            logits = np.asarray(out.video_res_masks[: len(idx), :, 0])  # [k, o, h, w]
            chunk = np.full((len(idx), len(exprs), h, w), NO_OBJ_SCORE, np.float32)
            for e, objs in enumerate(e_objs):
                if objs:
                    chunk[:, e] = logits[:, objs].max(1)
            yield idx, chunk

    def predict(self, video, text: str, *, seed: int, chunk_size: int):
        refuse_text()
