"""`Sam2VideoPredictor`: the `sam2` video-predictor API on our compiled propagation.

Port of `sam2/sam2_video_predictor.py::SAM2VideoPredictor` (sam2 1.1.0): prompt objects with
masks, clicks or boxes on any frames, then `propagate_in_video` forward or in reverse. Prompted
frames are processed one by one (jitted); tracking runs as a `lax.scan` over chunks of
`chunk_size` frames with the memory bank carried between chunks, so device memory stays flat in
video length. Tracked frames' memories are kept on the host (as the reference keeps them in its
inference state) so a later reverse pass sees the frames the forward pass tracked.
"""

import dataclasses
from collections.abc import Iterator, Sequence
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jax_refvos.model.sam2 import memory_bank as mb
from jax_refvos.model.sam2 import propagation as prop
from jax_refvos.model.sam2.resize import resize_bilinear
from jax_refvos.model.sam2.sam2_model import NO_OBJ_SCORE, Sam2Model
from jax_refvos.model.sam2.video_frames import load_video_frames, resize_frame


@dataclasses.dataclass
class CondOutput:
    """A prompted frame's output for one object (host arrays, batch of one)."""

    low_res_masks: np.ndarray  # float32[1, 1, S/4, S/4]
    object_score_logits: np.ndarray  # float32[1, 1]
    obj_ptr: np.ndarray  # float32[1, d]
    points: tuple[np.ndarray, np.ndarray] | None = None  # accumulated clicks (model coords)
    mem_feats: np.ndarray | None = None  # storage dtype [1, s, e], set by the preflight


@dataclasses.dataclass
class InferenceState:
    """One video's prompts and outputs (the reference's `inference_state` dict)."""

    images: np.ndarray  # uint8[t, S, S, 3]
    video_height: int
    video_width: int
    obj_ids: list = dataclasses.field(default_factory=list)
    cond: list[dict[int, CondOutput]] = dataclasses.field(default_factory=list)
    # frame -> (mem_feats [o, s, e], obj_ptr [o, d], written [o]) of tracked (non-prompt) frames
    tracked: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = dataclasses.field(
        default_factory=dict
    )
    # The most recently encoded frame's image features, {frame_idx: ImageFeatures} (device), as
    # the reference's `cached_features`: prompting a frame and then propagating from it encodes
    # it once.
    cached_features: dict = dataclasses.field(default_factory=dict)

    @property
    def num_frames(self) -> int:
        return len(self.images)


class Sam2VideoPredictor:
    """Interactive video segmentation with a `Sam2Model` (single video per state)."""

    def __init__(self, model: Sam2Model, *, chunk_size: int = 8):
        self.model = model
        self.chunk_size = chunk_size
        self._graphdef, self._params = nnx.split(model)
        self._jit_features = jax.jit(self._features_fn)
        self._jit_prompt = jax.jit(self._prompt_fn, static_argnames=("kind",))
        self._jit_cond_memory = jax.jit(self._cond_memory_fn)

    @property
    def image_size(self) -> int:
        return self.model.cfg.image_size

    # ------------------------------------------------------------------ jitted pieces
    def _merge(self, params):
        return nnx.merge(self._graphdef, params)

    def _features_fn(self, params, image):
        return self._merge(params).forward_image(prop.normalize_frames(image))

    def _prompt_fn(self, params, feats, coords, labels, mask, prev, *, kind):
        model = self._merge(params)
        if kind == "mask":
            out = prop.prompt_frame_output(model, feats, mask_inputs=mask)
        else:
            out = prop.prompt_frame_output(
                model, feats, point_coords=coords, point_labels=labels, prev_mask_logits=prev
            )
        return out.low_res_masks, out.object_score_logits, out.obj_ptr

    def _cond_memory_fn(self, params, feats, low_res, score):
        return prop.cond_frame_memory(self._merge(params), feats, low_res, score)

    # ------------------------------------------------------------------ state
    def init_state(self, frames: str | Path | Sequence[np.ndarray]) -> InferenceState:
        """Frames from a JPEG folder (sorted) or a sequence of uint8 [H, W, 3] arrays."""
        if isinstance(frames, str | Path):
            images, (h, w), _ = load_video_frames(frames, self.image_size)
        else:
            frames = [np.asarray(f) for f in frames]
            if not frames:
                raise ValueError("init_state: no frames")
            h, w = frames[0].shape[:2]
            images = np.stack([resize_frame(f, self.image_size) for f in frames])
        return InferenceState(images=images, video_height=int(h), video_width=int(w))

    def reset_state(self, state: InferenceState) -> None:
        """Forget all prompts, objects and tracking results."""
        state.obj_ids.clear()
        state.cond.clear()
        state.tracked.clear()

    def _obj_idx(self, state: InferenceState, obj_id) -> int:
        if obj_id not in state.obj_ids:
            if state.tracked:
                raise RuntimeError("cannot add objects after tracking started; call reset_state")
            state.obj_ids.append(obj_id)
            state.cond.append({})
        return state.obj_ids.index(obj_id)

    def _check_frame(self, state: InferenceState, frame_idx: int) -> None:
        if not 0 <= frame_idx < state.num_frames:
            raise ValueError(f"frame_idx {frame_idx} outside [0, {state.num_frames})")
        if state.tracked:
            # DEVIATION(sam2): refining an already tracked frame (non-initial conditioning
            # frame) is not ported; start over with reset_state.
            raise RuntimeError("prompts after propagation are not supported; call reset_state")

    def _frame_features(self, state: InferenceState, frame_idx: int):
        feats = state.cached_features.get(frame_idx)
        if feats is None:
            feats = self._jit_features(self._params, jnp.asarray(state.images[frame_idx][None]))
            state.cached_features.clear()
            state.cached_features[frame_idx] = feats
        return feats

    # ------------------------------------------------------------------ prompts
    def add_new_mask(self, state: InferenceState, frame_idx: int, obj_id, mask):
        """Prompt `obj_id` on `frame_idx` with a binary mask [H, W] (any size)."""
        self._check_frame(state, frame_idx)
        obj_idx = self._obj_idx(state, obj_id)
        mask = jnp.asarray(np.asarray(mask, bool), jnp.float32)[None, None]
        size = (self.image_size, self.image_size)
        if mask.shape[-2:] != size:
            mask = (resize_bilinear(mask, size, antialias=True) >= 0.5).astype(jnp.float32)
        feats = self._frame_features(state, frame_idx)
        low, score, ptr = self._jit_prompt(self._params, feats, None, None, mask, None, kind="mask")
        state.cond[obj_idx][frame_idx] = CondOutput(*map(np.asarray, (low, score, ptr)))
        return frame_idx, list(state.obj_ids), self._frame_masks(state, frame_idx)

    def add_new_points_or_box(
        self,
        state: InferenceState,
        frame_idx: int,
        obj_id,
        points=None,
        labels=None,
        clear_old_points: bool = True,
        normalize_coords: bool = True,
        box=None,
    ):
        """Prompt `obj_id` on `frame_idx` with clicks (x, y; label 1 fg / 0 bg) and/or a box."""
        self._check_frame(state, frame_idx)
        if (points is None) != (labels is None):
            raise ValueError("points and labels must be provided together")
        if points is None and box is None:
            raise ValueError("at least one of points or box must be provided as input")
        obj_idx = self._obj_idx(state, obj_id)
        pts = np.zeros((0, 2), np.float32) if points is None else np.asarray(points, np.float32)
        lab = np.zeros((0,), np.int32) if labels is None else np.asarray(labels, np.int32)
        pts, lab = pts.reshape(-1, 2), lab.reshape(-1)
        if box is not None:
            if not clear_old_points:
                raise ValueError("cannot add box without clearing old points")
            pts = np.concatenate([np.asarray(box, np.float32).reshape(2, 2), pts])
            lab = np.concatenate([np.array([2, 3], np.int32), lab])
        if normalize_coords:
            pts = pts / np.array([state.video_width, state.video_height], np.float32)
        pts = (pts * self.image_size).astype(np.float32)
        prev = state.cond[obj_idx].get(frame_idx)
        if not clear_old_points and prev is not None and prev.points is not None:
            pts = np.concatenate([prev.points[0], pts])
            lab = np.concatenate([prev.points[1], lab])
        prev_logits = None
        if prev is not None:
            prev_logits = jnp.clip(jnp.asarray(prev.low_res_masks), -32.0, 32.0)
        feats = self._frame_features(state, frame_idx)
        low, score, ptr = self._jit_prompt(
            self._params,
            feats,
            jnp.asarray(pts[None]),
            jnp.asarray(lab[None]),
            None,
            prev_logits,
            kind="points",
        )
        state.cond[obj_idx][frame_idx] = CondOutput(
            *map(np.asarray, (low, score, ptr)), points=(pts, lab)
        )
        return frame_idx, list(state.obj_ids), self._frame_masks(state, frame_idx)

    def _frame_masks(self, state: InferenceState, frame_idx: int) -> np.ndarray:
        """All objects' prompt outputs on a frame at video resolution, float32[o, 1, H, W]."""
        low = np.full((len(state.obj_ids), 1) + (self.image_size // 4,) * 2, NO_OBJ_SCORE)
        for i, cond in enumerate(state.cond):
            if frame_idx in cond:
                low[i] = cond[frame_idx].low_res_masks[0]
        size = (state.video_height, state.video_width)
        return np.asarray(resize_bilinear(jnp.asarray(low, jnp.float32), size))

    # ------------------------------------------------------------------ propagation
    def _preflight(self, state: InferenceState) -> None:
        if not state.obj_ids:
            raise RuntimeError("No input points or masks are provided for any object")
        for obj_id, cond in zip(state.obj_ids, state.cond, strict=True):
            if not cond:
                raise RuntimeError(f"No input points or masks are provided for object {obj_id}")
            for frame_idx, out in cond.items():
                if out.mem_feats is None:
                    feats = self._frame_features(state, frame_idx)
                    mem = self._jit_cond_memory(
                        self._params,
                        feats,
                        jnp.asarray(out.low_res_masks),
                        jnp.asarray(out.object_score_logits),
                    )
                    out.mem_feats = np.asarray(mem)

    def _initial_bank(self, state: InferenceState, start: int, reverse: bool):
        dims = self.model.memory_dims()
        o = len(state.obj_ids)
        c = max(len(cond) for cond in state.cond)
        bank = jax.tree.map(np.array, mb.MemoryBank.empty(b=o, c=c, **dims))
        for i, cond in enumerate(state.cond):
            for j, (frame_idx, out) in enumerate(cond.items()):
                bank.cond_feats[i, j] = out.mem_feats[0]
                bank.cond_ptr[i, j] = out.obj_ptr[0]
                bank.cond_frame[i, j] = frame_idx
                bank.cond_valid[i, j] = True
        bank = jax.tree.map(jnp.asarray, bank)
        # Tracked frames behind the start (in this direction) enter the rings as if the scan had
        # just pushed them, farthest first, so the rings keep the nearest ones.
        sign = -1 if reverse else 1
        for dist in range(bank.ptr_valid.shape[1], 0, -1):
            frame_idx = start - sign * dist
            if frame_idx in state.tracked:
                feats, ptr, written = state.tracked[frame_idx]
                bank = bank.push(jnp.int32(frame_idx), feats, ptr, jnp.asarray(written))
        cond_frames = prop.CondFrames(
            frame=bank.cond_frame,
            valid=bank.cond_valid,
            low_res_masks=np.zeros((o, c, 1) + (self.image_size // 4,) * 2, np.float32),
            object_score_logits=np.zeros((o, c), np.float32),
        )
        for i, cond in enumerate(state.cond):
            for j, out in enumerate(cond.values()):
                cond_frames.low_res_masks[i, j] = out.low_res_masks[0]
                cond_frames.object_score_logits[i, j] = out.object_score_logits[0, 0]
        return bank, jax.tree.map(jnp.asarray, cond_frames)

    def propagate_in_video(
        self,
        state: InferenceState,
        start_frame_idx: int | None = None,
        max_frame_num_to_track: int | None = None,
        reverse: bool = False,
    ) -> Iterator[tuple[int, list, np.ndarray]]:
        """Yield (frame_idx, obj_ids, mask logits float32[o, 1, H, W]) in processing order."""
        self._preflight(state)
        n = state.num_frames
        if start_frame_idx is None:
            start_frame_idx = min(t for cond in state.cond for t in cond)
        if max_frame_num_to_track is None:
            max_frame_num_to_track = n
        if reverse:
            end = max(start_frame_idx - max_frame_num_to_track, 0)
            order = list(range(start_frame_idx, end - 1, -1)) if start_frame_idx > 0 else []
        else:
            end = min(start_frame_idx + max_frame_num_to_track, n - 1)
            order = list(range(start_frame_idx, end + 1))
        if not order:
            return
        bank, cond = self._initial_bank(state, start_frame_idx, reverse)
        obj_video = jnp.zeros((len(state.obj_ids),), jnp.int32)
        size = (state.video_height, state.video_width)
        # A frame every object is prompted on needs no tracking: its output is the prompt's and
        # it writes no tracked memory (as the reference, which skips inference on consolidated
        # conditioning frames). Those frames are yielded in order without entering the scan.
        prompted = {f for f in order if all(f in cond_i for cond_i in state.cond)}
        to_track = [f for f in order if f not in prompted]
        done = 0  # frames of `order` yielded so far

        def emit_through(stop: int, chunk: dict):
            nonlocal done
            for frame_idx in order[done:stop]:
                masks = chunk.get(frame_idx)
                if masks is None:  # a prompted frame: its prompt's output
                    masks = self._frame_masks(state, frame_idx)
                yield frame_idx, list(state.obj_ids), masks
            done = max(done, stop)

        k = min(self.chunk_size, len(to_track))
        for lo in range(0, len(to_track), max(k, 1)):
            idx = to_track[lo : lo + k]
            pad = k - len(idx)
            frames = np.zeros((k, 1) + state.images.shape[1:], np.uint8)
            frames[: len(idx), 0] = state.images[idx]
            t = np.array(idx + [idx[-1]] * pad, np.int32)
            active = np.arange(k) < len(idx)
            bank, out = prop.propagate_chunk_jit(
                self.model,
                bank,
                cond,
                jnp.asarray(frames),
                jnp.asarray(t),
                jnp.asarray(active),
                obj_video,
                jnp.int32(n),
                video_size=size,
                reverse=reverse,
            )
            out = jax.device_get(out)
            chunk = {}
            for i, frame_idx in enumerate(idx):
                if out.tracked[i].any():
                    state.tracked[frame_idx] = (out.mem_feats[i], out.obj_ptr[i], out.tracked[i])
                chunk[frame_idx] = out.video_res_masks[i]
            yield from emit_through(order.index(idx[-1]) + 1, chunk)
        yield from emit_through(len(order), {})
