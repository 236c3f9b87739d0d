"""Pipeline-format VIRST batches and a micro VIRST for training tests (random data)."""

import numpy as np
from flax import nnx

from jax_refvos.methods.virst import model as virst
from jax_refvos.methods.virst import presets as virst_presets
from jax_refvos.pipeline import prompts
from jax_refvos.pipeline.config import SYNTH_TOKENIZER
from jax_refvos.pipeline.tokenizer import load_tokenizer

MICRO = dict(image_size=128, vlm_size=80, llm_width=32)  # 1x1 fusion grid, 100 UMT tokens/clip


def micro_model(seed: int = 0) -> virst.Virst:
    tok = load_tokenizer(SYNTH_TOKENIZER, "virst")
    cfg = virst_presets.virst_tiny(vocab_size=tok.vocab_size, seg_token_id=tok.seg_id, **MICRO)
    return virst.Virst(cfg, rngs=nnx.Rngs(seed))


def batch(
    *,
    videos: int = 2,
    expressions: int = 2,
    vlm_frames: int = 8,
    sam_frames: int = 8,
    text_len: int = 128,
    seed: int = 0,
    pad_last_expression: bool = True,
) -> dict[str, np.ndarray]:
    """A `virst_sample`-shaped batch over `videos` (random frames, square masks, real prompts)."""
    rng = np.random.default_rng(seed)
    tok = load_tokenizer(SYNTH_TOKENIZER, "virst")
    s, v, o, k = MICRO["image_size"], MICRO["vlm_size"], expressions, 3
    out = {
        "vlm_frames": rng.integers(0, 256, (videos, vlm_frames, v, v, 3), dtype=np.uint8),
        "vlm_frame_valid": np.ones((videos, vlm_frames), bool),
        "sam_frames": rng.integers(0, 256, (videos, sam_frames, s, s, 3), dtype=np.uint8),
        "sam_frame_valid": np.ones((videos, sam_frames), bool),
        "anchor_index": np.zeros((videos, o, k), np.int32),
        "anchor_valid": np.zeros((videos, o, k), bool),
        "masks": np.zeros((videos, o, sam_frames, s, s), bool),
        "input_ids": np.zeros((videos, o, text_len), np.int32),
        "labels": np.full((videos, o, text_len), -100, np.int32),
        "text_valid": np.zeros((videos, o, text_len), bool),
        "expr_valid": np.ones((videos, o), bool),
    }
    for i in range(videos):
        for j in range(o):
            t = prompts.virst_tokens(tok, f"the square number {j} of video {i}", rng, text_len)
            out["input_ids"][i, j], out["labels"][i, j], out["text_valid"][i, j] = (
                t.input_ids,
                t.labels,
                t.valid,
            )
            out["anchor_index"][i, j] = np.sort(rng.permutation(sam_frames)[:k])
            out["anchor_valid"][i, j] = True
            y, x = rng.integers(0, s // 2, 2)
            out["masks"][i, j, :, y : y + s // 3, x : x + s // 3] = True
        # a video's frames carry its masks, so a model can learn something
        out["sam_frames"][i][out["masks"][i, 0]] = 255
    if pad_last_expression and o > 1:
        out["expr_valid"][:, -1] = False
    return out
